"""Accuracy of a model on plate crops in the TAO dataset layout: the model card's KPI (full-plate
accuracy: exact match of the whole string), character accuracy (1 - edit distance / label length,
summed over the set), throughput, and the most frequent character confusions."""
import collections
import os
import time

from edge.dataset import DatasetError, read_image, resolve_dirs, scan
from edge.recognize.preprocess import to_batch
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


def evaluate(recognizer, data_root, normalize=None, batch_size=64, limit=None, keep_reads=False, only_ids=None):
    """Run `recognizer` over every dataset under `data_root`; returns a result dict."""
    characters = recognizer.model.characters
    samples, skipped = [], []
    for root in find_datasets(data_root):
        image_dir, label_dir = resolve_dirs(root)
        s, k = scan(image_dir, label_dir, characters, None, normalize)
        samples.extend(s)
        skipped.extend(k)
    if only_ids is not None:
        samples = [s for s in samples if os.path.splitext(os.path.basename(s.image_path))[0] in only_ids]
    if limit:
        samples = samples[:limit]
    correct = 0
    evaluated = 0
    char_errors = 0
    char_total = 0
    confusion = collections.Counter()
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
            if read.text == sample.label:
                correct += 1
            else:
                char_errors += edit_distance(sample.label, read.text)
                confusion.update(confusions(sample.label, read.text))
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
        "confusions": [{"truth": a or "(none)", "read": b or "(none)", "count": n}
                       for (a, b), n in confusion.most_common(10)],
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


def _reason_kind(reason):
    for kind in ("not in the list", "no label", "empty label", "longer than", "unreadable"):
        if kind in reason:
            return kind
    return reason
