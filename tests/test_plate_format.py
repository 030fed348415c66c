"""Plate formats: parsing (bad patterns named), matching, CTC decoding held to a format (checked against
every path by brute force), the recognizer with a real ONNX model, the config check, and the shipped CH
model's accuracy on the held-out real crops as the manifest records it."""
import itertools
import json
import os

import numpy as np
import pytest

from edge.config.model import RecognizerConfig
from edge.recognize.backends import create_backend
from edge.recognize.decode import decode
from edge.recognize.model import ModelError, load_model_info
from edge.recognize.plate_format import PlateFormat, PlateFormatError
from edge.recognize.recognizer import Recognizer, plate_format_for
from helpers import ROOT, run_cli
from onnx_models import make_lprnet_like

US_CHARS_FILE = os.path.join(ROOT, "models", "us_lp_characters.txt")
US = [line.strip() for line in open(US_CHARS_FILE) if line.strip()]
REAL_CH = os.path.join(ROOT, "..", "shared", "data", "real", "ch", "lprnet_pytorch_test")


def test_alternatives_counts_and_matching():
    fmt = PlateFormat(r"[A-Z]{2}\d{3,4}|\d[A-HJ-NP-Z]{3}", US)
    assert sorted(len(layout.masks) for layout in fmt.layouts) == [4, 5, 6]
    assert fmt.matches("AB123") and fmt.matches("AB1234") and fmt.matches("7ABC")
    assert not fmt.matches("AB12") and not fmt.matches("AB12345") and not fmt.matches("7AIC")
    assert not fmt.matches("AO123")  # O is not in the US list, so no plate of this model can hold it


@pytest.mark.parametrize("pattern, says", [
    ("", "empty"),
    ("(AB)\\d", "'(' is not supported"),
    ("[A-Z]+", "'+' is not supported"),
    ("[A-Z", "without a closing"),
    ("[A-Z]{x}", "bad count"),
    ("[Z-A]\\d", "runs backwards"),
    ("AB||12", "empty alternative"),
    ("[^A]\\d", "negated"),
    ("\\d{20}", "20 characters"),
    ("O\\d{3}", "position 1 allows only O"),
    ("[A-Z]{1,2}" * 7, "'[A-Z]{1,2}[A-Z]{1,2}"),  # 128 variants: the message names the pattern
])
def test_bad_patterns_are_named(pattern, says):
    with pytest.raises(PlateFormatError) as err:
        PlateFormat(pattern, US)
    assert says in str(err.value)


def _brute_force_best(probs, fmt, characters):
    """The most probable per-timestep path whose CTC text fits: every path of T steps, tried."""
    best, best_score = None, -np.inf
    for path in itertools.product(range(probs.shape[1]), repeat=probs.shape[0]):
        text = decode(np.array(path), np.ones(len(path)), characters).text
        if fmt.matches(text):
            score = float(np.sum(np.log(probs[np.arange(len(path)), path])))
            if score > best_score:
                best, best_score = path, score
    return best_score


@pytest.mark.parametrize("seed", range(6))
def test_best_path_is_the_most_probable_path_that_fits(seed):
    chars = ["A", "B", "1"]
    fmt = PlateFormat("[AB]1|[AB]{2}1", chars)
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=6)  # 6 timesteps, 3 characters + blank
    path = fmt.best_path(probs)
    text = decode(path, np.ones(len(path)), chars).text
    assert fmt.matches(text)
    score = float(np.sum(np.log(probs[np.arange(len(path)), path])))
    assert abs(score - _brute_force_best(probs, fmt, chars)) < 1e-9


def test_repeated_characters_get_a_blank_between():
    chars = ["1", "2"]
    probs = np.full((5, 3), 0.01)
    probs[:, 0] = 0.98  # greedy: one long run of "1" -> "1"
    path = PlateFormat("11", chars).best_path(probs)
    assert decode(path, np.ones(5), chars).text == "11" and 2 in path.tolist()


def test_no_path_when_the_format_is_longer_than_the_timesteps():
    assert PlateFormat("\\d{5}", US).best_path(np.full((4, len(US) + 1), 1.0 / (len(US) + 1))) is None


def _bias_reading(text, weak_extra, n_classes):
    """Logits for 24 timesteps that greedy-decode to `text`, with `weak_extra` squeezed in at low margin."""
    bias = np.zeros((24, n_classes), np.float32)
    blank = n_classes - 1
    bias[:, blank] = 5.0
    for i, c in enumerate(text):
        bias[2 + 3 * i, US.index(c)] = 9.0
    t = 2 + 3 * len(text)
    bias[t, US.index(weak_extra)] = 5.5  # a character barely above the blank: the one to drop
    return bias


def _recognizer(path, pattern):
    info = load_model_info(str(path), US_CHARS_FILE)
    return Recognizer(info, create_backend("onnxruntime", info, RecognizerConfig()), plate_format_for(info, pattern))


