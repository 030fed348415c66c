"""ONNX Runtime backend: the embedded default on a machine without a GPU (CPU provider), on GPUs through
onnxruntime-gpu's CUDA / TensorRT providers where they load, and the fallback of the tensorrt backend."""
import logging
import os

import numpy as np

from edge.infer.base import ModelError, Session, TensorSpec

log = logging.getLogger("edge.infer")

# ONNX Runtime's type strings as numpy dtype names
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _spec(arg):
    shape = tuple(d if isinstance(d, int) and d > 0 else (d or None) for d in (arg.shape or ()))
    return TensorSpec(arg.name, shape, _DTYPES.get(arg.type, arg.type))


class OnnxRuntimeSession(Session):
    name = "onnxruntime"

    def __init__(self, path, providers=("CPUExecutionProvider",), threads=0, warn_missing=True):
        import onnxruntime as ort

        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available]
        missing = [p for p in providers if p not in available and p != "CPUExecutionProvider"]
        if missing and warn_missing:  # never a silent CPU fallback
            log.warning("ONNX Runtime %s here has no %s (pip's onnxruntime is CPU only; on a Jetson use NVIDIA's "
                        "onnxruntime-gpu, or backend tensorrt): running %s on %s", ort.__version__,
                        ", ".join(missing), path, ", ".join(chosen or ["CPUExecutionProvider"]))
        if "CPUExecutionProvider" not in chosen:
            chosen.append("CPUExecutionProvider")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        if os.environ.get("LPR_EDGE_ORT_SPIN") != "1":
            # ONNX Runtime's pool threads spin after each run by default, waiting for the next: right for a
            # server at full load, wrong for a daemon reading a few crops ten times a second, where the spin
            # burns the cores the cameras' decoding needs (bench pipeline: see the README's Benchmarks)
            try:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.add_session_config_entry("session.inter_op.allow_spinning", "0")
            except Exception:  # an ONNX Runtime without session config entries: it spins, as before
                pass
        try:
            self.session = ort.InferenceSession(path, options, providers=chosen)
        except Exception as exc:  # ORT raises its own exception types for a bad file
            raise ModelError("%s: ONNX Runtime cannot load it: %s" % (path, str(exc).splitlines()[0]))
        self.path = path
        self.providers = tuple(self.session.get_providers())
        self.inputs = [_spec(i) for i in self.session.get_inputs()]
        self.outputs = [_spec(o) for o in self.session.get_outputs()]
        self.fixed_batch = self.max_batch is not None

    def run(self, feeds, output_names=None):
        names = list(output_names or [o.name for o in self.outputs])
        return [np.asarray(out) for out in self.session.run(names, feeds)]
