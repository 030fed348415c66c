"""Detector: frames in, plate boxes out (frame pixels). The model runs through the shared backend layer
(edge.infer: ONNX Runtime, or TensorRT where the profile says so), its contract recognised at load
(edge.detect.contracts) and checked by a probe inference, so a wrong file fails at start, not at a car."""
import logging
import os
import time

import numpy as np

from edge.detect import contracts
from edge.infer import ModelError, create_session

log = logging.getLogger("edge.detect")


class DetectorError(ModelError):
    """A detector file that cannot be used: the message names the file and the problem."""


class Detector:
    def __init__(self, path, session, threshold=0.3, nms_iou=0.3, name=None, version=None, sha256=None):
        self.path = path
        self.session = session
        self.threshold = threshold
        self.nms_iou = nms_iou
        self.name = name or os.path.splitext(os.path.basename(path))[0]
        self.version = version
        self.sha256 = sha256
        self.last_latency_s = 0.0
        try:
            self.contract = contracts.recognise(session.inputs, session.outputs)
        except contracts.ContractError as exc:
            raise DetectorError("%s: %s" % (path, exc))
        # a YOLO end-to-end graph takes one image a run (its NMS rows carry a batch index, but the exports
        # people use fix N at 1); DetectNet_v2 takes what the session's profile allows
        self.max_batch = 1 if self.contract.kind == contracts.YOLO_E2E else session.max_batch
        self._probe()

    @classmethod
    def load(cls, path, backend="onnxruntime", options=None, threshold=0.3, nms_iou=0.3, name=None, version=None):
        from edge.recognize.model import manifest_entry, sha256_file

        if not os.path.isfile(path):
            raise DetectorError("%s: no such detector model file" % path)
        try:
            session = create_session(backend, path, options)
        except ModelError as exc:
            raise DetectorError(str(exc))
        except Exception as exc:  # ONNX Runtime's own parse errors: a truncated or non-ONNX file
            raise DetectorError("%s: not a loadable ONNX model: %s" % (path, str(exc).splitlines()[0]))
        sha256 = sha256_file(path)
        entry, _ = manifest_entry(path, "detectors")
        if entry is not None:  # a shipped detector: its name and version, and the file must be the one listed
            if entry.get("sha256") and entry["sha256"] != sha256:
                session.close()
                raise DetectorError("%s: sha256 %s differs from its models/manifest.yaml entry (%s): a damaged or "
                                    "replaced file" % (path, sha256[:12], entry["sha256"][:12]))
            name, version = name or entry.get("name"), version or str(entry.get("version", "")) or None
        try:
            return cls(path, session, threshold, nms_iou, name, version, sha256)
        except Exception:
            session.close()
            raise

    @property
    def kind(self):
        return self.contract.kind

    @property
    def input_size(self):
        return self.contract.input_w, self.contract.input_h

    def _probe(self):
        c = self.contract
        probe = np.zeros((1, 3, c.input_h, c.input_w), np.float32)
        try:
            outs = self.session.run({c.input_name: probe}, list(c.outputs))
        except Exception as exc:
            raise DetectorError("%s: a probe inference failed: %s" % (self.path, str(exc).splitlines()[0]))
        if c.kind == contracts.DETECTNET_V2:
            cov, bbox = (np.asarray(o) for o in outs)
            if cov.ndim != 4 or bbox.ndim != 4 or cov.shape[1] != 1 or bbox.shape[1] != 4:
                raise DetectorError("%s: probe outputs have shapes %s and %s; DetectNet_v2 gives [N,1,h,w] and "
                                    "[N,4,h,w]" % (self.path, list(cov.shape), list(bbox.shape)))

    def _prepare(self, frame):
        w, h = self.input_size
        if self.contract.kind == contracts.YOLO_E2E:
            return contracts.letterbox(frame, w, h)
        return contracts.stretch(frame, w, h)

    def detect(self, frames):
        """RGB uint8 frames (any sizes) -> one [K,5] array (x1, y1, x2, y2, score; frame pixels) per frame."""
        if not frames:
            return []
        start = time.monotonic()
        prepared = [self._prepare(f) for f in frames]
        batch = np.stack([p[0] for p in prepared]).astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
        step = self.max_batch or len(frames)
        results = []
        for first in range(0, len(frames), step):
            results.extend(self._run(np.ascontiguousarray(batch[first:first + step])))
        out = [contracts.to_frame(boxes, transform, f.shape[1], f.shape[0])
               for boxes, (_, transform), f in zip(results, prepared, frames)]
        self.last_latency_s = time.monotonic() - start
        return out

    def _run(self, batch):
        c = self.contract
        n = batch.shape[0]
        if self.session.fixed_batch and self.max_batch and n < self.max_batch:  # a fixed-batch engine: pad
            batch = np.concatenate([batch, np.zeros((self.max_batch - n,) + batch.shape[1:], batch.dtype)])
        outs = self.session.run({c.input_name: batch}, list(c.outputs))
        if c.kind == contracts.YOLO_E2E:
            return [contracts.decode_yolo_e2e(outs[0], i, self.threshold) for i in range(n)]
        cov, bbox = np.asarray(outs[0]), np.asarray(outs[1])
        return [contracts.decode_detectnet(cov[i], bbox[i], c.input_h, c.input_w, self.threshold, self.nms_iou)
                for i in range(n)]

    def describe(self):
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "contract": self.kind,
                "input": [self.contract.input_h, self.contract.input_w], "backend": self.session.name}

    def close(self):
        self.session.close()
