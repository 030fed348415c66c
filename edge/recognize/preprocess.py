"""Plate crop -> LPRNet input: stretch to 96x48 (no aspect kept, bilinear, as TAO), RGB, scale 1/255, NCHW."""
import threading

import cv2
import numpy as np

INPUT_SHAPE = (3, 48, 96)


def to_input(crop_rgb, height=48, width=96):
    """One RGB uint8 crop of any size -> float32 [3, H, W] in [0, 1]."""
    if crop_rgb.shape[0] != height or crop_rgb.shape[1] != width:
        crop_rgb = cv2.resize(crop_rgb, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop_rgb.transpose(2, 0, 1), dtype=np.float32) * (1.0 / 255.0)


def to_batch(crops, height=48, width=96):
    """A list of RGB uint8 crops -> float32 [N, 3, H, W]."""
    batch = np.empty((len(crops), 3, height, width), dtype=np.float32)
    for i, crop in enumerate(crops):
        batch[i] = to_input(crop, height, width)
    return batch


class BatchBuffer:
    """to_batch without a new array per call: one resize per crop, then one scaled, transposing copy into a
    float32 batch reused from call to call (grown when a larger batch comes). Each thread gets its own
    buffer: the returned array is valid until that thread's next fill."""

    def __init__(self, height=48, width=96):
        self.height, self.width = height, width
        self._local = threading.local()

    def fill(self, crops):
        n = len(crops)
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.shape[0] < n:
            buf = np.empty((max(n, 2 * (0 if buf is None else buf.shape[0])), 3, self.height, self.width),
                           dtype=np.float32)
            self._local.buf = buf
        out = buf[:n]
        scale = np.float32(1.0 / 255.0)
        for i, crop in enumerate(crops):
            if crop.shape[0] != self.height or crop.shape[1] != self.width:
                crop = cv2.resize(crop, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
            np.multiply(crop.transpose(2, 0, 1), scale, out=out[i], casting="unsafe")
        return out
