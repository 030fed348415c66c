"""Plate crop -> LPRNet input: stretch to 96x48 (no aspect kept, bilinear, as TAO), RGB, scale 1/255, NCHW."""
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
