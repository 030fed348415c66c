"""The shipped models: manifest entries match the files, NVIDIA's character lists, an opset old devices
parse (ONNX Runtime 1.10 on JetPack 4.6's Python 3.6, TensorRT 8.0/8.2), the size budget, the contract."""
import os

import yaml

from edge.config.model import RecognizerConfig
from edge.dataset import load_characters
from edge.recognize.backends import create_backend
from edge.recognize.model import load_model_info, sha256_file
from helpers import ROOT

MODELS = os.path.join(ROOT, "models")


def manifest():
    with open(os.path.join(MODELS, "manifest.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_manifest_matches_files_and_defaults():
    m = manifest()
    assert set(m["default"]) == {"us", "ch", "detector"}
    for region in ("us", "ch"):
        name = m["default"][region]
        entry = m["models"][name]
        path = os.path.join(MODELS, entry["file"])
        assert entry["region"] == region and entry["sha256"] == sha256_file(path)
        for part in ("validation", "accuracy"):
            for crops in ("tight_crops", "detector_crops"):
                acc = entry[part][crops]
                assert acc["count"] > 0 and 0 < acc["plate_accuracy"] <= 1 and acc["per_set"], (region, part)
        assert "evaluation parts" in entry["accuracy"]["data"] and "validation parts" in entry["validation"]["data"]
        assert not os.path.exists(os.path.splitext(path)[0] + ".pt")  # fine-tuning starts from the ONNX itself


def test_make_evaluate_measures_what_the_manifest_says():
    """`make evaluate` runs the very commands whose figures the manifest holds: the evaluation parts only."""
    import subprocess

    out = subprocess.run(["make", "-s", "-n", "evaluate", "BIN=.venv/bin"], cwd=ROOT, stdout=subprocess.PIPE,
                         universal_newlines=True).stdout
    m = manifest()
    for region in ("us", "ch"):
        for crops in ("tight", "detector"):
            cmd = m["models"][m["default"][region]]["accuracy"][crops + "_crops"]["command"]
            expected = cmd.replace("--crops %s" % crops, "--crops $crops")
            assert expected in out, (expected, out)
            assert "_eval.txt" in cmd and "_val.txt" not in cmd and "_train.txt" not in cmd


def test_nvidia_character_lists():
    us = load_characters(os.path.join(MODELS, "us_lp_characters.txt"))
    ch = load_characters(os.path.join(MODELS, "ch_lp_characters.txt"))
    assert len(us) == 35 and "O" not in us and "I" in us and us[:10] == list("0123456789")
    assert len(ch) == 67 and ch[0] == "皖" and ch[-1] == "9" and "I" not in ch and "O" not in ch
    assert os.path.getsize(os.path.join(MODELS, "us_lp_characters.txt")) == 70  # byte-identical size to NVIDIA's


def test_size_budget_and_opset():
    import onnx

    total = sum(os.path.getsize(os.path.join(MODELS, n)) for n in os.listdir(MODELS))
    assert total < 48 * 1000 * 1000
    for name in os.listdir(MODELS):
        if name.endswith(".onnx"):
            model = onnx.load(os.path.join(MODELS, name))
            assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 13, name
            assert model.ir_version <= 7, name


def test_shipped_models_load_with_the_contract():
    for entry in manifest()["models"].values():
        info = load_model_info(os.path.join(MODELS, entry["file"]))
        backend = create_backend("onnxruntime", info, RecognizerConfig())
        assert backend.input_name == "image_input" and backend.timesteps == 24
        assert len(info.characters) == (35 if entry["region"] == "us" else 67)


def test_shipped_detector_matches_its_entry_and_contract():
    from edge.detect import Detector

    m = manifest()
    entry = m["detectors"][m["default"]["detector"]]
    path = os.path.join(MODELS, entry["file"])
    assert entry["sha256"] == sha256_file(path) and entry["size_bytes"] == os.path.getsize(path)
    assert "held out" in entry["accuracy"]["data"] and 0 < entry["accuracy"]["threshold_0.3"]["recall_iou50"] <= 1
    detector = Detector.load(path)
    assert detector.kind == "detectnet_v2" and detector.input_size == (512, 288)
    assert detector.name == m["default"]["detector"] and detector.version == str(entry["version"])
