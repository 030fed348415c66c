"""Kept for callers of the old name: LPRNet's contract on an ONNX Runtime session (edge/infer)."""
from edge.infer.onnxruntime_backend import OnnxRuntimeSession
from edge.recognize.backends.lprnet import LprnetBackend


class OnnxRuntimeBackend(LprnetBackend):
    def __init__(self, model_info, providers=("CPUExecutionProvider",), threads=0):
        LprnetBackend.__init__(self, OnnxRuntimeSession(model_info.path, providers, threads), model_info)
