"""The TensorRT backend's call sequence against recording fakes of TensorRT's two API generations (and the
8.6 / 10 / 11 variants) and of pycuda (tests/fake_tensorrt.py). Fakes only because this machine has no GPU;
tests/test_tensorrt_gpu.py runs the same code on real hardware. The fake engines really compute (ONNX Runtime
on the bytes copied to fake device memory), so reads are compared with ONNX Runtime's."""
import glob
import logging
import os
import shutil
import sys

import numpy as np
import pytest

import fake_tensorrt
from edge.config.model import RecognizerConfig
from edge.infer import InferOptions, create_session
from edge.infer.base import BackendUnavailable
from edge.infer.tensorrt_backend import TensorRTSession
from edge.recognize.backends import create_backend
from edge.recognize.model import load_model_info
from edge.recognize.recognizer import Recognizer
from helpers import ROOT
from onnx_models import make_lprnet_like

US_MODEL = os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")
US_CHARS = os.path.join(ROOT, "models", "us_lp_characters.txt")
REAL_US = os.path.join(ROOT, "..", "shared", "data", "real", "us", "openalpr_seg_and_ocr", "image")
GENERATIONS = ("8.2", "8.6", "10", "11")


def options(tmp_path, **kw):
    base = dict(precision="fp16", max_batch=8, opt_batch=4, workspace_mb=256, engine_dir=str(tmp_path / "engines"))
    base.update(kw)
    return InferOptions(**base)


def real_crops(n):
    import cv2

    paths = sorted(glob.glob(os.path.join(REAL_US, "*")))[:n]
    if len(paths) < n:
        pytest.skip("needs ../shared/data/real/us (real plate crops)")
    return [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]


@pytest.mark.parametrize("gen", GENERATIONS)
def test_reads_match_onnx_runtime_on_real_crops(tmp_path, monkeypatch, gen):
    # a copy without the shipped .fp16.onnx beside it: the fakes compute through ONNX Runtime, whose CPU build
    # cannot run an FP16 graph (TensorRT 11 picks the variant: test_tensorrt_11_builds_the_fp16_variant)
    model = str(tmp_path / "us.onnx")
    shutil.copy(US_MODEL, model)
    info = load_model_info(model, US_CHARS)
    crops = real_crops(12)
    expected = [r.text for r in Recognizer(info, create_backend("onnxruntime", info, RecognizerConfig())).read(crops)]
    fake_tensorrt.install(monkeypatch, gen)
    rc = RecognizerConfig(backend="tensorrt", max_batch=8, engine_dir=str(tmp_path / "engines"))
    rec = Recognizer(info, create_backend("tensorrt", info, rc))
    try:
        assert rec.backend.name == "tensorrt" and rec.backend.fallback_reason is None
        ids, probs, _ = rec.backend.infer(np.zeros((3, 3, 48, 96), np.float32))
        assert ids.dtype == np.int32 and probs.dtype == np.float32  # ArgMax comes back int32 from TensorRT
        reads = rec.read(crops)  # 12 crops: more than the profile's max of 8, run in two
        assert [r.text for r in reads] == expected and len(set(expected)) > 3
    finally:
        rec.close()


def test_tensorrt_11_builds_the_fp16_variant_shipped_beside_the_model(tmp_path, monkeypatch):
    """TensorRT 11 has no FP16 builder flag: the shipped <model>.fp16.onnx is what it parses; without one it
    builds FP32 and says so."""
    from edge.infer.tensorrt_backend import BuildPlan, fp16_variant

    trt, _ = fake_tensorrt.install(monkeypatch, "11")
    plan = BuildPlan(trt, US_MODEL, options(tmp_path), 0)
    assert plan.source_path == fp16_variant(US_MODEL) and os.path.isfile(plan.source_path)
    assert plan.precision == "fp16" and not plan.fp16_flag and not plan.notes
    bare = str(tmp_path / "us.onnx")
    shutil.copy(US_MODEL, bare)
    plan = BuildPlan(trt, bare, options(tmp_path), 0)
    assert plan.source_path == bare and plan.precision == "fp32" and "building FP32" in plan.notes[0]


