#!/usr/bin/env python3
"""INT8 for CPU-only machines, measured against FP32 in one run: ONNX Runtime's static quantisation (QDQ,
per-channel weights) of a shipped recognizer, calibrated on the train parts of the region's real crops, then
full-plate accuracy on the evaluation parts and plates/s at batch 16 of both files, side by side. The INT8 file
is written to --out (never into models/): ship it only if it keeps accuracy within 0.5 points and is faster.

    .venv/bin/python scripts/quantize_int8.py --region us [--method entropy|minmax|percentile] [--out DIR] [--json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
from edge.dataset import load_dataset, read_id_list, read_image  # noqa: E402
from edge.recognize.preprocess import to_batch  # noqa: E402

REAL = os.path.join(ROOT, "..", "shared", "data", "real")
SPLITS = os.path.join(ROOT, "configs", "training", "splits")
SETS = {"us": ["openalpr_seg_and_ocr"],
        "ch": ["lprnet_pytorch_test", "easypr_general_test", "easypr_svm_hasplate", "ccpd_samples"]}


def crops(region, part, normalize):
    samples = []
    for name in SETS[region]:
        found, _ = load_dataset(os.path.join(REAL, region, name), normalize=normalize)
        only = read_id_list(os.path.join(SPLITS, "%s_%s_%s.txt" % (region, name, part)))
        samples += [s for s in found if os.path.splitext(os.path.basename(s.image_path))[0] in only]
    images = [read_image(s.image_path) for s in samples]
    return [s.label for s, i in zip(samples, images) if i is not None], [i for i in images if i is not None]


class _Reader:
    """Calibration batches for onnxruntime.quantization."""

    def __init__(self, images, batch=16):
        # whole batches only: the histogram calibrators stack every batch's outputs into one array
        self.batches = [to_batch(images[i:i + batch]) for i in range(0, len(images) - batch + 1, batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {"image_input": self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


def fp32_weights(src, dst):
    """The model with FP16-stored weights (a Cast after each) back to plain FP32 initializers: the quantiser
    quantises weights it finds as initializers only."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(src)
    graph = model.graph
    inits = dict((i.name, i) for i in graph.initializer)
    casts = [n for n in graph.node if n.op_type == "Cast" and n.input[0] in inits
             and inits[n.input[0]].data_type == TensorProto.FLOAT16]
    for node in casts:
        half = inits.pop(node.input[0])
        inits[node.output[0]] = numpy_helper.from_array(numpy_helper.to_array(half).astype(np.float32), node.output[0])
        graph.node.remove(node)
    del graph.initializer[:]
    graph.initializer.extend(inits.values())
    onnx.save(model, dst)
    return dst


def quantize(src, dst, images, method):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst + ".pre.onnx"
    quant_pre_process(fp32_weights(src, dst + ".fp32.onnx"), pre)
    os.remove(dst + ".fp32.onnx")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    quantize_static(pre, dst, _Reader(images), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=methods[method])
    os.remove(pre)


def measure(path, characters_path, labels, images, seconds=5.0):
    from edge.config.model import ModelConfig, RecognizerConfig
    from edge.recognize.recognizer import Recognizer

    rec = Recognizer.from_config(ModelConfig(path=path, characters=characters_path, plate_format=""),
                                 RecognizerConfig())
    reads = []
    for i in range(0, len(images), 16):
        reads += [r.text for r in rec.read(images[i:i + 16])]
    batch = images[:16]
    rec.read(batch)
    n, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        rec.read(batch)
        n += len(batch)
    rec.close()
    return {"plate_accuracy": round(sum(a == b for a, b in zip(reads, labels)) / float(len(labels)), 4),
            "plates_per_s_batch16": round(n / (time.monotonic() - start), 1), "count": len(labels)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--region", choices=sorted(SETS), default="us")
    ap.add_argument("--method", choices=("entropy", "minmax", "percentile"), default="entropy")
    ap.add_argument("--out", default=None, help="folder for the INT8 file (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    name = "%s_lprnet_baseline10_mid" % args.region
    src = os.path.join(ROOT, "models", name + ".onnx")
    chars = os.path.join(ROOT, "models", "%s_lp_characters.txt" % args.region)
    normalize = {"O": "0"} if args.region == "us" else None
    _, calib = crops(args.region, "train", normalize)
    labels, images = crops(args.region, "eval", normalize)
    out = args.out or tempfile.mkdtemp(prefix="lpr-edge-int8-")
    os.makedirs(out, exist_ok=True)
    dst = os.path.join(out, name + ".int8.onnx")
    quantize(src, dst, calib, args.method)
    fp32 = measure(src, chars, labels, images)
    int8 = measure(dst, chars, labels, images)
    row = {"region": args.region, "method": args.method, "calibration_crops": len(calib), "fp32": fp32,
           "int8": int8, "speedup": round(int8["plates_per_s_batch16"] / fp32["plates_per_s_batch16"], 2),
           "accuracy_points_lost": round(100 * (fp32["plate_accuracy"] - int8["plate_accuracy"]), 2),
           "int8_file": dst}
    print("%s, %s calibration on %d train crops; %d evaluation crops, greedy reads:" % (
        args.region, args.method, len(calib), len(labels)))
    print("  FP32 %.2f%% at %.1f plates/s; INT8 %.2f%% at %.1f plates/s: %.2fx, %.2f points lost" % (
        100 * fp32["plate_accuracy"], fp32["plates_per_s_batch16"], 100 * int8["plate_accuracy"],
        int8["plates_per_s_batch16"], row["speedup"], row["accuracy_points_lost"]))
    if args.json:
        print(json.dumps(row, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
