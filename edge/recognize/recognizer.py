"""Recognizer: plate crops in, plate reads out (preprocess -> backend -> greedy CTC decode)."""
import time

from edge.recognize.backends import create_backend
from edge.recognize.decode import decode_batch
from edge.recognize.model import load_model_info
from edge.recognize.preprocess import to_batch


class Recognizer:
    def __init__(self, model_info, backend):
        self.model = model_info
        self.backend = backend
        self.invalid_ids = 0  # ids beyond the characters list: a mismatched list, counted for health
        self.last_latency_s = 0.0

    @classmethod
    def from_config(cls, model_config, recognizer_config):
        info = load_model_info(model_config.path, model_config.characters, model_config.name, model_config.version)
        return cls(info, create_backend(recognizer_config.backend, info, recognizer_config))

    def read(self, crops):
        """RGB uint8 crops -> list of decode.Read, in order."""
        if not crops:
            return []
        start = time.monotonic()
        ids, probs = self.backend.infer(to_batch(crops))
        reads = decode_batch(ids, probs, self.model.characters)
        self.last_latency_s = time.monotonic() - start
        self.invalid_ids += sum(r.invalid_ids for r in reads)
        return reads

    def close(self):
        self.backend.close()
