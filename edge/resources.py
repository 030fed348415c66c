"""Where the package finds its data files (schemas, device profiles, shipped models).

Search order: $LPR_EDGE_DATA, the source tree the package runs from (editable installs, a checkout),
then <prefix>/share/lpr-edge (a wheel install, /opt/lpr-edge/venv/share/lpr-edge).
"""
import os
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def data_roots():
    roots = []
    if os.environ.get("LPR_EDGE_DATA"):
        roots.append(os.environ["LPR_EDGE_DATA"])
    roots.append(os.path.dirname(PACKAGE_DIR))
    roots.append(os.path.join(sys.prefix, "share", "lpr-edge"))
    return roots


def find_data(relpath):
    """Absolute path of a data file such as 'configs/schema/config.schema.json'; IOError if absent."""
    for root in data_roots():
        path = os.path.join(root, relpath)
        if os.path.exists(path):
            return path
    raise IOError("data file %s not found under %s" % (relpath, ", ".join(data_roots())))
