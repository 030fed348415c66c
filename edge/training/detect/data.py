"""Scenes for the detector: the YOLO-layout sources in ../shared/data/detect, a fixed grouped split,
loading, augmentation of real scenes and synthetic composites (the project's synthetic plates warped in
perspective onto train-split scenes).

The split is by group, so near-duplicates never straddle train / val / eval:
  - Roboflow exports (ids `<base>_jpg.rf.<hash>`): the manifest's `group` column, the source photo;
  - dash-camera frames (`<split>_<video>.mp4_t_<seconds>`): one video's frames closer than
    VIDEO_GAP_S seconds to the previous labelled frame are one group (the same car in consecutive frames);
  - everything else: the id itself.
A group goes to a split by the SHA-1 of its key (deterministic, no seed, stable when sources are added).
"""
import hashlib
import io
import os
import re

import cv2
import numpy as np

from edge.dataset import DatasetError

SPLITS = ("train", "val", "eval")
VIDEO_GAP_S = 30
_VIDEO = re.compile(r"^(?:train|valid|val|test)_(.+\.mp4)_t_(\d+)$")
_ROBOFLOW = re.compile(r"^(.+)_(?:jpg|jpeg|png)\.rf\.[0-9a-f]+$")


def read_manifest(source_dir):
    """Rows of <source>/manifest.tsv as dicts (id, group, ...)."""
    path = os.path.join(source_dir, "manifest.tsv")
    try:
        with io.open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (IOError, OSError) as exc:
        raise DatasetError("%s: cannot read the scene manifest: %s" % (path, exc))
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        if line.strip():
            cells = line.split("\t")
            rows.append(dict(zip(header, cells + [""] * (len(header) - len(cells)))))
    return rows


def group_keys(source, rows):
    """{id: group key} for one source's manifest rows (see the module's docstring)."""
    keys, videos = {}, {}
    for row in rows:
        sid = row["id"]
        m = _VIDEO.match(sid)
        if m:
            videos.setdefault(m.group(1), []).append((int(m.group(2)), sid))
            continue
        m = _ROBOFLOW.match(sid)
        if m:
            keys[sid] = "%s/%s" % (source, row.get("group") or m.group(1))
        else:
            keys[sid] = "%s/%s" % (source, sid)
    for video, frames in videos.items():
        frames.sort()
        run_start, last = None, None
        for t, sid in frames:
            if last is None or t - last > VIDEO_GAP_S:
                run_start = t
            keys[sid] = "%s/%s@%d" % (source, video, run_start)
            last = t
    return keys


def split_of(group_key, fractions=(0.8, 0.1, 0.1)):
    h = int(hashlib.sha1(group_key.encode("utf-8")).hexdigest()[:8], 16) / float(0x100000000)
    if h < fractions[0]:
        return "train"
    return "val" if h < fractions[0] + fractions[1] else "eval"


def make_split(data_root, sources=None, fractions=(0.8, 0.1, 0.1)):
    """{split: sorted ['<source>/<id>', ...]} over the sources under data_root (all with a manifest)."""
    sources = sources or sorted(d for d in os.listdir(data_root)
                                if os.path.exists(os.path.join(data_root, d, "manifest.tsv")))
    out = dict((s, []) for s in SPLITS)
    for source in sources:
        for sid, key in group_keys(source, read_manifest(os.path.join(data_root, source))).items():
            out[split_of(key, fractions)].append("%s/%s" % (source, sid))
    for s in SPLITS:
        out[s].sort()
    return out


def write_split(split, folder, prefix="detect_"):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in SPLITS:
        path = os.path.join(folder, "%s%s.txt" % (prefix, name))
        with io.open(path, "w", encoding="utf-8") as f:
            f.write("".join(i + "\n" for i in split[name]))
        paths.append(path)
    return paths


def read_ids(path):
    try:
        with io.open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except (IOError, OSError) as exc:
        raise DatasetError("%s: cannot read the split list (write it with `lpr-edge-train detect-split`): %s"
                           % (path, exc))