def test_8_2_binding_indices_execute_async_v2_max_workspace_size(tmp_path, monkeypatch):
    trt, rec = fake_tensorrt.install(monkeypatch, "8.2")
    session = TensorRTSession(make_lprnet_like(tmp_path / "m.onnx", force_class=4), options(tmp_path))
    session.run({"image_input": np.zeros((3, 3, 48, 96), np.float32)})
    session.close()
    names = rec.names()
    assert rec.args("create_network") == [(1,)]  # 1 << EXPLICIT_BATCH
    assert rec.args("config.max_workspace_size") == [(256 << 20,)] and "config.set_memory_pool_limit" not in names
    assert rec.args("config.set_flag") == [(trt.BuilderFlag.FP16,)]
    assert rec.args("profile.set_shape") == [("image_input", (1, 3, 48, 96), (4, 3, 48, 96), (8, 3, 48, 96))]
    # the max batch first (to size the output buffers), then the run's batch
    assert rec.args("context.set_binding_shape") == [(0, (8, 3, 48, 96)), (0, (3, 3, 48, 96))]
    v2 = rec.args("context.execute_async_v2")
    assert v2 and all(len(b) == 3 and all(isinstance(p, int) and p for p in b) and h == 0xBEEF for b, h in v2)
    assert "context.execute_async_v3" not in names and "context.set_input_shape" not in names


@pytest.mark.parametrize("gen", ("8.6", "10", "11"))
def test_tensor_names_execute_async_v3_memory_pool(tmp_path, monkeypatch, gen):
    trt, rec = fake_tensorrt.install(monkeypatch, gen)
    session = TensorRTSession(make_lprnet_like(tmp_path / "m.onnx", force_class=4), options(tmp_path))
    ids, = session.run({"image_input": np.zeros((5, 3, 48, 96), np.float32)}, ["tf_op_layer_ArgMax"])
    session.close()
    assert ids.shape == (5, 24) and (ids == 4).all()
    names = rec.names()
    assert rec.args("create_network") == [(0,) if gen == "11" else (1,)]  # 11.x has no EXPLICIT_BATCH
    assert rec.args("config.set_memory_pool_limit") == [(trt.MemoryPoolType.WORKSPACE, 256 << 20)]
    assert "config.max_workspace_size" not in names
    assert rec.args("config.set_flag") == ([] if gen == "11" else [(trt.BuilderFlag.FP16,)])
    # addresses bound once, for every tensor; the shape set per run; v3 on the one stream
    assert sorted(a[0] for a in rec.args("context.set_tensor_address")) == \
        ["image_input", "tf_op_layer_ArgMax", "tf_op_layer_Max"]
    assert rec.args("context.set_input_shape")[-1] == ("image_input", (5, 3, 48, 96))
    assert rec.args("context.execute_async_v3")[-1] == (0xBEEF,)
    assert "context.execute_async_v2" not in names and "context.set_binding_shape" not in names


