"""Accuracy of a model on plate crops in the TAO dataset layout: the model card's KPI (full-plate
accuracy: exact match of the whole string), character accuracy (1 - edit distance / label length,
summed over the set), throughput, and the most frequent character confusions."""
import collections
import hashlib
import os
import time

import numpy as np

from edge.dataset import DatasetError, read_image, resolve_dirs, scan
from edge.track import edit_distance


def find_datasets(root):
    """`root` itself if it has image/ and label/, else every folder below it that has them."""
    try:
        resolve_dirs(root)
        return [root]
    except DatasetError:
        pass
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        if "image" in dirnames and "label" in dirnames:
            found.append(dirpath)
            dirnames[:] = []
    if not found:
        raise DatasetError("%s: no plate dataset here (a folder with image/ and label/, or folders of them)" % root)
    return sorted(found)


def confusions(label, text):
    """Character substitutions (truth, read) along an edit-distance alignment."""
    n, m = len(label), len(text)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (label[i - 1] != text[j - 1]))
    out = []
    i, j = n, m
    while i > 0 and j > 0:
        if d[i][j] == d[i - 1][j - 1] + (label[i - 1] != text[j - 1]):
            if label[i - 1] != text[j - 1]:
                out.append((label[i - 1], text[j - 1]))
            i, j = i - 1, j - 1
        elif d[i][j] == d[i - 1][j] + 1:
            out.append((label[i - 1], ""))
            i -= 1
        else:
            out.append(("", text[j - 1]))
            j -= 1
    out.extend((label[k], "") for k in range(i))
    out.extend(("", text[k]) for k in range(j))
    return out


CROP_KINDS = ("tight", "detector")
# a detector's box against the true plate: each side off by up to 8% of the plate's size (IoU about 0.75-1),
# grown by detector.margin (5%), the plate seen 18-40 px high (a 1280x720 frame at a gate) and upscaled again
DETECTOR_JITTER = 0.08
DETECTOR_MARGIN = 0.05
DETECTOR_HEIGHTS = (18, 40)


def cut_as_detector(image, grow, seen_h, border=None, background=None):
    """`image` (a tight plate crop) cut by a box grown by `grow` = (left, top, right, bottom) shares of its
    size (negative: cut into it), then seen `seen_h` px high when it is larger. Outside the crop there is no
    scene: `border` (an OpenCV border mode, default replicate) fills it, or `background` (an image as large as
    the crop padded by its largest grow on every side)."""
    import cv2

    h, w = image.shape[:2]
    grow = [min(1.0, max(-0.2, g)) for g in grow]  # never cut more than a fifth of the plate a side
    left, right = int(round(grow[0] * w)), int(round(grow[2] * w))
    top, bottom = int(round(grow[1] * h)), int(round(grow[3] * h))
    pad = max(0, left, right, top, bottom)
    if background is not None:
        padded = background[:h + 2 * pad, :w + 2 * pad].copy()
        padded[pad:pad + h, pad:pad + w] = image
    else:
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE if border is None else border)
    crop = padded[pad - top:pad + h + bottom, pad - left:pad + w + right]
    if crop.shape[0] > seen_h:
        small = (max(8, int(round(crop.shape[1] * seen_h / float(crop.shape[0])))), int(seen_h))
        crop = cv2.resize(crop, small, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def detector_crop(image, key):
    """`image` (a tight plate crop) as a plate detector's box would cut it: the same jitter for the same `key`
    (a sample id) in every run."""
    rng = np.random.RandomState(int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16))
    grow = DETECTOR_MARGIN + rng.uniform(-DETECTOR_JITTER, DETECTOR_JITTER, 4)
    return cut_as_detector(image, grow, int(rng.uniform(*DETECTOR_HEIGHTS)))


