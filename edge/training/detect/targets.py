"""DetectNet_v2 training targets and the detector's metrics.

Coverage: a cell is positive when its centre falls in the box shrunk to `shrink` of its width and height
around the box centre (DetectNet_v2's cov_radius), and the cell holding the box centre always is (a small
plate still has one); cells of the box outside the shrunk part are left out of the loss (don't care), as
are boxes too small to count and boxes mostly cut off by the crop. Bbox: every positive cell regresses its
box encoded exactly as edge.detect.contracts.encode_detectnet, so decode_detectnet gives the box back."""
import numpy as np

from edge.detect.contracts import decode_detectnet, encode_detectnet, iou

STRIDE = 16


def make_targets(boxes, ignore, out_h, out_w, shrink=0.5, stride=STRIDE):
    """boxes [K,4] (positives) and ignore [J,4] (don't care) in input pixels of an out_w x out_h image ->
    (cov [1,Gh,Gw], weight [1,Gh,Gw], bbox [4,Gh,Gw]) float32."""
    gh, gw = out_h // stride, out_w // stride
    cov = np.zeros((1, gh, gw), np.float32)
    weight = np.ones((1, gh, gw), np.float32)
    bbox = np.zeros((4, gh, gw), np.float32)
    owner = np.full((gh, gw), np.inf, np.float32)  # area of the box that owns a cell: the smallest wins
    xs = np.arange(gw, dtype=np.float32) * stride + stride / 2.0
    ys = np.arange(gh, dtype=np.float32) * stride + stride / 2.0

    def cells(b, frac):
        cx, cy = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0
        hw, hh = (b[2] - b[0]) * frac / 2.0, (b[3] - b[1]) * frac / 2.0
        inside = (np.abs(ys - cy)[:, None] <= hh) & (np.abs(xs - cx)[None, :] <= hw)
        r, c = int(cy // stride), int(cx // stride)
        if 0 <= r < gh and 0 <= c < gw:
            inside[r, c] = True
        return inside

    for b in np.asarray(ignore, np.float32).reshape(-1, 4):
        weight[0][cells(b, 1.0)] = 0.0
    for b in np.asarray(boxes, np.float32).reshape(-1, 4):
        weight[0][cells(b, 1.0) & (cov[0] == 0)] = 0.0
    for b in sorted(np.asarray(boxes, np.float32).reshape(-1, 4), key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
        pos = cells(b, shrink)
        area = (b[2] - b[0]) * (b[3] - b[1])
        pos &= owner >= area
        if not pos.any():
            continue
        owner[pos] = area
        cov[0][pos] = 1.0
        weight[0][pos] = 1.0
        enc = encode_detectnet(b, gh, gw, out_h, out_w)
        bbox[:, pos] = enc[:, pos]
    return cov, weight, bbox


def split_boxes(boxes, visible, min_w, min_h, min_visible=0.6):
    """Boxes that count (large enough, mostly in view) and the rest (don't care)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (w >= min_w) & (h >= min_h) & (np.asarray(visible) >= min_visible)
    gone = (w <= 0) | (h <= 0)
    return boxes[keep], boxes[~keep & ~gone]


def detections(cov, bbox, net_h, net_w, threshold, nms_iou):
    """Batch outputs -> per-image boxes [K,5] through the runtime's decoder."""
    return [decode_detectnet(cov[i], bbox[i], net_h, net_w, threshold, nms_iou) for i in range(len(cov))]


def match(dets, gts, ignores, iou_threshold=0.5):
    """Per detection (score, is_true_positive, is_ignored) for one image, greedy by score; and the number of
    ground-truth boxes that count."""
    dets = np.asarray(dets, np.float32).reshape(-1, 5)
    gts = np.asarray(gts, np.float32).reshape(-1, 4)
    ignores = np.asarray(ignores, np.float32).reshape(-1, 4)
    used = np.zeros(len(gts), bool)
    out = []
    for d in dets[np.argsort(-dets[:, 4], kind="stable")]:
        if len(gts):
            ious = iou(d[:4], gts)
            ious[used] = -1
            j = int(np.argmax(ious))
            if ious[j] >= iou_threshold:
                used[j] = True
                out.append((d[4], True, False))
                continue
        if len(ignores) and iou(d[:4], ignores).max() >= iou_threshold:
            out.append((d[4], False, True))
            continue
        out.append((d[4], False, False))
    return out, len(gts)


def metrics(per_image, threshold, iou_threshold=0.5):
    """per_image: [(dets [K,5], gts [G,4], ignores [J,4])] -> recall, precision (at `threshold`) and AP at
    the IoU threshold (all-point interpolated, VOC 2010+), over detections decoded at a lower threshold; and
    best_f1: the point of the curve with the best F1 (its score threshold, recall, precision), to pick one."""
    rows, n_gt = [], 0
    for dets, gts, ignores in per_image:
        m, n = match(dets, gts, ignores, iou_threshold)
        rows.extend(r for r in m if not r[2])
        n_gt += n
    rows.sort(key=lambda r: -r[0])
    scores = np.array([r[0] for r in rows], np.float32)
    tp = np.array([r[1] for r in rows], bool)
    at = scores >= threshold
    n_tp, n_det = int(tp[at].sum()), int(at.sum())
    recall = n_tp / float(n_gt) if n_gt else float("nan")
    precision = n_tp / float(n_det) if n_det else (1.0 if n_gt == 0 else 0.0)
    ap, best = 0.0, {"f1": 0.0, "threshold": None, "recall": 0.0, "precision": 0.0}
    if n_gt and len(rows):
        ctp = np.cumsum(tp)
        rec = ctp / float(n_gt)
        prec = ctp / np.arange(1, len(rows) + 1, dtype=np.float64)
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = np.concatenate([[1.0], prec, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
        ap = float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-9)
        k = int(np.argmax(f1))
        best = {"f1": round(float(f1[k]), 4), "threshold": round(float(scores[k]), 4),
                "recall": round(float(rec[k]), 4), "precision": round(float(prec[k]), 4)}
    return {"recall": recall, "precision": precision, "ap50": ap, "gt_boxes": n_gt, "detections": n_det,
            "true_positives": n_tp, "best_f1": best}
