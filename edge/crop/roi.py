"""Fixed regions of interest: each ROI is a quadrilateral (top-left, top-right, bottom-right,
bottom-left) rectified by one perspective warp straight to LPRNet's 96x48 input."""
import logging
from collections import namedtuple

import cv2
import numpy as np

log = logging.getLogger("edge.crop")

CROP_W, CROP_H = 96, 48

PlateCrop = namedtuple("PlateCrop", "roi_id image box det_score zone")
PlateCrop.__new__.__defaults__ = (None, "")  # fixed ROIs have no detector score and no zone
"""roi_id: ROI name ('plate' for detected boxes); image: RGB uint8 48x96; box: [x, y, w, h] of the region in
the frame; det_score: the detector's confidence (None for fixed ROIs); zone: the zone it counted in."""


class RoiCropper:
    def __init__(self, camera_id, rois):
        self.camera_id = camera_id
        dst = np.array([[0, 0], [CROP_W, 0], [CROP_W, CROP_H], [0, CROP_H]], dtype=np.float32)
        self.rois = []
        for roi in rois:
            src = np.array(roi.points, dtype=np.float32)
            matrix = cv2.getPerspectiveTransform(src, dst)
            x0, y0 = src.min(axis=0)
            x1, y1 = src.max(axis=0)
            box = [int(x0), int(y0), int(round(x1 - x0)), int(round(y1 - y0))]
            self.rois.append((roi.id, matrix, box, src))
        self._checked_size = None

    def _check_bounds(self, width, height):
        for roi_id, _, _, src in self.rois:
            if src[:, 0].min() < 0 or src[:, 1].min() < 0 or src[:, 0].max() > width or src[:, 1].max() > height:
                log.warning("camera %s: ROI %s reaches outside the %dx%d frame; the outside reads as black",
                            self.camera_id, roi_id, width, height)

    def crops(self, frame):
        size = frame.shape[1], frame.shape[0]
        if size != self._checked_size:
            self._checked_size = size
            self._check_bounds(*size)
        return [PlateCrop(roi_id, cv2.warpPerspective(frame, matrix, (CROP_W, CROP_H), flags=cv2.INTER_LINEAR), box)
                for roi_id, matrix, box, _ in self.rois]


class FrameCropper:
    """Mode 'crop': the whole frame is one plate crop."""

    ROI_ID = "frame"

    def crops(self, frame):
        h, w = frame.shape[:2]
        return [PlateCrop(self.ROI_ID, cv2.resize(frame, (CROP_W, CROP_H), interpolation=cv2.INTER_LINEAR),
                          [0, 0, w, h])]


def cropper_for(camera):
    """The camera's cropper; None in mode 'detect' (edge/detect cuts crops from detected boxes)."""
    if camera.mode == "detect":
        return None
    if camera.mode == "crop":
        return FrameCropper()
    return RoiCropper(camera.id, camera.rois)
