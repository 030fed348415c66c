"""What the camera sees, for an installer at a gate with no screen: a frame with the ROIs (and, with a
detector, zones, masks and boxes) drawn over it, a labelled pixel grid to read coordinates off, and the last
reads; served as /snapshot.jpg?camera=ID and written by `lpr-edge snapshot`."""
import cv2
import numpy as np

GRID_STEP = 50  # px between grid lines; labels every 2 steps
ROI_COLOUR = (0, 255, 0)  # BGR
GRID_COLOUR = (200, 200, 200)
TEXT_COLOUR = (0, 255, 255)
ZONE_COLOUR = (255, 160, 0)
MASK_COLOUR = (0, 0, 255)
BOX_COLOUR = (255, 0, 255)


def annotate(frame_rgb, camera, reads=(), boxes=()):
    """A BGR copy of the frame with grid, ROIs and the latest read per ROI (`reads`: dicts with roi, text,
    score, kept) drawn on it, and for mode detect its zones, masks and the last detected `boxes` ([x1, y1,
    x2, y2, score] rows, with the latest read); the frame keeps its size so coordinates read off it are the
    config's."""
    image = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    _grid(image)
    latest = {}
    for read in reads:
        latest[read.get("roi")] = read
    for roi in getattr(camera, "rois", []) or []:
        pts = np.array(roi.points, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(image, [pts], True, ROI_COLOUR, 2, cv2.LINE_AA)
        x, y = int(min(p[0] for p in roi.points)), int(min(p[1] for p in roi.points))
        label = roi.id
        read = latest.get(roi.id)
        if read:
            label += ": %s %.2f%s" % (read.get("text") or "-", read.get("score", 0.0),
                                      "" if read.get("kept") else " (%s)" % read.get("reason"))
        _label(image, label, x, max(12, y - 6), ROI_COLOUR)
    _detect_overlay(image, camera, latest.get("plate"), boxes)
    return image


def _detect_overlay(image, camera, read, boxes):
    for zone in getattr(camera, "zones", []) or []:
        pts = np.array(zone.points, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(image, [pts], True, ZONE_COLOUR, 2, cv2.LINE_AA)
        _label(image, "zone " + zone.id, int(pts[:, 0, 0].min()) + 4, int(pts[:, 0, 1].min()) + 16, ZONE_COLOUR)
    for mask in getattr(camera, "masks", []) or []:
        pts = np.array(mask, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(image, [pts], True, MASK_COLOUR, 2, cv2.LINE_AA)
        _label(image, "mask", int(pts[:, 0, 0].min()) + 4, int(pts[:, 0, 1].min()) + 16, MASK_COLOUR)
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
        cv2.rectangle(image, (x1, y1), (x2, y2), BOX_COLOUR, 2)
        label = "%.2f" % float(box[4])
        if i == 0 and read:
            label = "%s %.2f%s" % (read.get("text") or "-", read.get("score", 0.0),
                                   "" if read.get("kept") else " (%s)" % read.get("reason"))
        _label(image, label, x1, max(12, y1 - 6), BOX_COLOUR)


def _grid(image):
    h, w = image.shape[:2]
    overlay = image.copy()
    for x in range(0, w, GRID_STEP):
        cv2.line(overlay, (x, 0), (x, h - 1), GRID_COLOUR, 1)
    for y in range(0, h, GRID_STEP):
        cv2.line(overlay, (0, y), (w - 1, y), GRID_COLOUR, 1)
    cv2.addWeighted(overlay, 0.35, image, 0.65, 0, image)
    for x in range(0, w, 2 * GRID_STEP):
        _label(image, str(x), x + 2, 12, TEXT_COLOUR, 0.4)
    for y in range(2 * GRID_STEP, h, 2 * GRID_STEP):
        _label(image, str(y), 2, y - 3, TEXT_COLOUR, 0.4)


def _label(image, text, x, y, colour, scale=0.5):
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def jpeg(image_bgr, quality=90):
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
