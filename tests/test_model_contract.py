"""A model that does not fit NVIDIA's deployable LPRNet contract is refused at load, with the file and
the problem named; one that fits (including a fixed-batch export) is used."""
import os
import shutil

import numpy as np
import pytest

from edge.config.model import RecognizerConfig
from edge.recognize.backends import create_backend
from edge.recognize.model import ModelError, load_model_info
from edge.recognize.recognizer import Recognizer
from helpers import ROOT
from onnx_models import make_lprnet_like

US_CHARS = os.path.join(ROOT, "models", "us_lp_characters.txt")


def load(path, chars=US_CHARS):
    info = load_model_info(str(path), chars)
    return Recognizer(info, create_backend("onnxruntime", info, RecognizerConfig()))


def test_fitting_model_loads_and_reads(tmp_path):
    rec = load(make_lprnet_like(tmp_path / "ok.onnx", force_class=3))
    reads = rec.read([np.zeros((30, 80, 3), np.uint8)] * 3)
    assert [r.text for r in reads] == ["3"] * 3
    assert rec.backend.timesteps == 24


def test_fixed_batch_model_runs_in_chunks(tmp_path):
    rec = load(make_lprnet_like(tmp_path / "b1.onnx", input_shape=(1, 3, 48, 96), force_class=7))
    assert rec.backend.max_batch == 1
    assert [r.text for r in rec.read([np.zeros((48, 96, 3), np.uint8)] * 5)] == ["7"] * 5


def test_wrong_input_shape_is_refused(tmp_path):
    with pytest.raises(ModelError) as info:
        load(make_lprnet_like(tmp_path / "big.onnx", input_shape=("N", 3, 64, 128)))
    assert "big.onnx" in str(info.value) and "[N,3,48,96]" in str(info.value)


def test_missing_outputs_are_refused(tmp_path):
    with pytest.raises(ModelError) as info:
        load(make_lprnet_like(tmp_path / "names.onnx", output_names=("ids", "probs")))
    assert "tf_op_layer_ArgMax" in str(info.value) and "names.onnx" in str(info.value)


def test_class_ids_beyond_characters_list_are_refused(tmp_path):
    # a CH-sized model (68 classes) given the US list (35 characters): the probe sees id 60
    with pytest.raises(ModelError) as info:
        load(make_lprnet_like(tmp_path / "ch.onnx", n_classes=68, force_class=60))
    assert "does not match" in str(info.value)


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError) as info:
        load(path)
    assert "junk.onnx" in str(info.value) and "cannot load" in str(info.value)


def test_missing_characters_list(tmp_path):
    path = make_lprnet_like(tmp_path / "nochars.onnx")
    with pytest.raises(ModelError) as info:
        load_model_info(path)
    assert "no characters list" in str(info.value)


def test_characters_list_with_duplicates(tmp_path):
    chars = tmp_path / "dup.txt"
    chars.write_text("A\nB\nA\n")
    with pytest.raises(ModelError) as info:
        load_model_info(make_lprnet_like(tmp_path / "m.onnx"), str(chars))
    assert "dup.txt:3" in str(info.value) and "duplicate" in str(info.value)


def test_manifest_sha256_mismatch_is_refused(tmp_path):
    path = make_lprnet_like(tmp_path / "us_model.onnx")
    shutil.copy(US_CHARS, str(tmp_path / "us_lp_characters.txt"))
    (tmp_path / "manifest.yaml").write_text(
        "models:\n  us_model:\n    file: us_model.onnx\n    version: '1'\n    sha256: '%s'\n" % ("0" * 64))
    with pytest.raises(ModelError) as info:
        load_model_info(path)
    assert "does not match" in str(info.value) and "manifest.yaml" in str(info.value)