def test_cuda_lives_in_its_own_thread_buffers_once_async_copies(tmp_path, monkeypatch):
    _, rec = fake_tensorrt.install(monkeypatch, "10")
    session = TensorRTSession(make_lprnet_like(tmp_path / "m.onnx"), options(tmp_path))
    for n in (1, 8, 3):
        session.run({"image_input": np.zeros((n, 3, 48, 96), np.float32)})
    session.close()
    assert "pycuda.autoinit" not in sys.modules
    cuda_calls = [c for c in rec.calls if c[0].startswith(("cuda.", "ctx.", "retain", "stream.", "dev.", "context."))]
    assert {thread for _, _, thread in cuda_calls} == {"tensorrt"}  # never the caller's thread
    names = rec.names()
    assert names.index("cuda.init") < names.index("retain_primary_context") < names.index("ctx.push") < \
        names.index("Builder")
    assert names[-2:] == ["ctx.pop", "ctx.detach"] and names.count("ctx.push") == 1
    assert rec.count("cuda.mem_alloc") == 3 and rec.count("dev.free") == 3 and rec.count("cuda.Stream") == 1
    sizes = dict((a[1], a[0]) for a in rec.args("cuda.pagelocked_empty"))
    assert sorted(rec.args("cuda.pagelocked_empty")) == sorted([(8 * 3 * 48 * 96, "float32"), (8 * 24, "int32"),
                                                                (8 * 24, "float32")]), sizes
    # each run: copy in, execute, copy out, synchronize; only the batch's bytes move
    run = names[names.index("context.execute_async_v3") - 2:]
    assert run[:5] == ["context.set_input_shape", "cuda.memcpy_htod_async", "context.execute_async_v3",
                       "cuda.memcpy_dtoh_async", "cuda.memcpy_dtoh_async"] and run[5] == "stream.synchronize"
    assert [a[1] for a in rec.args("cuda.memcpy_htod_async")] == [n * 3 * 48 * 96 * 4 for n in (1, 8, 3)]


def test_engine_reused_on_restart_and_rebuilt_on_a_new_tensorrt(tmp_path, monkeypatch):
    model = make_lprnet_like(tmp_path / "m.onnx")
    _, rec = fake_tensorrt.install(monkeypatch, "8.2")
    TensorRTSession(model, options(tmp_path)).close()
    first = TensorRTSession(model, options(tmp_path))
    assert not first.record["built"] and rec.count("build_serialized_network") == 1
    first.close()
    # JetPack upgrade: TensorRT 8.2.1.8 -> 8.2.1.9; the key changes, a new engine is built beside
    _, rec = fake_tensorrt.install(monkeypatch, "8.2", version="8.2.1.9")
    session = TensorRTSession(model, options(tmp_path))
    assert session.record["built"] and rec.count("build_serialized_network") == 1
    assert session.record["parts"]["tensorrt"] == "8.2.1.9" and session.record["parts"]["gpu"] == "NVIDIA Tegra X1"
    assert session.record["parts"]["compute_capability"] == "5.3" and session.record["parts"]["batch_profile"] == [1, 4, 8]
    assert session.record["warnings"] and "INT64" in session.record["warnings"][0]
    session.close()
    assert len(glob.glob(str(tmp_path / "engines" / "m-*.engine"))) == 2
    assert len(glob.glob(str(tmp_path / "engines" / "timing-*.cache"))) == 2  # per TensorRT version and GPU


def test_engine_of_another_version_under_our_key_is_rebuilt(tmp_path, monkeypatch, caplog):
    model = make_lprnet_like(tmp_path / "m.onnx")
    fake_tensorrt.install(monkeypatch, "10")
    session = TensorRTSession(model, options(tmp_path))
    engine_path = session.cache.paths(session.key_parts())[0]
    session.close()
    # the file's sidecar says 10.3.0.30 but the plan inside is 10.2's: deserialize gives None
    with open(engine_path, "rb") as f:
        plan = f.read().replace(b"10.3.0.30", b"10.2.0.19")
    from edge.infer.engine_cache import atomic_write, sha256_bytes
    import json
    atomic_write(engine_path, plan)
    sidecar = engine_path[:-len(".engine")] + ".json"
    record = json.load(open(sidecar))
    record["engine_sha256"] = sha256_bytes(plan)
    atomic_write(sidecar, json.dumps(record).encode())
    _, rec = fake_tensorrt.install(monkeypatch, "10")
    with caplog.at_level(logging.WARNING):
        session = TensorRTSession(model, options(tmp_path))
    session.close()
    assert session.record["built"] and rec.count("deserialize_cuda_engine") == 2
    assert "does not load here" in caplog.text