def test_recognizer_re_decodes_a_read_that_does_not_fit(tmp_path):
    bias = _bias_reading("ABC123", "7", len(US) + 1)
    model = make_lprnet_like(tmp_path / "m.onnx", n_classes=len(US) + 1, bias=bias, class_probs=True)
    crops = [np.zeros((48, 96, 3), np.uint8)] * 2
    assert [r.text for r in _recognizer(model, "").read(crops)] == ["ABC1237"] * 2  # greedy
    rec = _recognizer(model, "[A-Z]{3}\\d{3}")
    reads = rec.read(crops)
    assert [(r.text, r.format_match) for r in reads] == [("ABC123", True)] * 2
    assert rec.format_refits == 2 and rec.format_misses == 0
    assert 0 < reads[0].score <= 1 and len(reads[0].char_scores) == 6
    assert rec.read(crops[:1])[0].text == "ABC123" and rec.format_refits == 3
    fits = _recognizer(model, "[A-Z]{3}\\d{4}").read(crops[:1])[0]  # the greedy read fits: left alone
    assert (fits.text, fits.format_match) == ("ABC1237", True)


def test_nvidia_two_output_model_keeps_reads_and_says_they_miss(tmp_path):
    bias = _bias_reading("ABC123", "7", len(US) + 1)
    model = make_lprnet_like(tmp_path / "nv.onnx", n_classes=len(US) + 1, bias=bias)
    rec = _recognizer(model, "[A-Z]{3}\\d{3}")
    read = rec.read([np.zeros((48, 96, 3), np.uint8)])[0]
    assert (read.text, read.format_match) == ("ABC1237", False) and rec.format_misses == 1


def test_class_probs_of_the_wrong_shape_are_refused(tmp_path):
    import onnx

    path = make_lprnet_like(tmp_path / "bad.onnx", n_classes=len(US) + 1, class_probs=True)
    model = onnx.load(path)
    model.graph.node[-1].op_type = "ReduceMax"  # class_probs becomes [N, T]: not per class
    model.graph.node[-1].attribute.extend([onnx.helper.make_attribute("axes", [2]),
                                           onnx.helper.make_attribute("keepdims", 0)])
    del model.graph.output[-1].type.tensor_type.shape.dim[-1]
    onnx.save(model, path)
    info = load_model_info(path, US_CHARS_FILE)
    with pytest.raises(ModelError) as err:
        create_backend("onnxruntime", info, RecognizerConfig())
    assert "class_probs" in str(err.value) and "bad.onnx" in str(err.value)
    shorter = make_lprnet_like(tmp_path / "short.onnx", n_classes=len(US) + 1, class_probs=True)
    info = load_model_info(shorter, os.path.join(ROOT, "models", "ch_lp_characters.txt"))  # 67 characters, 36 classes
    with pytest.raises(ModelError) as err:
        create_backend("onnxruntime", info, RecognizerConfig())
    assert "[N, T, 68]" in str(err.value)


def test_format_the_characters_cannot_spell_names_model_and_list(tmp_path):
    model = make_lprnet_like(tmp_path / "m.onnx", n_classes=len(US) + 1)
    info = load_model_info(model, US_CHARS_FILE)
    with pytest.raises(ModelError) as err:
        plate_format_for(info, "[皖沪]\\d{5}")
    assert "m.onnx" in str(err.value) and "us_lp_characters.txt" in str(err.value)


def test_config_names_a_bad_plate_format(tmp_path):
    model = make_lprnet_like(tmp_path / "m.onnx", n_classes=len(US) + 1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("device_id: t\ndevice_profile: cpu\nmodel:\n  path: %s\n  plate_format: '[A-Z]+'\ncameras:\n"
                   "  - id: gate\n    source: %s\n    mode: crop\n" % (model, tmp_path))
    result = run_cli("check-config", str(cfg))
    assert result.returncode != 0 and "model.plate_format" in result.stderr and "'+' is not supported" in result.stderr


def test_shipped_ch_model_format_and_us_without_one():
    for region, has_format in (("ch", True), ("us", False)):
        path = os.path.join(ROOT, "models", "%s_lprnet_baseline10_mid.onnx" % region)
        info = load_model_info(path)
        fmt = plate_format_for(info)
        assert (fmt is not None) == has_format
    fmt = plate_format_for(load_model_info(os.path.join(ROOT, "models", "ch_lprnet_baseline10_mid.onnx")))
    for plate in ("皖A12345", "京AD12345", "粤B12345F", "皖A1234警", "沪AQK728"):
        assert fmt.matches(plate), plate
    for plate in ("皖A123456", "皖12345A", "AA12345", "皖A1234", "皖A0VT790"):
        assert not fmt.matches(plate), plate


@pytest.mark.skipif(not os.path.isdir(REAL_CH), reason="needs ../shared/data/real (real plates, not in the repo)")
def test_evaluate_reports_the_manifests_ch_accuracy():
    import yaml

    with open(os.path.join(ROOT, "models", "manifest.yaml"), encoding="utf-8") as f:
        entry = yaml.safe_load(f)["models"]["ch_lprnet_baseline10_mid"]
    args = entry["accuracy"]["tight_crops"]["command"].split()[2:]  # after ".venv/bin/lpr-edge evaluate"
    result = run_cli("evaluate", *(args + ["--json"]))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["plate_accuracy"] == entry["accuracy"]["tight_crops"]["plate_accuracy"]
    assert summary["format_refits"] > 0 and summary["format_misses"] == 0
    greedy = run_cli("evaluate", *(args + ["--json", "--plate-format", "none"]))
    assert json.loads(greedy.stdout.strip().splitlines()[-1])["plate_accuracy"] == \
        entry["accuracy"]["tight_crops"]["plate_accuracy_greedy"]