def evaluate(recognizer, data_root, normalize=None, batch_size=64, limit=None, keep_reads=False, only_ids=None,
             crops="tight"):
    """Run `recognizer` over every dataset under `data_root`; returns a result dict. `crops`: "tight" reads
    the crops as stored; "detector" cuts each as a detector's box would (detector_crop)."""
    if crops not in CROP_KINDS:
        raise ValueError("crops must be one of %s, not %r" % (", ".join(CROP_KINDS), crops))
    characters = recognizer.model.characters
    samples, skipped, set_of = [], [], {}
    for root in find_datasets(data_root):
        image_dir, label_dir = resolve_dirs(root)
        s, k = scan(image_dir, label_dir, characters, None, normalize)
        samples.extend(s)
        skipped.extend(k)
        set_of.update((sample.image_path, os.path.basename(os.path.normpath(root))) for sample in s)
    if only_ids is not None:
        samples = [s for s in samples if os.path.splitext(os.path.basename(s.image_path))[0] in only_ids]
    if limit:
        samples = samples[:limit]
    correct = 0
    evaluated = 0
    char_errors = 0
    char_total = 0
    confusion = collections.Counter()
    per_set = collections.defaultdict(lambda: [0, 0, collections.Counter()])
    reads = []
    infer_s = 0.0
    start = time.monotonic()
    for offset in range(0, len(samples), batch_size):
        chunk = samples[offset:offset + batch_size]
        images, usable = [], []
        for sample in chunk:
            image = read_image(sample.image_path)
            if image is None:
                skipped.append((sample.image_path, "unreadable image"))
                continue
            if crops == "detector":
                image = detector_crop(image, os.path.splitext(os.path.basename(sample.image_path))[0])
            images.append(image)
            usable.append(sample)
        if not images:
            continue
        t0 = time.monotonic()
        batch_reads = recognizer.read(images)
        infer_s += time.monotonic() - t0
        for sample, read in zip(usable, batch_reads):
            evaluated += 1
            char_total += len(sample.label)
            tally = per_set[set_of.get(sample.image_path, "")]
            tally[0] += 1
            if read.text == sample.label:
                correct += 1
                tally[1] += 1
            else:
                char_errors += edit_distance(sample.label, read.text)
                pairs = confusions(sample.label, read.text)
                confusion.update(pairs)
                tally[2].update(pairs)
            if keep_reads:
                reads.append((sample.image_path, sample.label, read.text, read.score))
    total_s = time.monotonic() - start
    result = {
        "count": evaluated,
        "plate_accuracy": round(correct / float(evaluated), 4) if evaluated else 0.0,
        "char_accuracy": round(1.0 - char_errors / float(char_total), 4) if char_total else 0.0,
        "correct": correct,
        "skipped": len(skipped),
        "skipped_reasons": dict(collections.Counter(_reason_kind(item[1]) for item in skipped)),
        "plates_per_s_inference": round(evaluated / infer_s, 1) if infer_s else None,
        "plates_per_s_total": round(evaluated / total_s, 1) if total_s else None,
        "confusions": _confusion_list(confusion, 10),
        "crops": crops,
        "per_set": dict((name, {"count": n, "correct": ok, "plate_accuracy": round(ok / float(n), 4),
                                "confusions": _confusion_list(c, 5)})
                        for name, (n, ok, c) in sorted(per_set.items())),
        "model": recognizer.model.name,
        "model_sha256": recognizer.model.sha256,
        "backend": recognizer.backend.name,
        "plate_format": recognizer.plate_format.pattern if recognizer.plate_format else None,
        "format_refits": recognizer.format_refits,
        "format_misses": recognizer.format_misses,
        "data": os.path.abspath(data_root),
    }
    if keep_reads:
        result["reads"] = reads
    return result


def _confusion_list(counter, n):
    return [{"truth": a or "(none)", "read": b or "(none)", "count": k} for (a, b), k in counter.most_common(n)]


def _reason_kind(reason):
    for kind in ("not in the list", "no label", "empty label", "longer than", "unreadable"):
        if kind in reason:
            return kind
    return reason
