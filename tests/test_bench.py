"""`lpr-edge bench model`: MACs counted from the ONNX graph (checked on a graph built here with known costs and on
the shipped model against the training code's formula), latency percentiles per batch, and the FLOP/s the same
runtime reaches on plain work, in one JSON line. No timing is asserted: speed belongs to the benchmark."""
import json
import os

import numpy as np
import pytest

from helpers import ROOT, run_cli

onnx = pytest.importorskip("onnx")


def test_macs_are_counted_from_the_graph(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from edge.bench import count_macs

    rng = np.random.default_rng(0)
    conv_w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "cw")
    lstm_w = numpy_helper.from_array(rng.standard_normal((1, 4 * 16, 8 * 12)).astype(np.float32), "lw")
    lstm_r = numpy_helper.from_array(rng.standard_normal((1, 4 * 16, 16)).astype(np.float32), "lr")
    dense = numpy_helper.from_array(rng.standard_normal((16, 5)).astype(np.float32), "dw")
    shape = numpy_helper.from_array(np.array([24, 1, 8 * 12], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1], strides=[4, 4]),    # 1x8x12x24
        helper.make_node("Transpose", ["c"], ["t"], perm=[3, 0, 1, 2]),                  # 24x1x8x12
        helper.make_node("Reshape", ["t", "shape"], ["seq"]),                            # 24x1x96
        helper.make_node("LSTM", ["seq", "lw", "lr"], ["h"], hidden_size=16),             # 24x1x1x16
        helper.make_node("Flatten", ["h"], ["f"], axis=3),                                 # 24x16
        helper.make_node("MatMul", ["f", "dw"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 48, 96])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [conv_w, lstm_w, lstm_r, dense, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = str(tmp_path / "g.onnx")
    onnx.save(model, path)
    macs = count_macs(path)
    assert macs["conv"] == 8 * 12 * 24 * (3 * 3 * 3)
    assert macs["lstm"] == 24 * 1 * 64 * (96 + 16)
    assert macs["matmul"] == (24 * 1 * 5) * 16
    assert macs["total"] == macs["conv"] + macs["lstm"] + macs["matmul"]


def test_shipped_model_macs_match_the_architecture():
    from edge.bench import count_macs

    macs = count_macs(os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx"))
    # the README's 0.39 GMAC per plate: 9 convolutions of the mid baseline10, a 256-unit LSTM over 24 steps
    assert 0.38e9 < macs["total"] < 0.40e9 and macs["lstm"] == 24 * 4 * 256 * (12 * 150 + 256)


def test_bench_model_json_line(tmp_path):
    model = os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")
    result = run_cli("bench", "model", "--model", model, "--batch", "1,4", "--seconds", "0.3", "--json", "--threads", "1")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["macs"]["total"] > 0 and set(out["reference_gflops"]) == {"matmul", "conv3x3"}
    assert [r["batch"] for r in out["rows"]] == [1, 4]
    for row in out["rows"]:
        assert row["latency_ms_p99"] >= row["latency_ms_p50"] > 0 and row["plates_per_s"] > 0
        assert row["gflops"] > 0 and 0 < row["vs_conv3x3"] and 0 < row["vs_matmul"]
    assert "GMAC per plate" in result.stdout and "plain work" in result.stdout
    legacy = run_cli("bench", "--model", model, "--batch", "1", "--seconds", "0.2")  # `bench` alone is `bench model`
    assert legacy.returncode == 0, legacy.stderr


def test_macs_of_a_quantized_graph_whose_weights_are_computed(tmp_path):
    """A QDQ model's convolution weights come out of DequantizeLinear, not from an initializer."""
    from onnx import TensorProto, helper, numpy_helper

    from edge.bench import count_macs

    w8 = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.int8), "w8")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [helper.make_node("DequantizeLinear", ["w8", "s", "z"], ["w"]),
             helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w8, scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = str(tmp_path / "q.onnx")
    onnx.save(model, path)
    macs = count_macs(path)
    assert macs["conv"] == 4 * 8 * 8 * 27 and macs["uncounted_nodes"] == 0


def test_bench_detector_rows_per_batch(tmp_path):
    from detector_models import detectnet_model

    model = detectnet_model(tmp_path / "det.onnx", [[10, 10, 60, 30]])
    result = run_cli("bench", "detector", "--model", model, "--seconds", "0.3", "--frame", "640x360", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["contract"] == "detectnet_v2" and out["frame"] == [640, 360]
    assert [r["batch"] for r in out["rows"]] == [1, 8]  # a detector's default batches
    for row in out["rows"]:
        assert row["latency_ms_p99"] >= row["latency_ms_p50"] > 0 and row["frames_per_s"] > 0
    bad = run_cli("bench", "detector", "--model", os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx"),
                  "--seconds", "0.2")
    assert bad.returncode == 2 and "fits no detector contract" in bad.stderr


def test_bench_pipeline_on_the_bundled_sample_with_its_own_broker():
    result = run_cli("bench", "pipeline", "--cameras", "1,2", "--seconds", "6", "--fps", "15", "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["cameras"] for r in out["runs"]] == [1, 2] and out["mode"] == "roi" and out["machine"]["cores"] >= 1
    for r in out["runs"]:
        assert 8 < r["fps_per_camera"] <= 15.5, r  # the sample re-timed to 15 frames/s
        assert r["events"] >= 1 and r["latency_ms_p99"] >= r["latency_ms_p50"] > 0, r
        assert r["cpu_percent"] > 0 and r["rss_mb"] >= r["rss_mb_start"] > 20
        assert 0 <= r["overhead"] < 1 and r["frames_dropped"] >= 0 and r["detections_per_s"] is None
    assert "cameras   fps/cam" in result.stdout


def test_bench_pipeline_in_mode_detect_with_a_config(broker, tmp_path):
    from detector_models import detectnet_model
    from test_detect import SAMPLE_PLATE_NET, _detect_config

    config = _detect_config(tmp_path, broker.port, detectnet_model(tmp_path / "det.onnx", [SAMPLE_PLATE_NET]))
    result = run_cli("bench", "pipeline", "--mode", "detect", "--config", config, "--cameras", "2", "--detect-fps",
                     "5", "--seconds", "6", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout.strip().splitlines()[-1])["runs"][0]
    assert run["mode"] == "detect" and 6 <= run["detections_per_s"] <= 10.5, run  # 2 cameras x 5 a second
    assert run["events"] >= 1 and 0 <= run["overhead"] < 1
    assert not os.path.exists(str(tmp_path / "state" / "outbox.sqlite3"))  # the bench kept off the config's state
    wrong = run_cli("bench", "pipeline", "--mode", "roi", "--config", config, "--seconds", "6")
    assert wrong.returncode == 2 and "mode detect, not roi" in wrong.stderr
    bad = run_cli("bench", "pipeline", "--cameras", "0", "--seconds", "6")
    assert bad.returncode == 2 and "--cameras" in bad.stderr


def test_bench_report_plots_and_tables_from_results(tmp_path):
    import subprocess
    import sys

    pytest = __import__("pytest")
    pytest.importorskip("matplotlib")
    rows = [{"batch": b, "plates_per_s": 100.0 + b, "latency_ms_p50": 9.0 * b, "latency_ms_p99": 10.0 * b,
             "gflops": 80.0, "vs_conv3x3": 0.9} for b in (1, 8, 16)]
    runs = [{"cameras": c, "fps_per_camera": 10.0, "frames_dropped": 0, "events": 3 * c, "latency_ms_p50": 40.0 + c,
             "latency_ms_p99": 50.0 + c, "cpu_percent": 20.0 * c, "rss_mb": 150.0, "overhead": 0.3} for c in (1, 2, 4)]
    results = {"model": {"rows": rows}, "pipeline": {"mode": "roi", "date": "2026-12-02", "runs": runs,
                                                      "machine": {"cpu": "Test CPU", "cores": 2}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_report.py"), "--out", str(tmp_path),
                          "--from-json", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert out.returncode == 0, out.stderr
    for name in ("throughput-batch.png", "pipeline-cameras.png"):
        with open(str(tmp_path / name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "Test CPU (2 cores)" in out.stdout and "| 4 | 10.0 | 0 | 12 | 44.0 | 54.0 | 80 | 150 | 30% |" in out.stdout


def test_bench_pipeline_runs_on_tensorrt_where_the_selftest_asks(monkeypatch, tmp_path):
    """`bench pipeline --backend tensorrt` (scripts/jetson-selftest.sh) puts the whole daemon on TensorRT: here
    on the recording fakes (no GPU on this machine); the engine is built into --engine-dir once and serves."""
    import fake_tensorrt
    from edge import bench_pipeline

    fake_tensorrt.install(monkeypatch, "8.6")
    engines = tmp_path / "engines"
    out = bench_pipeline.run([1], 6, backend="tensorrt", engine_dir=str(engines))
    assert out["backend"] == "tensorrt" and out["runs"][0]["events"] >= 1, out
    assert any(name.endswith(".engine") for name in os.listdir(str(engines))), os.listdir(str(engines))
