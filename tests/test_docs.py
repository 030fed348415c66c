import os
import subprocess
import sys

from helpers import ROOT


def test_reference_docs_are_generated_from_schemas():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_docs.py"), "--check"],
                            stdout=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stdout


def test_every_schema_key_has_a_description():
    import json

    def walk(schema, path):
        for key, sub in schema.get("properties", {}).items():
            assert sub.get("description"), "%s%s has no description" % (path, key)
            walk(sub, path + key + ".")
            if isinstance(sub.get("items"), dict):
                walk(sub["items"], path + key + "[].")

    for name in ("config.schema.json", "event.schema.json"):
        with open(os.path.join(ROOT, "configs", "schema", name)) as f:
            walk(json.load(f), name + ":")
