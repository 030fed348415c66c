"""The detector contracts lpr-edge runs, each recognised from the model's inputs and outputs and decoded here
(one place), to boxes in the model's input pixels:

    detectnet_v2   NVIDIA's LPDNet contract, kept by lpr-edge's own detector: input input_1:0 [N,3,H,W] RGB
                   scaled 1/255 (the frame stretched to W x H); outputs output_cov/Sigmoid:0 [N,1,H/16,W/16]
                   (plate coverage per grid cell) and output_bbox/BiasAdd:0 [N,4,H/16,W/16] (x1,y1,x2,y2 per
                   cell, scale 35, offset 0.5). No NMS in the graph: threshold, then NMS here, as DeepStream
                   does with cluster-mode NMS (nvdsinfer DetectPostprocessor::parseBoundingBox).
    yolo_e2e       a YOLO ONNX with NMS inside (open-image-models, fast-alpr, Frigate): input [1,3,S,S] RGB
                   scaled 1/255, letterboxed with grey 114; output rows [K,7] = batch, x1, y1, x2, y2, class,
                   score, in input pixels.

A model that fits neither is refused at load, naming its inputs, outputs and the contracts.
"""
import math
from collections import namedtuple

import numpy as np

DETECTNET_V2 = "detectnet_v2"
YOLO_E2E = "yolo_e2e"

DETECTNET_INPUT = "input_1:0"
DETECTNET_COV = "output_cov/Sigmoid:0"
DETECTNET_BBOX = "output_bbox/BiasAdd:0"
BBOX_SCALE = 35.0  # TAO's objective_set bbox { scale: 35.0 offset: 0.5 }
BBOX_OFFSET = 0.5
LETTERBOX_GREY = 114

CONTRACTS_TEXT = ("detectnet_v2 (LPDNet: input [N,3,H,W], outputs output_cov/Sigmoid:0 [N,1,H/16,W/16] and "
                  "output_bbox/BiasAdd:0 [N,4,H/16,W/16]) or yolo_e2e (NMS inside: input [1,3,S,S], output "
                  "[K,7] rows batch,x1,y1,x2,y2,class,score)")

Contract = namedtuple("Contract", "kind input_name input_h input_w outputs")
"""kind: DETECTNET_V2 or YOLO_E2E; outputs: the output names to ask for, in decode order."""


class ContractError(ValueError):
    pass


def _describe(specs):
    return ", ".join("%s %s" % (s.name, list(s.shape) if s.shape is not None else "?") for s in specs)


def _fixed(dim):
    return dim if isinstance(dim, int) and dim > 0 else None


def recognise(inputs, outputs):
    """The Contract of a model with these TensorSpecs, or ContractError naming them and the contracts."""
    problem = None
    if len(inputs) == 1 and inputs[0].shape is not None and len(inputs[0].shape) == 4:
        inp = inputs[0]
        channels, h, w = (_fixed(d) for d in inp.shape[1:])
        if channels != 3 or h is None or w is None:
            problem = "input %s must be [N,3,H,W] with H and W fixed" % inp.name
        else:
            contract = _detectnet(inp, h, w, outputs) or _yolo_e2e(inp, h, w, outputs)
            if contract is not None:
                return contract
    raise ContractError("fits no detector contract%s: inputs %s; outputs %s; lpr-edge runs %s" % (
        " (%s)" % problem if problem else "", _describe(inputs), _describe(outputs), CONTRACTS_TEXT))


def _detectnet(inp, h, w, outputs):
    by_channels = {}
    for out in outputs:
        shape = list(out.shape or [])
        if len(shape) == 4 and _fixed(shape[1]) in (1, 4):
            by_channels.setdefault(shape[1], []).append(out)
    cov = _pick(by_channels.get(1, []), "output_cov")
    bbox = _pick(by_channels.get(4, []), "output_bbox")
    if cov is None or bbox is None or len(outputs) != 2:
        return None
    if list(cov.shape[2:]) != list(bbox.shape[2:]):
        return None
    return Contract(DETECTNET_V2, inp.name, h, w, (cov.name, bbox.name))


def _pick(candidates, prefix):
    named = [c for c in candidates if c.name.startswith(prefix)]
    if named:
        return named[0]
    return candidates[0] if len(candidates) == 1 else None


def _yolo_e2e(inp, h, w, outputs):
    if len(outputs) != 1:
        return None
    shape = list(outputs[0].shape or [])
    if len(shape) == 2 and _fixed(shape[1]) == 7:
        return Contract(YOLO_E2E, inp.name, h, w, (outputs[0].name,))
    return None


# --- preprocessing: frame (RGB uint8, any size) -> model input, and the way back --------------------------
def stretch(frame, w, h):
    """DetectNet_v2's input: the frame resized to the network (aspect not kept, as DeepStream does)."""
    import cv2

    fh, fw = frame.shape[:2]
    image = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if fw > w else cv2.INTER_LINEAR)
    return image, (w / float(fw), h / float(fh), 0.0, 0.0)