def test_11_builds_the_fp16_variant_or_fp32_with_a_warning(tmp_path, monkeypatch, caplog):
    model = make_lprnet_like(tmp_path / "m.onnx", force_class=2)
    trt, _ = fake_tensorrt.install(monkeypatch, "11")
    with caplog.at_level(logging.WARNING):
        session = TensorRTSession(model, options(tmp_path))
    session.close()
    assert session.plan.precision == "fp32" and session.record["parts"]["precision"] == "fp32"
    assert "no FP16 builder flag" in caplog.text and "m.fp16.onnx" in caplog.text
    variant = make_lprnet_like(tmp_path / "m.fp16.onnx", force_class=3)
    trt, _ = fake_tensorrt.install(monkeypatch, "11")
    session = TensorRTSession(model, options(tmp_path))
    ids, = session.run({"image_input": np.zeros((1, 3, 48, 96), np.float32)}, ["tf_op_layer_ArgMax"])
    session.close()
    assert session.plan.precision == "fp16" and session.plan.source_path == variant and (ids == 3).all()
    assert trt.fake_state["parsed"][-1] == open(variant, "rb").read()


def test_dla_where_the_module_has_it_else_gpu_with_a_warning(tmp_path, monkeypatch, caplog):
    model = make_lprnet_like(tmp_path / "m.onnx", force_class=1)
    trt, rec = fake_tensorrt.install(monkeypatch, "8.6", gpu_name="Xavier", compute_capability=(7, 2), dla_cores=2)
    session = TensorRTSession(model, options(tmp_path, dla_core=1, max_batch=8))
    ids, = session.run({"image_input": np.zeros((3, 3, 48, 96), np.float32)}, ["tf_op_layer_ArgMax"])
    session.close()
    assert rec.args("config.default_device_type") == [(trt.DeviceType.DLA,)] and rec.args("config.DLA_core") == [(1,)]
    assert (trt.BuilderFlag.GPU_FALLBACK,) in rec.args("config.set_flag")
    assert rec.args("runtime.DLA_core") == [(1,)]  # set before the engine deserializes
    assert rec.args("profile.set_shape") == [("image_input", (8, 3, 48, 96), (8, 3, 48, 96), (8, 3, 48, 96))]
    assert session.fixed_batch and session.record["parts"]["dla_core"] == 1
    assert ids.shape == (3, 24) and rec.args("context.set_input_shape")[-1] == ("image_input", (8, 3, 48, 96))
    _, rec = fake_tensorrt.install(monkeypatch, "8.2", dla_cores=0)
    with caplog.at_level(logging.WARNING):
        session = TensorRTSession(model, options(tmp_path, dla_core=0))
    session.close()
    assert "DLA core 0 but this device has no DLA" in caplog.text and session.record["parts"]["dla_core"] == -1
    assert not rec.args("config.DLA_core")
    # FP32 on a DLA: DLA runs FP16/INT8 only, so the GPU
    _, rec = fake_tensorrt.install(monkeypatch, "8.6", dla_cores=2)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        session = TensorRTSession(model, options(tmp_path, dla_core=0, precision="fp32"))
    session.close()
    assert "needs an FP16 build" in caplog.text and not rec.args("config.DLA_core")


def test_dla_engine_pads_batches_through_the_recognizer(tmp_path, monkeypatch):
    info = load_model_info(make_lprnet_like(tmp_path / "m.onnx", force_class=6), US_CHARS)
    fake_tensorrt.install(monkeypatch, "10", dla_cores=2)
    rc = RecognizerConfig(backend="tensorrt", max_batch=4, dla_core=0, engine_dir=str(tmp_path / "e"))
    rec = Recognizer(info, create_backend("tensorrt", info, rc))
    assert [r.text for r in rec.read([np.zeros((48, 96, 3), np.uint8)] * 6)] == ["6"] * 6
    rec.close()


