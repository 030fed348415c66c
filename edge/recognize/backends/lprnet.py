"""LPRNet's contract on top of any edge.infer session: one float32 input [N, 3 (or 1), 48, 96], the outputs
tf_op_layer_ArgMax and tf_op_layer_Max [N, T] (and the optional class_probs [N, T, n_chars + 1]); a probe
inference checks the class ids fit the characters list. Fixed-batch models run in chunks."""
import logging

import numpy as np

from edge.recognize.backends.base import (INPUT_NAME, OUTPUT_CLASS_PROBS, OUTPUT_IDS, OUTPUT_PROBS, Backend,
                                         check_class_probs, check_probe)
from edge.recognize.model import ModelError

log = logging.getLogger("edge.recognize")


class LprnetBackend(Backend):
    def __init__(self, session, model_info):
        self.session = session
        self.name = session.name
        self.providers = session.providers
        self.fallback_reason = session.fallback_reason
        self._check_contract(model_info)

    def _check_contract(self, info):
        path = info.path
        inputs = self.session.inputs
        if len(inputs) != 1:
            raise ModelError("%s: has %d inputs (%s); LPRNet has one, %s [N,3,48,96]"
                             % (path, len(inputs), ", ".join(i.name for i in inputs), INPUT_NAME))
        inp = inputs[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (1, 3) or shape[2] != 48 or shape[3] != 96:
            raise ModelError("%s: input %s has shape %s; LPRNet's is [N,3,48,96] (or [N,1,48,96])"
                             % (path, inp.name, shape))
        if inp.dtype != "float32":
            raise ModelError("%s: input %s is %s; LPRNet takes float32" % (path, inp.name, inp.dtype))
        if inp.name != INPUT_NAME:
            log.warning("model %s: input is named %r, not NVIDIA's %r; using it anyway", path, inp.name, INPUT_NAME)
        self.input_name = inp.name
        self.input_channels = shape[1]
        self.max_batch = self.session.max_batch
        names = [o.name for o in self.session.outputs]
        missing = [n for n in (OUTPUT_IDS, OUTPUT_PROBS) if n not in names]
        if missing:
            raise ModelError("%s: outputs are %s; LPRNet's deployable contract needs %s and %s"
                             % (path, names, OUTPUT_IDS, OUTPUT_PROBS))
        self.outputs = [OUTPUT_IDS, OUTPUT_PROBS] + ([OUTPUT_CLASS_PROBS] if OUTPUT_CLASS_PROBS in names else [])
        probe = np.zeros((self.max_batch if self.session.fixed_batch else 1, self.input_channels, 48, 96), np.float32)
        try:
            ids, probs, class_probs = self._run(probe)
        except Exception as exc:
            raise ModelError("%s: a probe inference failed: %s" % (path, str(exc).splitlines()[0]))
        check_probe(path, ids, probs, len(info.characters), probe.shape[0])
        check_class_probs(path, class_probs, ids, len(info.characters))
        self.has_class_probs = class_probs is not None
        self.timesteps = ids.shape[1]

    def _run(self, batch):
        out = self.session.run({self.input_name: batch}, self.outputs)
        class_probs = np.asarray(out[2], np.float32) if len(out) > 2 else None
        return np.asarray(out[0]), np.asarray(out[1]), class_probs

    def infer(self, batch):
        if self.input_channels == 1 and batch.shape[1] == 3:
            batch = batch.mean(axis=1, keepdims=True)
        batch = np.ascontiguousarray(batch, np.float32)
        if self.max_batch is None or (batch.shape[0] <= self.max_batch and not self.session.fixed_batch):
            return self._run(batch)
        # more than one run takes (a TensorRT profile's max), or a model exported with a fixed batch: run in
        # chunks of that size, padding the last where the batch is fixed
        parts = []
        for start in range(0, batch.shape[0], self.max_batch):
            chunk = batch[start:start + self.max_batch]
            n = chunk.shape[0]
            if n < self.max_batch and self.session.fixed_batch:
                chunk = np.concatenate([chunk, np.zeros((self.max_batch - n,) + chunk.shape[1:], chunk.dtype)])
            parts.append([None if out is None else out[:n] for out in self._run(chunk)])
        return tuple(None if part[0] is None else np.concatenate(part) for part in zip(*parts))

    def close(self):
        self.session.close()
