"""The detector on still images, from the command line:

    lpr-edge read PATH...              detect and read the plates in images or folders (as OpenALPR's `alpr`)
    lpr-edge evaluate-detector         precision, recall and AP at IoU 0.5 on YOLO-layout scenes, and speed

Both take the frame exactly as the daemon does (the same Detector, PlateFilter crops and Recognizer)."""
import io
import logging
import os
import time

import cv2
import numpy as np

from edge.detect import contracts

log = logging.getLogger("edge.detect")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageError(ValueError):
    pass


def image_paths(paths):
    """Files as given, folders walked (sorted); a path that is neither is an ImageError naming it."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                out.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(path):
            out.append(path)
        else:
            raise ImageError("%s: no such file or folder" % path)
    return out


def load_rgb(path):
    """An image file as RGB uint8, or ImageError naming the file (empty, not an image, damaged)."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise ImageError("%s: cannot read: %s" % (path, exc.strerror or exc))
    if size == 0:
        raise ImageError("%s: empty file" % path)
    try:
        data = np.fromfile(path, np.uint8)
    except (IOError, OSError) as exc:
        raise ImageError("%s: cannot read: %s" % (path, exc.strerror or exc))
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError("%s: not a decodable image (%d bytes)" % (path, size))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_plates(detector, recognizer, plate_filter, image):
    """[{plate, score, char_scores, box [x, y, w, h], det_score}] for one RGB image, best detection first."""
    boxes = detector.detect([image])[0]
    crops = plate_filter.crops(image, boxes)
    reads = recognizer.read([c.image for c in crops])
    plates = [{"plate": r.text, "score": round(float(r.score), 4), "char_scores": [round(float(s), 4) for s in
                                                                                   r.char_scores],
               "box": [int(v) for v in c.box], "det_score": round(float(c.det_score), 4)}
              for c, r in zip(crops, reads)]
    return sorted(plates, key=lambda p: -p["det_score"])


# --- evaluate-detector ---------------------------------------------------------------------------------------
def yolo_scenes(root):
    """(image path, boxes [K,4] x1,y1,x2,y2 in pixels) of a YOLO-layout folder: <d>/images/*.jpg with
    <d>/labels/*.txt ('class cx cy w h' normalised), searched below `root` (the shared set has one <d> per source)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if os.path.basename(folder) != "images":
            continue
        labels = os.path.join(os.path.dirname(folder), "labels")
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append((os.path.join(folder, name), os.path.join(labels, os.path.splitext(name)[0] + ".txt")))
    if not found:
        raise ImageError("%s: no YOLO-layout scenes (expected <folder>/images/*.jpg beside <folder>/labels/*.txt)"
                         % root)
    return found


def read_yolo_labels(path, width, height):
    boxes = []
    if not os.path.isfile(path):
        return np.zeros((0, 4), np.float32)  # an image without a label file has no plate
    with io.open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                _, cx, cy, w, h = (float(p) for p in parts[:5])
            except ValueError:
                raise ImageError("%s line %d: not 'class cx cy w h': %r" % (path, number, line.strip()))
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
    return np.array(boxes, np.float32).reshape(-1, 4)


def average_precision(scored, n_truth):
    """VOC-style AP (all-point interpolation) from [(score, is_true_positive)] over all images."""
    if n_truth == 0:
        return 0.0
    scored = sorted(scored, key=lambda s: -s[0])
    tp = np.cumsum([1.0 if hit else 0.0 for _, hit in scored])
    fp = np.cumsum([0.0 if hit else 1.0 for _, hit in scored])
    recall = tp / n_truth if len(scored) else np.zeros(0)
    precision = tp / np.maximum(tp + fp, 1e-9) if len(scored) else np.zeros(0)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def match(found, truth, iou_threshold=0.5):
    """Greedy matching, best score first: [(score, hit)] per found box, and how many truths were found."""
    used = set()
    out = []
    for box in sorted(found.tolist(), key=lambda b: -b[4]):
        best, best_iou = None, iou_threshold
        if len(truth):
            overlaps = contracts.iou(np.array(box[:4], np.float32), truth)
            for j in np.argsort(-overlaps):  # the most overlapping truth not yet taken
                if overlaps[j] < best_iou:
                    break
                if j not in used:
                    best = int(j)
                    break
        if best is not None:
            used.add(best)
        out.append((box[4], best is not None))
    return out, len(used)


def evaluate_detector(detector, scenes, min_box_px=0.0, only=None, limit=None, batch=1):
    """Precision, recall and AP at IoU 0.5 over `scenes` [(image, label)], and the detector's speed.
    Truth boxes narrower than `min_box_px` are left out of both sides (a detector is not asked for them)."""
    if only is not None:
        scenes = [s for s in scenes if _scene_id(s[0]) in only]
    if limit:
        scenes = scenes[:limit]
    scored, n_truth, n_found_truth, n_kept = [], 0, 0, 0
    infer_s = 0.0
    skipped = []
    for first in range(0, len(scenes), batch):
        chunk, images = [], []
        for image_path, label_path in scenes[first:first + batch]:
            try:
                images.append(load_rgb(image_path))
                chunk.append(label_path)
            except ImageError as exc:
                skipped.append(str(exc))
        if not images:
            continue
        start = time.monotonic()
        found = detector.detect(images)
        infer_s += time.monotonic() - start
        for image, label_path, boxes in zip(images, chunk, found):
            truth = read_yolo_labels(label_path, image.shape[1], image.shape[0])
            if min_box_px:
                truth = truth[(truth[:, 2] - truth[:, 0]) >= min_box_px]
                boxes = boxes[(boxes[:, 2] - boxes[:, 0]) >= min_box_px]
            hits, found_truth = match(boxes, truth)
            scored.extend(hits)
            n_truth += len(truth)
            n_found_truth += found_truth
            n_kept += len(boxes)
    images = len(scenes) - len(skipped)
    true_positives = sum(1 for _, hit in scored if hit)
    return {
        "model": detector.name, "contract": detector.kind, "images": images, "plates": n_truth,
        "detections": n_kept, "threshold": detector.threshold, "min_box_px": min_box_px,
        "recall_iou50": round(n_found_truth / float(n_truth), 4) if n_truth else None,
        "precision_iou50": round(true_positives / float(n_kept), 4) if n_kept else None,
        "ap_iou50": round(average_precision(scored, n_truth), 4),
        "frames_per_s": round(images / infer_s, 2) if infer_s else None, "batch": batch,
        "skipped": skipped,
    }


def _scene_id(image_path):
    """<source>/<id> of a scene in the shared layout (<source>/images/<id>.jpg), as the split lists name them."""
    folder = os.path.dirname(os.path.dirname(image_path))
    return "%s/%s" % (os.path.basename(folder), os.path.splitext(os.path.basename(image_path))[0])
