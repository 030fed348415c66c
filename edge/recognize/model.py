"""A model package: the ONNX file, its characters list and what events say about it (name, version,
sha256). `models/manifest.yaml` beside the model names these; without a manifest entry they are found
by NVIDIA's file naming (us_* -> us_lp_characters.txt, ch_* -> ch_lp_characters.txt)."""
import hashlib
import io
import os
from collections import namedtuple

from edge.config.yamlload import load_yaml_text
from edge.dataset import DatasetError, load_characters
from edge.infer.base import ModelError  # noqa: F401 (defined with the backends every stage shares)

ModelInfo = namedtuple("ModelInfo", "path characters_path characters name version sha256 entry")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder):
    path = os.path.join(folder, "manifest.yaml")
    if not os.path.isfile(path):
        return None, path
    with io.open(path, encoding="utf-8") as f:
        try:
            return load_yaml_text(f.read(), path), path
        except Exception as exc:
            raise ModelError("%s: unreadable manifest: %s" % (path, exc))


def manifest_entry(model_path, section="models"):
    """The entry of models/manifest.yaml (section `models`: recognizers, `detectors`) naming this file."""
    folder, base = os.path.split(os.path.abspath(model_path))
    manifest, manifest_path = read_manifest(folder)
    if not manifest:
        return None, manifest_path
    for name, entry in (manifest.get(section) or {}).items():
        if entry.get("file") == base:
            return dict(entry, name=entry.get("name", name)), manifest_path
    return None, manifest_path


def _default_characters(model_path, entry):
    folder, base = os.path.split(os.path.abspath(model_path))
    candidates = []
    if entry and entry.get("characters"):
        candidates.append(os.path.join(folder, entry["characters"]))
    prefix = base.split("_", 1)[0].lower()
    if prefix in ("us", "ch"):
        candidates.append(os.path.join(folder, "%s_lp_characters.txt" % prefix))
    stem = os.path.splitext(base)[0]
    candidates += [os.path.join(folder, stem + ".characters.txt"), os.path.join(folder, "characters.txt"),
                   os.path.join(folder, "characters_list.txt"), os.path.join(folder, "dict.txt")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise ModelError("%s: no characters list found (looked for %s); name one with model.characters"
                     % (model_path, ", ".join(os.path.basename(c) for c in candidates)))


def load_model_info(model_path, characters_path=None, name=None, version=None):
    if not os.path.isfile(model_path):
        raise ModelError("%s: no such model file" % model_path)
    entry, manifest_path = manifest_entry(model_path)
    digest = sha256_file(model_path)
    if entry and entry.get("sha256") and entry["sha256"] != digest:
        raise ModelError("%s: sha256 %s does not match %s (%s): the file is damaged or was replaced"
                         % (model_path, digest, manifest_path, entry["sha256"]))
    characters_path = characters_path or _default_characters(model_path, entry)
    try:
        characters = load_characters(characters_path)
    except DatasetError as exc:
        raise ModelError(str(exc))
    stem = os.path.splitext(os.path.basename(model_path))[0]
    name = name or (entry or {}).get("name") or stem
    version = version or str((entry or {}).get("version") or digest[:12])
    return ModelInfo(model_path, characters_path, characters, name, version, digest, entry)