def letterbox(frame, w, h):
    """YOLO's input: the frame scaled to fit, centred on grey 114. Returns (image, (sx, sy, dx, dy))."""
    import cv2

    fh, fw = frame.shape[:2]
    scale = min(w / float(fw), h / float(fh))
    nw, nh = max(1, int(round(fw * scale))), max(1, int(round(fh * scale)))
    resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    image = np.full((h, w, 3), LETTERBOX_GREY, np.uint8)
    dx, dy = (w - nw) // 2, (h - nh) // 2
    image[dy:dy + nh, dx:dx + nw] = resized
    return image, (scale, scale, float(dx), float(dy))


def to_frame(boxes, transform, frame_w, frame_h):
    """Boxes [K,5] (x1,y1,x2,y2,score) in input pixels -> frame pixels, clipped to the frame."""
    sx, sy, dx, dy = transform
    out = np.array(boxes, np.float32).reshape(-1, 5)
    out = out[np.isfinite(out).all(axis=1)]  # a model that says NaN or inf says nothing
    out[:, [0, 2]] = np.clip((out[:, [0, 2]] - dx) / sx, 0, frame_w)
    out[:, [1, 3]] = np.clip((out[:, [1, 3]] - dy) / sy, 0, frame_h)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]  # boxes left with an area (not all padding)


# --- decoding ----------------------------------------------------------------------------------------------
def grid_centres(grid_h, grid_w, net_h, net_w):
    """DeepStream's gcCenterX/Y: (i * stride + offset) / scale, with stride = ceil(net / grid)."""
    stride_x = math.ceil(net_w / float(grid_w))
    stride_y = math.ceil(net_h / float(grid_h))
    cx = (np.arange(grid_w, dtype=np.float32) * stride_x + BBOX_OFFSET) / BBOX_SCALE
    cy = (np.arange(grid_h, dtype=np.float32) * stride_y + BBOX_OFFSET) / BBOX_SCALE
    return cx, cy


def decode_detectnet(cov, bbox, net_h, net_w, threshold, nms_iou):
    """One image's cov [1,Gh,Gw] and bbox [4,Gh,Gw] -> boxes [K,5] in input pixels, NMS applied."""
    cov = np.asarray(cov, np.float32).reshape(cov.shape[-2:])
    bbox = np.asarray(bbox, np.float32).reshape((4,) + cov.shape)
    cx, cy = grid_centres(cov.shape[0], cov.shape[1], net_h, net_w)
    rows, cols = np.nonzero(cov >= threshold)
    if not len(rows):
        return np.zeros((0, 5), np.float32)
    gx, gy = cx[cols], cy[rows]
    x1 = (bbox[0, rows, cols] - gx) * -BBOX_SCALE
    y1 = (bbox[1, rows, cols] - gy) * -BBOX_SCALE
    x2 = (bbox[2, rows, cols] + gx) * BBOX_SCALE
    y2 = (bbox[3, rows, cols] + gy) * BBOX_SCALE
    boxes = np.stack([np.clip(x1, 0, net_w), np.clip(y1, 0, net_h), np.clip(x2, 0, net_w), np.clip(y2, 0, net_h),
                      cov[rows, cols]], axis=1)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    return nms(boxes, nms_iou)


def encode_detectnet(boxes, grid_h, grid_w, net_h, net_w):
    """The inverse, for training and tests: bbox targets [4,Gh,Gw] that decode to `box` in every cell.
    `boxes` is [K,4] or one box; returns per-cell targets of the given box(es) (one box: every cell)."""
    cx, cy = grid_centres(grid_h, grid_w, net_h, net_w)
    box = np.asarray(boxes, np.float32).reshape(-1, 4)[0]
    gx, gy = np.meshgrid(cx, cy)
    return np.stack([gx - box[0] / BBOX_SCALE, gy - box[1] / BBOX_SCALE,
                     box[2] / BBOX_SCALE - gx, box[3] / BBOX_SCALE - gy]).astype(np.float32)


def decode_yolo_e2e(rows, batch_index, threshold):
    """Rows [K,7] of one batch -> boxes [K,5] of image `batch_index` (plates are class 0) above threshold."""
    rows = np.asarray(rows, np.float32).reshape(-1, 7)
    keep = (rows[:, 0].round() == batch_index) & (rows[:, 6] >= threshold) & (rows[:, 5].round() == 0)
    return rows[keep][:, [1, 2, 3, 4, 6]]


def iou(a, b):
    """IoU of box a [4] against boxes b [K,4] (x1,y1,x2,y2)."""
    b = np.asarray(b, np.float32).reshape(-1, 4)
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(boxes, iou_threshold):
    """Greedy NMS on [K,5] rows, best score first."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 5)
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep = []
    while len(order):
        best = order[0]
        keep.append(best)
        rest = order[1:]
        order = rest[iou(boxes[best], boxes[rest, :4]) <= iou_threshold]
    return boxes[keep]
