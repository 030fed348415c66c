"""Recognizer: plate crops in, plate reads out (preprocess -> backend -> greedy CTC decode -> plate format)."""
import logging
import time

import numpy as np

from edge.recognize.backends import create_backend
from edge.recognize.decode import at_edge, decode, decode_batch
from edge.recognize.model import ModelError, load_model_info
from edge.recognize.plate_format import PlateFormat, PlateFormatError
from edge.recognize.preprocess import BatchBuffer

log = logging.getLogger("edge.recognize")


def plate_format_for(info, pattern=None):
    """The model's plate format: `pattern` when given ('' = none), else its manifest entry's plate_format.
    A pattern the model's characters list cannot spell is a ModelError naming both."""
    if pattern is None:
        pattern = (info.entry or {}).get("plate_format") or ""
    if not pattern:
        return None
    try:
        return PlateFormat(pattern, info.characters)
    except PlateFormatError as exc:
        raise ModelError("%s (model %s, characters %s)" % (exc, info.path, info.characters_path))


class Recognizer:
    def __init__(self, model_info, backend, plate_format=None):
        self.model = model_info
        self.backend = backend
        self.plate_format = plate_format
        self.invalid_ids = 0  # ids beyond the characters list: a mismatched list, counted for health
        self.format_refits = 0  # reads re-decoded to fit the plate format
        self.format_misses = 0  # reads that do not fit it, kept: no class_probs output, or no path fits
        self.last_latency_s = 0.0
        self._inputs = BatchBuffer()  # reused from batch to batch: no new float array per read
        if plate_format is not None and not backend.has_class_probs:
            log.warning("model %s has no class_probs output: reads that do not fit the plate format %r are "
                        "kept as greedy decoding gave them", model_info.path, plate_format.pattern)

    @classmethod
    def from_config(cls, model_config, recognizer_config):
        info = load_model_info(model_config.path, model_config.characters, model_config.name, model_config.version)
        plate_format = plate_format_for(info, model_config.plate_format)
        return cls(info, create_backend(recognizer_config.backend, info, recognizer_config), plate_format)

    def read(self, crops):
        """RGB uint8 crops -> list of decode.Read, in order."""
        if not crops:
            return []
        start = time.monotonic()
        ids, probs, class_probs = self.backend.infer(self._inputs.fill(crops))
        reads = decode_batch(ids, probs, self.model.characters)
        edges = at_edge(ids, class_probs, len(self.model.characters))
        reads = [r._replace(at_edge=bool(e)) for r, e in zip(reads, edges)]
        if self.plate_format is not None:
            reads = [self._hold_to_format(read, class_probs, i) for i, read in enumerate(reads)]
        self.last_latency_s = time.monotonic() - start
        self.invalid_ids += sum(r.invalid_ids for r in reads)
        return reads

    def _hold_to_format(self, read, class_probs, index):
        if self.plate_format.matches(read.text):
            return read._replace(format_match=True)
        if class_probs is not None:
            path = self.plate_format.best_path(class_probs[index])
            if path is not None:
                self.format_refits += 1
                refit = decode(path, class_probs[index][np.arange(len(path)), path], self.model.characters)
                return refit._replace(format_match=True, at_edge=read.at_edge)
        self.format_misses += 1
        return read._replace(format_match=False)

    def close(self):
        self.backend.close()
