"""The inference layer every stage shares (the LPRNet recognizer now, a plate detector next): a backend runs
an ONNX model by tensor name (base.Session); each stage keeps its own contract checks and decoding.

    create_session("tensorrt" | "onnxruntime", model_path, InferOptions) -> Session

`tensorrt` that cannot run here (no TensorRT, no pycuda, no GPU, a build that fails) falls back to ONNX Runtime
with ONE warning naming what is missing and how to install it; the session's `fallback_reason` says why, so
health and metrics can show it. Never a dead daemon, never a silent CPU fallback.
"""
import logging

from edge.infer.base import BackendUnavailable, InferOptions, ModelError, Session, TensorSpec

log = logging.getLogger("edge.infer")

BACKENDS = ("onnxruntime", "tensorrt")
# ONNX Runtime providers the fallback tries, best first (those not in this onnxruntime build are skipped)
FALLBACK_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def create_session(backend, model_path, options=None):
    options = options or InferOptions()
    if backend == "onnxruntime":
        from edge.infer.onnxruntime_backend import OnnxRuntimeSession

        return OnnxRuntimeSession(model_path, options.providers, options.threads)
    if backend == "tensorrt":
        return _tensorrt_or_fallback(model_path, options)
    raise ValueError("unknown inference backend %r (known: %s)" % (backend, ", ".join(BACKENDS)))


def _tensorrt_or_fallback(model_path, options):
    from edge.infer.onnxruntime_backend import OnnxRuntimeSession
    from edge.infer.tensorrt_backend import TensorRTSession

    try:
        return TensorRTSession(model_path, options)
    except BackendUnavailable as exc:
        reason = str(exc)
    session = OnnxRuntimeSession(model_path, FALLBACK_PROVIDERS, options.threads, warn_missing=False)
    session.fallback_reason = reason
    log.warning("backend tensorrt: %s; running %s on ONNX Runtime (%s) instead", reason, model_path,
                ",".join(session.providers))
    return session


__all__ = ["BACKENDS", "BackendUnavailable", "InferOptions", "ModelError", "Session", "TensorSpec", "create_session"]
