"""The selftest's table (edge/infer/selftest.py) against the TensorRT fakes: every batch size measured, JSON
and markdown written, NVIDIA's figure picked for the module. Its numbers mean something only on a GPU."""
import json
import os

import fake_tensorrt
from edge.infer import selftest
from edge.infer.device import DeviceInfo
from onnx_models import make_lprnet_like


def test_table_json_and_markdown(tmp_path, monkeypatch):
    fake_tensorrt.install(monkeypatch, "8.2")
    model = make_lprnet_like(tmp_path / "tiny.onnx")
    empty = tmp_path / "none"
    empty.mkdir()
    out = tmp_path / "out"
    assert selftest.main([model, "--out", str(out), "--seconds", "0.02", "--models-dir", str(empty)]) == 0
    report = json.load(open(str(out / "selftest.json")))
    rows = report["models"][0]["rows"]
    assert [r["batch"] for r in rows] == [1, 8, 16, 32, 64, 128] and all(r["plates_per_s"] > 0 for r in rows)
    assert report["models"][0]["engine"]["batch_profile"] == [1, 64, 128]
    assert report["models"][0]["engine"]["precision"] == "fp16"
    md = open(str(out / "selftest.md")).read()
    assert "| tiny.onnx |" in md and "batch 128" in md and "TensorRT 8.2.1.8" in md
    assert os.path.isdir(str(out / "engines"))


def test_a_model_that_fails_is_a_row_not_a_crash(tmp_path, monkeypatch):
    fake_tensorrt.install(monkeypatch, "10", build_fails=True)
    model = make_lprnet_like(tmp_path / "tiny.onnx")
    empty = tmp_path / "none"
    empty.mkdir()
    assert selftest.main([model, "--out", str(tmp_path), "--seconds", "0.01", "--models-dir", str(empty)]) == 1
    report = json.load(open(str(tmp_path / "selftest.json")))
    assert "could not build" in report["models"][0]["error"]


def test_published_figures_per_module():
    assert selftest.published_for(DeviceInfo("jetson", "jetson-nano", module="nano"), "NVIDIA Tegra X1") == (16, 32)
    assert selftest.published_for(DeviceInfo("jetson", "jetson-xavier-nx", module="xavier-nx"), "Xavier") == (600, 32)
    assert selftest.published_for(DeviceInfo("jetson", "jetson-agx-xavier", module="agx-xavier"), "x") == (1021, 64)
    assert selftest.published_for(DeviceInfo("x86-nvidia", "x86-nvidia"), "Tesla T4") == (3821, 128)
    assert selftest.published_for(DeviceInfo("x86-nvidia", "x86-nvidia"), "NVIDIA H200") is None
