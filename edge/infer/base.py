"""The backend interface: an ONNX model run by tensor name.

    session.inputs / session.outputs   [TensorSpec(name, shape, dtype)]  shape: ints, a str or None where
                                       the dimension is dynamic; dtype: numpy name ('float32', 'int64', ...)
    session.run({input name: array}, [output names]) -> [arrays], in the order asked
    session.max_batch                  most items one run takes (None: any); fixed_batch: exactly that many

Stages check their own contract on top (edge/recognize/backends/lprnet.py for LPRNet).
"""
from collections import namedtuple
from dataclasses import dataclass, field
from typing import List, Optional

TensorSpec = namedtuple("TensorSpec", "name shape dtype")


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file and the problem."""


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (a library missing, no GPU, an engine build that failed). The message
    names what is missing and how to install it; create_session falls back to ONNX Runtime on it."""


@dataclass
class InferOptions:
    """What a backend needs beyond the model file. The TensorRT keys come from the device profile."""
    providers: List[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    threads: int = 0
    precision: str = "fp16"
    max_batch: int = 16
    opt_batch: Optional[int] = None  # TensorRT optimisation profile's opt; None: max_batch
    workspace_mb: int = 512
    dla_core: int = -1  # -1: the GPU
    engine_dir: Optional[str] = None
    engines_keep: int = 2

    def batch_profile(self):
        opt = min(self.opt_batch or self.max_batch, self.max_batch)
        return (1, opt, self.max_batch)


class Session:
    name = "base"
    providers = ()
    inputs = ()
    outputs = ()
    fixed_batch = False
    fallback_reason = None  # set when this session runs in place of the backend the config asked for

    @property
    def max_batch(self):
        if not self.inputs:
            return None
        first = self.inputs[0].shape[0] if self.inputs[0].shape else None
        return first if isinstance(first, int) and first > 0 else None

    def run(self, feeds, output_names=None):
        raise NotImplementedError

    def close(self):
        pass
