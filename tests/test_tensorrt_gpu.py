"""The TensorRT backend on real hardware (a Jetson or an x86 NVIDIA GPU with TensorRT and pycuda): marked
`gpu` and skipped where TensorRT, pycuda or a GPU is missing. scripts/jetson-selftest.sh runs it.

    pytest -m gpu tests/test_tensorrt_gpu.py

For each shipped model (models/*.onnx): a real engine is built, reads on real crops match ONNX Runtime's
(every string at FP32; at FP16 nearly all, probabilities within a tolerance), the engine is reused on a
restart and rebuilt when a key part changes, and a hot batch of 64 runs. Real crops: ../shared/data/real
where present, else plates cut from the bundled sample video through its ROI.

NOT YET RUN ON REAL HARDWARE: written against the TensorRT 8.2-11 API as documented; the first run on a
Jetson or GPU is the first time this file executes.
"""
import glob
import os
import time

import numpy as np
import pytest

from edge.config.model import RecognizerConfig
from edge.recognize.backends import create_backend
from edge.recognize.model import load_model_info
from edge.recognize.recognizer import Recognizer
from helpers import ROOT


def _gpu_missing():
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return "TensorRT does not import: %s" % exc
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA device"
    except Exception as exc:
        return "pycuda/CUDA unusable: %s" % exc
    return None


MISSING = _gpu_missing()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

MODELS = sorted(p for p in glob.glob(os.path.join(ROOT, "models", "*.onnx")) if not p.endswith(".fp16.onnx"))
REAL = {"us": os.path.join(ROOT, "..", "shared", "data", "real", "us", "openalpr_seg_and_ocr", "image"),
        "ch": os.path.join(ROOT, "..", "shared", "data", "real", "ch", "lprnet_pytorch_test", "image")}
FP16_STRING_AGREEMENT = 0.97  # FP16 may flip a borderline character on a few plates
FP16_PROB_TOLERANCE = 0.05
FP32_PROB_TOLERANCE = 2e-3


def real_crops(model, n=128):
    import cv2

    region = os.path.basename(model).split("_", 1)[0]
    paths = sorted(glob.glob(os.path.join(REAL.get(region, ""), "*")))[:n]
    if paths:
        return [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]
    from edge.config.model import RoiConfig
    from edge.crop import RoiCropper

    roi = RoiConfig("lane1", [(255, 229), (385, 224), (387, 291), (257, 294)])
    cap, crops = cv2.VideoCapture(os.path.join(ROOT, "samples", "gate_us.mp4")), []
    while len(crops) < n:
        ok, frame = cap.read()
        if not ok:
            break
        crops += [c.image for c in RoiCropper("gate", [roi]).crops(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))]
    cap.release()
    return crops


def recognizer(model, backend, tmp_path, **kw):
    info = load_model_info(model)
    rc = RecognizerConfig(backend=backend, max_batch=kw.pop("max_batch", 64), engine_dir=str(tmp_path / "engines"), **kw)
    return Recognizer(info, create_backend(backend, info, rc))


def outputs(rec, crops):
    from edge.recognize.preprocess import to_batch

    ids, probs, _ = rec.backend.infer(to_batch(crops))
    return ids, probs, [r.text for r in rec.read(crops)]


@pytest.mark.parametrize("model", MODELS, ids=[os.path.basename(m) for m in MODELS])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_reads_as_onnx_runtime_does(model, precision, tmp_path):
    crops = real_crops(model)
    assert len(crops) >= 16
    ort_rec = recognizer(model, "onnxruntime", tmp_path)
    trt_rec = recognizer(model, "tensorrt", tmp_path, precision=precision)
    try:
        assert trt_rec.backend.name == "tensorrt" and trt_rec.backend.fallback_reason is None
        ort_ids, ort_probs, ort_text = outputs(ort_rec, crops)
        trt_ids, trt_probs, trt_text = outputs(trt_rec, crops)
        assert trt_ids.dtype == np.int32 and trt_ids.shape == ort_ids.shape
        same = sum(a == b for a, b in zip(ort_text, trt_text)) / float(len(crops))
        agree = trt_ids == ort_ids  # compare probabilities where both chose the same class
        diff = float(np.abs(trt_probs - ort_probs)[agree].max())
        if precision == "fp32":
            assert same == 1.0 and diff < FP32_PROB_TOLERANCE, (same, diff)
        else:
            assert same >= FP16_STRING_AGREEMENT and diff < FP16_PROB_TOLERANCE, (same, diff)
    finally:
        ort_rec.close()
        trt_rec.close()


def test_engine_reused_on_restart_rebuilt_on_a_key_change(tmp_path):
    model = MODELS[0]
    start = time.monotonic()
    first = recognizer(model, "tensorrt", tmp_path, max_batch=16)
    built_s = time.monotonic() - start
    record = first.backend.session.record
    first.close()
    assert record["built"]
    start = time.monotonic()
    again = recognizer(model, "tensorrt", tmp_path, max_batch=16)
    assert not again.backend.session.record["built"] and time.monotonic() - start < built_s
    again.close()
    changed = recognizer(model, "tensorrt", tmp_path, max_batch=16, workspace_mb=128)
    assert changed.backend.session.record["built"]
    changed.close()
    assert len(glob.glob(str(tmp_path / "engines" / "*.engine"))) == 2


def test_hot_batch_of_64(tmp_path):
    model = MODELS[0]
    rec = recognizer(model, "tensorrt", tmp_path, max_batch=64)
    try:
        crops = (real_crops(model, 64) * 64)[:64]
        from edge.recognize.preprocess import to_batch

        batch = to_batch(crops)
        first = rec.backend.infer(batch)
        start = time.monotonic()
        for _ in range(50):
            ids, probs, _ = rec.backend.infer(batch)
        per_batch = (time.monotonic() - start) / 50
        assert ids.shape[0] == 64 and (ids == first[0]).all()
        print("batch 64: %.2f ms, %.0f plates/s" % (per_batch * 1e3, 64 / per_batch))
    finally:
        rec.close()
