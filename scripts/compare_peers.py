#!/usr/bin/env python3
"""Peers in the same run, on the same crops and machine: plates/s and full-plate accuracy of

    lpr-edge's recognizers (ONNX Runtime, the shipped US and CH models, batch 1 and 16)
    Tesseract 5 (the OCR OpenALPR builds on), one line per crop (--psm 7, the US character set), one
        tesseract process per crop with the process start-up (timed apart) taken out, so it is not counted
        against it
    HyperLPR 0.0.2's Chinese recognizer (Caffe through OpenCV's cv2.dnn): its segmentation-free recogniser
        on the crop. Its fine-mapping step is left out: it calls cv2.estimateRigidTransform, which OpenCV 4
        removed; and OpenCV 5 has no Caffe importer, so run this script with an OpenCV 4 (the Python 3.6
        test venv has 4.6: .venv36/bin/python scripts/compare_peers.py)

on the evaluation parts of ../shared/data/real (US: openalpr_seg_and_ocr; CH: lprnet_pytorch_test, the two
EasyPR sets and the CCPD samples), the ids in configs/training/splits/<region>_<set>_eval.txt: never trained
on, chose nothing. Prints a markdown table; --json writes the figures.

    sudo apt-get install tesseract-ocr
    .venv/bin/pip install --no-deps --target state/peers hyperlpr==0.0.2   # --no-deps: it asks for opencv-python
    .venv/bin/python scripts/compare_peers.py [--json docs/bench/peers.json]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import cv2

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
from edge.dataset import load_dataset, read_id_list  # noqa: E402

REAL = os.path.join(ROOT, "..", "shared", "data", "real")
SETS = {"us": ["openalpr_seg_and_ocr"],
        "ch": ["lprnet_pytorch_test", "easypr_general_test", "easypr_svm_hasplate", "ccpd_samples"]}
US_CHARS = "0123456789ABCDEFGHIJKLMNPQRSTUVWXYZ"


def crops(region):
    chosen = []
    for name in SETS[region]:
        samples, _ = load_dataset(os.path.join(REAL, region, name))
        only = read_id_list(os.path.join(ROOT, "configs", "training", "splits", "%s_%s_eval.txt" % (region, name)))
        chosen += [s for s in samples if os.path.splitext(os.path.basename(s.image_path))[0] in only]
    return chosen, [cv2.imread(s.image_path) for s in chosen]  # BGR


def _label(text, region):
    return text.replace("O", "0") if region == "us" else text  # NVIDIA's US list has no O: read as 0


def score(reads, samples, region):
    correct = sum(1 for r, s in zip(reads, samples) if _label(r, region) == _label(s.label, region))
    return round(correct / float(len(samples)), 4)


def ours(region, samples, images):
    from edge.config.model import ModelConfig, RecognizerConfig
    from edge.recognize.recognizer import Recognizer

    model = os.path.join(ROOT, "models", "%s_lprnet_baseline10_mid.onnx" % region)
    recognizer = Recognizer.from_config(ModelConfig(path=model), RecognizerConfig())
    rgb = [cv2.resize(cv2.cvtColor(i, cv2.COLOR_BGR2RGB), (96, 48)) for i in images]
    rows = []
    for batch in (1, 16):
        recognizer.read(rgb[:batch])  # warm
        start = time.monotonic()
        reads = []
        for first in range(0, len(rgb), batch):
            reads.extend(r.text for r in recognizer.read(rgb[first:first + batch]))
        seconds = time.monotonic() - start
        rows.append({"peer": "lpr-edge %s (ONNX Runtime, batch %d)" % (region.upper(), batch), "region": region,
                     "plates_per_s": round(len(rgb) / seconds, 1), "plate_accuracy": score(reads, samples, region),
                     "count": len(rgb)})
    recognizer.close()
    return rows


def tesseract(samples, images):
    binary = shutil.which("tesseract")
    if binary is None:
        return {"peer": "Tesseract", "region": "us", "skipped": "tesseract not installed (apt-get install tesseract-ocr)"}
    version = subprocess.run([binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True).stdout.splitlines()[0]
    work = tempfile.mkdtemp(prefix="lpr-peers-")
    try:
        paths = []
        for i, image in enumerate(images):  # the same pixels ours reads, as PNG (no second JPEG loss)
            paths.append(os.path.join(work, "%05d.png" % i))
            cv2.imwrite(paths[-1], image)
        reads = []
        start = time.monotonic()
        for path in paths:  # one process a crop gives one text a crop; start-up measured apart below
            out = subprocess.run([binary, path, "stdout", "--psm", "7", "-c", "tessedit_char_whitelist=" + US_CHARS],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True).stdout
            reads.append(re.sub(r"[^0-9A-Z]", "", out.upper()))
        seconds = time.monotonic() - start
        start = time.monotonic()
        for _ in range(5):
            subprocess.run([binary, "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        startup = (time.monotonic() - start) / 5
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_crop = max(1e-6, seconds / len(paths) - startup)
    return {"peer": "%s (--psm 7, US characters)" % version, "region": "us", "plates_per_s": round(1 / per_crop, 1),
            "plate_accuracy": score(reads, samples, "us"), "count": len(paths),
            "note": "process start-up (%.0f ms a crop) taken out" % (1000 * startup)}


def hyperlpr(samples, images):
    sys.path.insert(0, os.path.join(ROOT, "state", "peers"))
    if not hasattr(cv2, "CascadeClassifier"):
        # OpenCV 5 moved the Haar cascades out; HyperLPR builds one at import for its old detector, which the
        # crop path measured here never calls
        cv2.CascadeClassifier = lambda *args, **kwargs: None
    try:
        import hyperlpr as hl
    except Exception as exc:
        return {"peer": "HyperLPR 0.0.2", "region": "ch", "skipped": "not installed (%s): pip install --no-deps "
                                                                        "--target state/peers hyperlpr==0.0.2" % exc}
    reads = []
    start = time.monotonic()
    for image in images:
        text, _ = hl.PR.segmentation_free_recognition(image)
        reads.append(text)
    seconds = time.monotonic() - start
    return {"peer": "HyperLPR 0.0.2 (segmentation-free recogniser, cv2.dnn)", "region": "ch",
            "plates_per_s": round(len(images) / seconds, 1), "plate_accuracy": score(reads, samples, "ch"),
            "count": len(images)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    rows = []
    us_samples, us_images = crops("us")
    ch_samples, ch_images = crops("ch")
    rows += ours("us", us_samples, us_images)
    rows.append(tesseract(us_samples, us_images))
    rows += ours("ch", ch_samples, ch_images)
    rows.append(hyperlpr(ch_samples, ch_images))
    print("| peer | crops | plates/s | full-plate accuracy |")
    print("|---|---:|---:|---:|")
    for r in rows:
        if "skipped" in r:
            print("| %s | - | - | skipped: %s |" % (r["peer"], r["skipped"]))
        else:
            print("| %s | %d %s | %.1f | %.1f%% |" % (r["peer"], r["count"], r["region"].upper(), r["plates_per_s"],
                                                     100 * r["plate_accuracy"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_count": os.cpu_count(), "rows": rows}, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
