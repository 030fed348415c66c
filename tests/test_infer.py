"""edge.infer: a backend runs any ONNX model by tensor name; the LPRNet contract sits on top in the recognizer."""
import numpy as np
import pytest

from edge.infer import InferOptions, ModelError, create_session
from edge.infer.onnxruntime_backend import OnnxRuntimeSession
from onnx_models import make_lprnet_like


def test_session_describes_and_runs_by_tensor_name(tmp_path):
    session = create_session("onnxruntime", make_lprnet_like(tmp_path / "m.onnx", force_class=5, class_probs=True))
    assert [(i.name, i.shape[1:], i.dtype) for i in session.inputs] == [("image_input", (3, 48, 96), "float32")]
    assert [(o.name, o.dtype) for o in session.outputs] == [
        ("tf_op_layer_ArgMax", "int64"), ("tf_op_layer_Max", "float32"), ("class_probs", "float32")]
    assert session.max_batch is None and not session.fixed_batch and session.fallback_reason is None
    probs, ids = session.run({"image_input": np.zeros((2, 3, 48, 96), np.float32)},
                             ["tf_op_layer_Max", "tf_op_layer_ArgMax"])
    assert ids.shape == (2, 24) and (ids == 5).all() and probs.shape == (2, 24)


def test_fixed_batch_model_reports_it(tmp_path):
    session = OnnxRuntimeSession(make_lprnet_like(tmp_path / "b4.onnx", input_shape=(4, 3, 48, 96)))
    assert session.max_batch == 4 and session.fixed_batch


def test_unknown_backend_and_bad_file(tmp_path):
    with pytest.raises(ValueError) as info:
        create_session("openvino", "x.onnx")
    assert "openvino" in str(info.value) and "tensorrt" in str(info.value)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ModelError) as info:
        create_session("onnxruntime", str(junk), InferOptions())
    assert "junk.onnx" in str(info.value)


def test_batch_profile_from_options():
    assert InferOptions(max_batch=64).batch_profile() == (1, 64, 64)
    assert InferOptions(max_batch=64, opt_batch=16).batch_profile() == (1, 16, 64)
    assert InferOptions(max_batch=8, opt_batch=32).batch_profile() == (1, 8, 8)


@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                    reason="this onnxruntime has the CUDA provider")
def test_a_missing_gpu_provider_is_a_warning_not_silent(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, "edge.infer"):
        session = OnnxRuntimeSession(make_lprnet_like(tmp_path / "m.onnx"), ["CUDAExecutionProvider",
                                                                            "CPUExecutionProvider"])
    assert session.providers == ("CPUExecutionProvider",)
    assert "no CUDAExecutionProvider" in caplog.text and "onnxruntime-gpu" in caplog.text