def read_labels(path, width, height):
    """YOLO label file -> boxes [K,4] x1,y1,x2,y2 in pixels of a width x height image."""
    boxes = []
    if os.path.exists(path):
        with io.open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 5:
                    raise DatasetError("%s:%d: expected `class cx cy w h`, got %r" % (path, n, line.strip()))
                cx, cy, w, h = (float(v) for v in parts[1:])
                boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width,
                              (cy + h / 2) * height])
    return np.array(boxes, np.float32).reshape(-1, 4)


class Scene(object):
    """One scene: its JPEG bytes (decoded when used) and boxes in its own pixels."""
    __slots__ = ("sid", "jpeg", "width", "height", "boxes")

    def __init__(self, sid, jpeg, width, height, boxes):
        self.sid, self.jpeg, self.width, self.height, self.boxes = sid, jpeg, width, height, boxes

    def image(self):
        """RGB uint8."""
        img = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError("%s: unreadable image" % self.sid)
        return img[:, :, ::-1]


def load_scenes(data_root, ids):
    """Scenes for '<source>/<id>' ids (bytes kept in memory: the sources are JPEG q80, about 200 MB)."""
    scenes = []
    for full in ids:
        source, sid = full.split("/", 1)
        path = os.path.join(data_root, source, "images", sid + ".jpg")
        try:
            with open(path, "rb") as f:
                jpeg = f.read()
        except (IOError, OSError) as exc:
            raise DatasetError("%s: %s (named in the split list)" % (path, exc))
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_REDUCED_COLOR_8)
        if img is None:
            raise DatasetError("%s: unreadable image" % path)
        h, w = _jpeg_size(jpeg, img)
        boxes = read_labels(os.path.join(data_root, source, "labels", sid + ".txt"), w, h)
        scenes.append(Scene(full, jpeg, w, h, boxes))
    return scenes


def _jpeg_size(jpeg, reduced):
    """(height, width) from the JPEG header (SOF marker), without a full decode."""
    data, i = jpeg, 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return img.shape[:2]


# --- augmentation ------------------------------------------------------------------------------------------
def _affine_boxes(boxes, m):
    """Axis-aligned boxes through a 2x3 affine (scale/flip/translate only) -> boxes."""
    if not len(boxes):
        return boxes.reshape(-1, 4)
    xs = boxes[:, [0, 2]] * m[0, 0] + m[0, 2]
    ys = boxes[:, [1, 3]] * m[1, 1] + m[1, 2]
    return np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], 1).astype(np.float32)


