# Shim for pips too old for PEP 517 editable installs (JetPack 4.6's pip 9).
from setuptools import setup

setup()
