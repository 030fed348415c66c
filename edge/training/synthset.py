"""Synthetic plate sets made in parallel and cached: needs numpy, OpenCV and Pillow, not torch, so
`lpr-edge-train synth` runs where torch is not installed."""
import hashlib
import logging
import multiprocessing
import os
import zipfile

import numpy as np

from edge.training import synth

log = logging.getLogger("edge.training")

SYNTH_CHUNK = 500


def augment_options(aug):
    """The keyword arguments of synth.augment taken from a spec's augmentation_config."""
    return {"strength": aug.get("strength", 1.0), "tight_crop_prob": aug.get("tight_crop_prob", 0.4),
            "capture_size": aug.get("capture_size")}


def plate_style(aug):
    """The plate-drawing keys of a spec's augmentation_config (synth.render_plate's `style`)."""
    return {k: aug[k] for k in synth.PLATE_STYLE_KEYS if k in aug}


def _synth_chunk(args):
    region, seed, count, aug = args
    rng = np.random.default_rng(seed)
    images = np.empty((count, 48, 96, 3), np.uint8)
    labels = []
    for i in range(count):
        images[i], text = synth.make_sample(region, rng, clean_prob=aug.get("clean_prob", 0.1),
                                            style=plate_style(aug), **augment_options(aug))
        labels.append(text)
    return images, labels


def _cache_path(region, count, seed, aug):
    """Where generate_synthetic keeps a set when LPR_EDGE_SYNTH_CACHE names a folder (experiments that train
    several models on one set); the key covers the arguments, not synth.py's code: clear it after a change."""
    folder = os.environ.get("LPR_EDGE_SYNTH_CACHE")
    if not folder:
        return None
    key = hashlib.sha1(repr((region, count, seed, sorted((aug or {}).items()), SYNTH_CHUNK)).encode()).hexdigest()
    return os.path.join(folder, "synth-%s-%d-%s.npz" % (region, count, key[:16]))


def generate_synthetic(region, count, seed, aug=None, workers=None):
    """`count` synthetic 96x48 plate crops and labels, made in parallel, reproducible from `seed`;
    `aug` is a spec's augmentation_config (defaults when None)."""
    cache = _cache_path(region, count, seed, aug)
    if cache and os.path.exists(cache):
        try:
            with np.load(cache) as data:
                images, labels = data["images"], [str(t) for t in data["labels"]]
            if images.shape == (count, 48, 96, 3) and len(labels) == count:
                return images, labels
            log.warning("synthetic cache %s holds another set (%s); drawing it again", cache, images.shape)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("synthetic cache %s is unreadable (%s); drawing it again", cache, exc)
    images, labels = _generate(region, count, seed, aug, workers)
    if cache:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        with open(cache + ".part", "wb") as f:
            np.savez(f, images=images, labels=np.array(labels))
        os.replace(cache + ".part", cache)
    return images, labels


def _generate(region, count, seed, aug, workers):
    jobs = []
    for start in range(0, count, SYNTH_CHUNK):
        jobs.append((region, seed * 100003 + start, min(SYNTH_CHUNK, count - start), aug or {}))
    workers = workers or max(1, os.cpu_count() or 1)
    if workers == 1 or len(jobs) == 1:
        parts = [_synth_chunk(j) for j in jobs]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_synth_chunk, jobs)
    images = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, 48, 96, 3), np.uint8)
    labels = [t for p in parts for t in p[1]]
    return images, labels