def place_scene(scene, rng, net_w, net_h, out_w, out_h, aug, image=None):
    """The scene stretched to the network frame (net_w x net_h, as the runtime does), zoomed, aspect-jittered,
    flipped and cropped to out_w x out_h. Returns (RGB image, boxes [K,4], visible fraction [K])."""
    img = scene.image() if image is None else image
    h0, w0 = img.shape[:2]
    zoom = float(np.exp(rng.uniform(*np.log(aug.get("zoom", [0.6, 1.6])))))
    aspect = float(np.exp(rng.uniform(-1, 1) * np.log(1 + aug.get("aspect_jitter", 0.15))))
    sx = net_w / float(w0) * zoom * aspect
    sy = net_h / float(h0) * zoom / aspect
    flip = rng.random() < aug.get("flip_prob", 0.5)
    sw, sh = w0 * sx, h0 * sy
    # the crop's origin in the scaled scene: anywhere that keeps some of the scene in view
    ox = rng.uniform(min(0, sw - out_w), max(0, sw - out_w))
    oy = rng.uniform(min(0, sh - out_h), max(0, sh - out_h))
    if len(scene.boxes) and rng.random() < aug.get("plate_crop_prob", 0.5):  # keep a plate in view
        b = scene.boxes[rng.integers(len(scene.boxes))]
        bx, by = (b[0] + b[2]) / 2 * sx, (b[1] + b[3]) / 2 * sy
        if flip:
            bx = sw - bx
        ox = float(np.clip(bx - rng.uniform(0.1, 0.9) * out_w, min(0, sw - out_w), max(0, sw - out_w)))
        oy = float(np.clip(by - rng.uniform(0.1, 0.9) * out_h, min(0, sh - out_h), max(0, sh - out_h)))
    m = np.array([[-sx if flip else sx, 0, (sw if flip else 0) - ox], [0, sy, -oy]], np.float64)
    fill = tuple(int(v) for v in rng.integers(0, 256, 3)) if rng.random() < 0.5 else (114, 114, 114)
    interp = cv2.INTER_AREA if sx < 1 and sy < 1 else cv2.INTER_LINEAR
    if interp == cv2.INTER_AREA:  # warpAffine has no INTER_AREA: resize, then shift
        small = cv2.resize(img, (max(1, int(round(sw))), max(1, int(round(sh)))), interpolation=cv2.INTER_AREA)
        m2 = m.copy()
        m2[0, 0] = -1.0 if flip else 1.0
        m2[1, 1] = 1.0
        m2[0, 2] = (small.shape[1] if flip else 0) - ox
        out = cv2.warpAffine(small, m2, (out_w, out_h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=fill)
    else:
        out = cv2.warpAffine(img, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=fill)
    boxes = _affine_boxes(scene.boxes, m)
    return out, boxes


def clip_boxes(boxes, w, h):
    """Clipped boxes and the visible share of each."""
    if not len(boxes):
        return boxes.reshape(-1, 4), np.zeros(0, np.float32)
    area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    c = boxes.copy()
    c[:, [0, 2]] = np.clip(c[:, [0, 2]], 0, w)
    c[:, [1, 3]] = np.clip(c[:, [1, 3]], 0, h)
    vis = np.maximum(c[:, 2] - c[:, 0], 0) * np.maximum(c[:, 3] - c[:, 1], 0) / area
    return c, vis.astype(np.float32)


def photometric(img, rng, aug):
    """Colour, light, blur, noise and JPEG, as cameras vary."""
    out = img.astype(np.float32)
    if rng.random() < aug.get("color_prob", 0.8):
        gain = np.exp(rng.uniform(-0.6, 0.4))  # dim to bright
        contrast = rng.uniform(0.6, 1.3)
        tint = rng.uniform(0.85, 1.15, 3)
        mean = out.mean()
        out = (out - mean) * contrast + mean
        out = out * gain * tint
        if rng.random() < 0.3:  # desaturate (night, IR-ish)
            grey = out.mean(2, keepdims=True)
            out = grey + (out - grey) * rng.uniform(0, 0.6)
        if rng.random() < 0.2:  # a lighting gradient across the frame
            h, w = out.shape[:2]
            ramp = np.linspace(rng.uniform(0.5, 1.0), rng.uniform(1.0, 1.5), w if rng.random() < 0.5 else h)
            out *= ramp[None, :, None] if ramp.shape[0] == w else ramp[:, None, None]
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < aug.get("blur_prob", 0.3):
        if rng.random() < 0.5:
            k = int(rng.choice([3, 5]))
            out = cv2.GaussianBlur(out, (k, k), 0)
        else:  # motion blur
            k = int(rng.integers(3, 8))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0 / k
            rot = cv2.getRotationMatrix2D((k / 2.0 - 0.5, k / 2.0 - 0.5), float(rng.uniform(0, 180)), 1.0)
            kernel = cv2.warpAffine(kernel, rot, (k, k))
            out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < aug.get("noise_prob", 0.2):
        out = np.clip(out + rng.normal(0, rng.uniform(2, 10), out.shape), 0, 255).astype(np.uint8)
    if rng.random() < aug.get("jpeg_prob", 0.4):
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


# --- synthetic composites ----------------------------------------------------------------------------------
def render_pool(regions, count, seed):
    """`count` clean frontal synthetic plates (RGB uint8, various sizes) from the project's renderer."""
    from edge.training import synth

    rng = np.random.default_rng(seed)
    plates = []
    for i in range(count):
        plate, _ = synth.render_plate(regions[i % len(regions)], rng)
        plates.append(np.ascontiguousarray(plate))
    return plates


def paste_plates(img, boxes, rng, pool, aug):
    """1..max_plates synthetic plates warped in perspective onto img (in place), away from existing boxes.
    Returns the boxes with the new ones appended."""
    from edge.training.synth import project_plate

    h, w = img.shape[:2]
    out_boxes = [b for b in boxes]
    lo, hi = aug.get("synthetic_plate_width", [14, 220])
    for _ in range(int(rng.integers(1, aug.get("synthetic_max_plates", 3) + 1))):
        plate = pool[rng.integers(len(pool))]
        ph, pw = plate.shape[:2]
        if rng.random() < 0.5:  # a frame / bumper around the plate: it rarely floats on its own
            pad = int(max(2, rng.uniform(0.03, 0.15) * ph))
            colour = rng.integers(0, 256, 3) if rng.random() < 0.5 else rng.integers(0, 60, 3)
            plate = cv2.copyMakeBorder(plate, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=[int(c) for c in colour])
            inner = (pad, pad, pad + pw, pad + ph)
            ph, pw = plate.shape[:2]
        else:
            inner = (0, 0, pw, ph)
        target_w = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        roll, pitch, yaw = rng.uniform(-12, 12), rng.uniform(-30, 30), rng.uniform(-40, 40)
        dst = project_plate(1.0, ph / float(pw), roll, pitch, yaw).astype(np.float64) * target_w
        dst[:, 1] *= rng.uniform(0.8, 1.2)  # the frame's stretch to the network's aspect
        span = dst.max(0) - dst.min(0)
        if span[0] >= w - 2 or span[1] >= h - 2:
            continue
        placed = None
        for _try in range(10):
            x0 = rng.uniform(-dst[:, 0].min(), w - dst[:, 0].max())
            y0 = rng.uniform(-dst[:, 1].min(), h - dst[:, 1].max())
            quad = dst + [x0, y0]
            box = np.array([quad[:, 0].min(), quad[:, 1].min(), quad[:, 0].max(), quad[:, 1].max()], np.float32)
            if all(_overlap(box, b) == 0 for b in out_boxes):
                placed = quad
                break
        if placed is None:
            continue
        src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
        mat = cv2.getPerspectiveTransform(src, placed.astype(np.float32))
        face = plate.astype(np.float32) * rng.uniform(0.35, 1.15) * rng.uniform(0.85, 1.15, 3)
        if target_w < pw * 0.5:  # pre-smooth before a strong shrink (no aliasing a camera would not show)
            k = int(2 * round(pw / target_w / 3) + 1)
            face = cv2.GaussianBlur(face, (k, k), 0)
        warped = cv2.warpPerspective(np.clip(face, 0, 255).astype(np.uint8), mat, (w, h), flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.ones((ph, pw), np.float32), mat, (w, h), flags=cv2.INTER_LINEAR)[..., None]
        img[:] = (img * (1 - mask) + warped * mask).astype(np.uint8)
        corners = np.array([[inner[0], inner[1]], [inner[2], inner[1]], [inner[2], inner[3]], [inner[0], inner[3]]],
                           np.float32)
        q = cv2.perspectiveTransform(corners[None], mat)[0]
        out_boxes.append(np.array([q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()], np.float32))
    return np.array(out_boxes, np.float32).reshape(-1, 4)


def _overlap(a, b, margin=2.0):
    ix = min(a[2], b[2]) + margin - max(a[0], b[0])
    iy = min(a[3], b[3]) + margin - max(a[1], b[1])
    return max(ix, 0) * max(iy, 0)
