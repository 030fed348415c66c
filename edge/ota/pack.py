"""Make a package from an ONNX model (an lpr-edge export or any NGC-style LPRNet) and its characters list:
measure its contract and golden-set accuracy with the same code a device runs, list every file with its
sha256, sign the manifest, write the tar atomically."""
import logging

from edge.ota import OtaError, signing
from edge.ota.check import check_contract, load_recognizer, run_golden
from edge.ota.package import (CHARACTERS_MEMBER, GOLDEN_DIR, MODEL_MEMBER, build_manifest, describe_files,
                              golden_members, write_package)

log = logging.getLogger("edge.ota")


def find_characters(model_path):
    """The characters list beside a model, found the way the daemon finds it."""
    from edge.recognize.model import ModelError, _default_characters, manifest_entry

    try:
        return _default_characters(model_path, manifest_entry(model_path)[0])
    except ModelError as exc:
        raise OtaError("characters", str(exc))


def pack(model_path, out_path, name, version, serial, key_path=None, characters_path=None, golden_dir=None,
         kind="recognizer", min_accuracy=None, min_daemon_version=None, replaces=None, plate_format=None,
         release_summary=None, slot=None):
    """Write a package to `out_path`; returns its manifest. Unsigned only when key_path is None."""
    if kind != "recognizer":
        raise OtaError("kind", "packing a %s is not supported yet (only recognizer models)" % kind)
    private_key = signing.load_private_key(key_path) if key_path else None
    characters_path = characters_path or find_characters(model_path)
    recognizer = load_recognizer(model_path, characters_path, name, str(version), plate_format)
    try:
        contract = check_contract(recognizer)
        sources = {MODEL_MEMBER: model_path, CHARACTERS_MEMBER: characters_path}
        golden = None
        if golden_dir:
            sources.update(golden_members(golden_dir))
            count, accuracy = run_golden(recognizer, golden_dir)
            if min_accuracy is not None and accuracy + 1e-9 < min_accuracy:
                raise OtaError("golden_failed", "the model reads %.1f%% of the golden set, below --min-accuracy "
                                                "%.1f%%" % (100 * accuracy, 100 * min_accuracy))
            golden = {"path": GOLDEN_DIR, "count": count,
                      "plate_accuracy": round(accuracy if min_accuracy is None else min_accuracy, 4)}
        else:
            log.warning("package %s has no golden set: devices with ota.require_golden_set refuse it", out_path)
    finally:
        recognizer.close()
    manifest = build_manifest(name, version, serial, contract, describe_files(sources), kind=kind, golden=golden,
                              min_daemon_version=min_daemon_version, replaces=replaces, plate_format=plate_format,
                              release_summary=release_summary, slot=slot)
    from edge.ota.package import check_manifest

    check_manifest(manifest)
    write_package(out_path, manifest, sources, private_key)
    return manifest

