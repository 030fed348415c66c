"""Where detected plates count, per camera: `zones` (polygons; a plate counts when its box centre is inside
one, or anywhere when none is set), `masks` (polygons where plates never count: a parked row, a billboard)
and `min_plate_px` (narrower boxes are too small to read). Boxes that pass become 96x48 crops: the box grown
by a margin, cut and stretched, as TAO's LPRNet crops are."""
import logging

import cv2
import numpy as np

from edge.crop.roi import CROP_H, CROP_W, PlateCrop

log = logging.getLogger("edge.detect")

DETECT_ROI = "plate"
MIN_BOX_PX = 4  # a box narrower or lower than this has nothing to read, whatever min_plate_px says  # the roi_id of crops cut from detected boxes (events: "roi": "plate")


class PlateFilter:
    """Keeps the boxes of one camera that count, and cuts their crops."""

    def __init__(self, camera_id, zones=(), masks=(), min_plate_px=0, margin=0.05):
        self.camera_id = camera_id
        self.zones = [(z.id, np.array(z.points, np.float32)) for z in zones]
        self.masks = [np.array(m, np.float32) for m in masks]
        self.min_plate_px = min_plate_px
        self.margin = margin
        self.rejected = {"small": 0, "outside_zone": 0, "masked": 0}
        self._checked_size = None

    def _check_bounds(self, width, height):
        for name, polygon in [("zones " + zid, p) for zid, p in self.zones] + [("masks", m) for m in self.masks]:
            if polygon[:, 0].max() <= 0 or polygon[:, 1].max() <= 0 or polygon[:, 0].min() >= width \
                    or polygon[:, 1].min() >= height:
                log.error("camera %s: %s lies outside the %dx%d frame: no plate can count there", self.camera_id,
                          name, width, height)
            elif polygon[:, 0].min() < 0 or polygon[:, 1].min() < 0 or polygon[:, 0].max() > width \
                    or polygon[:, 1].max() > height:
                log.warning("camera %s: %s reaches outside the %dx%d frame", self.camera_id, name, width, height)

    @staticmethod
    def _inside(polygon, x, y):
        return cv2.pointPolygonTest(polygon, (float(x), float(y)), False) >= 0

    def zone_of(self, box):
        """The zone a box counts in, '' without zones, or None where it does not count (counted by reason)."""
        x1, y1, x2, y2 = box[:4]
        if x2 - x1 < max(self.min_plate_px, MIN_BOX_PX) or y2 - y1 < MIN_BOX_PX:
            self.rejected["small"] += 1
            return None
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        if any(self._inside(m, cx, cy) for m in self.masks):
            self.rejected["masked"] += 1
            return None
        if not self.zones:
            return ""
        for zone_id, polygon in self.zones:
            if self._inside(polygon, cx, cy):
                return zone_id
        self.rejected["outside_zone"] += 1
        return None

    def crops(self, frame, boxes):
        """PlateCrops (roi_id 'plate', box [x, y, w, h] in frame pixels, det_score, zone) of the boxes that count."""
        size = frame.shape[1], frame.shape[0]
        if size != self._checked_size:
            self._checked_size = size
            self._check_bounds(*size)
        out = []
        for box in boxes:
            zone = self.zone_of(box)
            if zone is not None:
                out.append(crop_box(frame, box, self.margin, zone))
        return out


def grow(box, margin, width, height):
    """Box (x1, y1, x2, y2) grown by `margin` of its width and height on each side, clipped to the frame,
    as integer pixel bounds."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return (max(0, int(np.floor(x1 - dx))), max(0, int(np.floor(y1 - dy))),
            min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy))))


def crop_box(frame, box, margin=0.05, zone=""):
    """One PlateCrop from a detected box: grown, cut, stretched to 96x48 (the recognizer's input)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = grow(box, margin, w, h)
    x1, y1 = min(x1, w - 1), min(y1, h - 1)  # at least one pixel inside the frame to cut
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    image = cv2.resize(frame[y1:y2, x1:x2], (CROP_W, CROP_H),
                       interpolation=cv2.INTER_AREA if x2 - x1 > CROP_W else cv2.INTER_LINEAR)
    bx1, by1, bx2, by2 = (int(round(float(v))) for v in box[:4])
    score = float(box[4]) if len(box) > 4 else 1.0
    return PlateCrop(DETECT_ROI, image, [bx1, by1, bx2 - bx1, by2 - by1], score, zone)
