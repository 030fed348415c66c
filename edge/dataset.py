"""Plate datasets in NVIDIA TAO LPRNet's layout, and character lists.

    <root>/image/<id>.jpg|png    a cropped plate image
    <root>/label/<id>.txt        one line: the plate's characters
    characters_list.txt          one character per line; the line number is the class id

Used both by `lpr-edge evaluate` on a device and by the training tools, so it needs only OpenCV and numpy.
Bad samples (no label, a character not in the list, an unreadable image, a label too long) are reported
by file name and skipped, never silently.
"""
import io
import logging
import os
from collections import namedtuple

log = logging.getLogger("edge.dataset")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

Sample = namedtuple("Sample", "image_path label")
Skipped = namedtuple("Skipped", "path reason")


class DatasetError(ValueError):
    """A dataset or character list that cannot be used at all (not one bad sample)."""


def load_characters(path):
    """Characters list: one per line, no duplicates, no blanks. Returns the list (index = class id)."""
    try:
        with io.open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (IOError, OSError) as exc:
        raise DatasetError("%s: cannot read characters list: %s" % (path, exc))
    chars = []
    seen = {}
    for number, line in enumerate(lines, 1):
        ch = line.strip()
        if not ch:
            if number == len(lines):
                continue
            raise DatasetError("%s:%d: empty line in characters list" % (path, number))
        if len(ch) != 1:
            raise DatasetError("%s:%d: %r is not one character" % (path, number, ch))
        if ch in seen:
            raise DatasetError("%s:%d: duplicate character %r (first on line %d)" % (path, number, ch, seen[ch]))
        seen[ch] = number
        chars.append(ch)
    if not chars:
        raise DatasetError("%s: characters list is empty" % path)
    return chars


def resolve_dirs(root):
    """(image_dir, label_dir) for a dataset folder; a clear error if it has not the TAO layout."""
    image_dir = os.path.join(root, "image")
    label_dir = os.path.join(root, "label")
    if not os.path.isdir(image_dir) or not os.path.isdir(label_dir):
        raise DatasetError("%s: not a plate dataset (expected folders image/ and label/)" % root)
    return image_dir, label_dir


def scan(image_dir, label_dir, characters=None, max_label_length=None, normalize=None):
    """List usable samples of a dataset; return (samples, skipped) with a reason per skipped file.

    `normalize` maps characters before checking them (e.g. {"O": "0"} for US lists without O).
    Images are not decoded here; `read_image` reports unreadable ones when they are used.
    """
    charset = set(characters) if characters is not None else None
    samples, skipped = [], []
    names = sorted(os.listdir(image_dir))
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        image_path = os.path.join(image_dir, name)
        label_path = os.path.join(label_dir, stem + ".txt")
        if not os.path.exists(label_path):
            skipped.append(Skipped(image_path, "no label file %s" % label_path))
            continue
        with io.open(label_path, encoding="utf-8") as f:
            label = f.readline().strip()
        if normalize:
            label = "".join(normalize.get(c, c) for c in label)
        if not label:
            skipped.append(Skipped(label_path, "empty label"))
            continue
        if charset is not None:
            bad = sorted(set(c for c in label if c not in charset))
            if bad:
                skipped.append(Skipped(label_path, "label %r has characters not in the list: %s"
                                       % (label, " ".join(bad))))
                continue
        if max_label_length is not None and len(label) > max_label_length:
            skipped.append(Skipped(label_path, "label %r is longer than max_label_length %d"
                                   % (label, max_label_length)))
            continue
        samples.append(Sample(image_path, label))
    if not samples and not skipped:
        raise DatasetError("%s: no images found" % image_dir)
    return samples, skipped


def read_id_list(path):
    """Sample ids (file stems), one per line; '#' starts a comment."""
    with io.open(path, encoding="utf-8") as f:
        return set(line.split("#", 1)[0].strip() for line in f) - {""}


def load_dataset(root, characters=None, max_label_length=None, normalize=None):
    image_dir, label_dir = resolve_dirs(root)
    samples, skipped = scan(image_dir, label_dir, characters, max_label_length, normalize)
    for item in skipped:
        log.warning("dataset %s: skipped %s: %s", root, item.path, item.reason)
    return samples, skipped


def read_image(path):
    """Decode an image file as RGB uint8, or None when it cannot be decoded."""
    import cv2
    import numpy as np

    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