@pytest.mark.parametrize("problem,expected", [
    ({"cuda_works": False}, "no usable CUDA GPU"),
    ({"build_fails": True}, "could not build an engine"),
])
def test_no_gpu_or_a_failed_build_falls_back_to_onnx_runtime_with_one_warning(tmp_path, monkeypatch, caplog,
                                                                              problem, expected):
    model = make_lprnet_like(tmp_path / "m.onnx", force_class=9)
    fake_tensorrt.install(monkeypatch, "8.2", **problem)
    with caplog.at_level(logging.WARNING):
        session = create_session("tensorrt", model, options(tmp_path))
    assert session.name == "onnxruntime" and expected in session.fallback_reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "instead" in r.getMessage()]
    assert len(warnings) == 1 and expected in warnings[0].getMessage() and "m.onnx" in warnings[0].getMessage()
    ids, = session.run({"image_input": np.zeros((1, 3, 48, 96), np.float32)}, ["tf_op_layer_ArgMax"])
    assert (ids == 9).all()
    assert not glob.glob(str(tmp_path / "engines" / "*.engine"))


def test_a_model_tensorrt_cannot_parse_names_the_file_and_the_parser_errors(tmp_path, monkeypatch):
    fake_tensorrt.install(monkeypatch, "10")
    model = make_lprnet_like(tmp_path / "m.onnx")
    monkeypatch.setattr(fake_tensorrt.ort, "InferenceSession", _refuse_bytes(fake_tensorrt.ort.InferenceSession))
    with pytest.raises(BackendUnavailable) as info:
        TensorRTSession(model, options(tmp_path))
    assert "cannot parse" in str(info.value) and "m.onnx" in str(info.value) and "INVALID_GRAPH" in str(info.value)


def _refuse_bytes(real):
    def session(source, *args, **kwargs):
        if isinstance(source, bytes):
            raise RuntimeError("Unsupported ONNX opset: LSTM")
        return real(source, *args, **kwargs)

    return session


def test_without_tensorrt_installed_the_fallback_names_it_and_how_to_install(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    with caplog.at_level(logging.WARNING):
        session = create_session("tensorrt", make_lprnet_like(tmp_path / "m.onnx"), options(tmp_path))
    assert session.name == "onnxruntime" and "TensorRT does not import" in session.fallback_reason
    assert "--system-site-packages" in session.fallback_reason and "pip install" in session.fallback_reason
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_status_says_building_while_the_engine_builds_before_ready(tmp_path, monkeypatch):
    from edge import app as app_module
    from edge.config import load_config
    from helpers import free_port
    from test_daemon import demo_config
    from test_service import NotifySocket

    notify = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
    monkeypatch.setattr(app_module._ExtendStartTimeout, "INTERVAL_S", 0.5)
    _, rec = fake_tensorrt.install(monkeypatch, "10", build_seconds=2.2)
    config = load_config(demo_config(tmp_path, free_port(), recognizer={"backend": "tensorrt"}, health={"port": 0}))
    app = app_module.App(config)
    try:
        app.init()
        notify.poll(0.3)
        statuses = [f["STATUS"] for _, f in notify.messages if "STATUS" in f]
        building = [s for s in statuses if s.startswith("building TensorRT engine for us_lprnet_baseline10_mid.onnx (")]
        seconds = [int(b.rsplit("(", 1)[1].split()[0]) for b in building]
        assert len(building) >= 3 and seconds == sorted(seconds) and seconds[-1] >= 1, statuses  # the count goes up
        assert len(notify.times("EXTEND_TIMEOUT_USEC")) >= 4 and not notify.times("READY")
        assert app.recognizer.backend.name == "tensorrt" and rec.count("build_serialized_network") == 1
    finally:
        app.recognizer.close()
        app.notifier.close()
        notify.close()
