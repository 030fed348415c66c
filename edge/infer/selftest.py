"""Plates per second of TensorRT engines on this device, beside NVIDIA's published LPRNet figures, written as
JSON and markdown (scripts/jetson-selftest.sh runs it; the README takes the markdown).

    python -m edge.infer.selftest --out selftest/ [--engine-dir DIR] [--seconds 3] [MODEL.onnx ...]

Inference only (host -> device copy, execute, device -> host copy), as NVIDIA's trtexec figures are; the
engine is built (or reused) for FP16 with a batch profile of 1 / 64 / 128. Models: the shipped models/*.onnx
and any given, e.g. NVIDIA's us_lprnet_baseline18_deployable.onnx, which the published figures are for.
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np

from edge import resources
from edge.infer.base import BackendUnavailable, InferOptions, ModelError
from edge.infer.engine_cache import atomic_write

BATCHES = (1, 8, 16, 32, 64, 128)
# NGC LPRNet model card, trtexec FP16, inference only, baseline18: (plates/s, at batch)
PUBLISHED = {"nano": (16, 32), "xavier-nx": (600, 32), "agx-xavier": (1021, 64), "t4": (3821, 128)}


def published_for(device, gpu_name):
    if device.module in PUBLISHED:
        return PUBLISHED[device.module]
    if gpu_name and "T4" in gpu_name.split():
        return PUBLISHED["t4"]
    return None


def measure(session, batch, seconds):
    spec = session.inputs[0]
    feed = np.random.RandomState(0).rand(*((batch,) + tuple(spec.shape[1:]))).astype(np.float32)
    session.run({spec.name: feed})  # warm-up
    runs, start = 0, time.monotonic()
    while time.monotonic() - start < seconds or runs < 3:
        session.run({spec.name: feed})
        runs += 1
    elapsed = time.monotonic() - start
    return {"batch": batch, "plates_per_s": round(batch * runs / elapsed, 1), "batch_ms": round(1e3 * elapsed / runs, 3)}


def run_model(path, options, seconds):
    from edge.infer.tensorrt_backend import TensorRTSession

    session = TensorRTSession(path, options)
    try:
        rows = [measure(session, b, seconds) for b in BATCHES if b <= session.max_batch]
        return {"model": os.path.basename(path), "engine": session.record["parts"], "built": session.record["built"],
                "build_seconds": session.record["build_seconds"], "rows": rows,
                "gpu": session.gpu_name, "compute_capability": session.compute_capability}
    finally:
        session.close()


def markdown(report):
    dev = report["device"]
    pub = report["published"]
    lines = ["### TensorRT on %s" % (dev.get("module_name") or report.get("gpu") or dev["kind"]), "",
             "%s, L4T %s, TensorRT %s, FP16, inference only (lpr-edge selftest, %s)." % (
                 report.get("gpu"), dev.get("l4t") or "-", report.get("tensorrt"), report["date"]), ""]
    header = "| model | " + " | ".join("batch %d" % b for b in BATCHES) + " | NVIDIA baseline18 |"
    lines += [header, "|" + "---|" * (len(BATCHES) + 2)]
    for result in report["models"]:
        if "error" in result:
            lines.append("| %s | %s |" % (result["model"], result["error"]))
            continue
        by_batch = {r["batch"]: r["plates_per_s"] for r in result["rows"]}
        cells = ["%.0f" % by_batch[b] if b in by_batch else "-" for b in BATCHES]
        lines.append("| %s | %s | %s |" % (result["model"], " | ".join(cells),
                                          "%d @ %d" % tuple(pub) if pub else "none published"))
    return "\n".join(lines) + "\n"


def main(argv=None):
    from edge.infer.device import detect

    parser = argparse.ArgumentParser(prog="python -m edge.infer.selftest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="extra ONNX models (e.g. NVIDIA's baseline18 deployable)")
    parser.add_argument("--out", default="selftest", help="folder for selftest.json and selftest.md")
    parser.add_argument("--engine-dir", default=None, help="engine cache (default: <out>/engines)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per batch size")
    parser.add_argument("--models-dir", help="the shipped models' folder (default: the package's models/)")
    parser.add_argument("--workspace-mb", type=int, default=None, help="default: the device profile's")
    args = parser.parse_args(argv)
    device = detect()
    from edge.config import load_profile

    profile = load_profile(device.profile)["recognizer"]
    options = InferOptions(precision="fp16", max_batch=max(BATCHES), opt_batch=64,
                           workspace_mb=args.workspace_mb or profile.get("workspace_mb", 512),
                           engine_dir=args.engine_dir or os.path.join(args.out, "engines"))
    shipped = sorted(p for p in glob.glob(os.path.join(args.models_dir or _models_dir(), "*.onnx"))
                     if not p.endswith(".fp16.onnx"))
    report = {"device": device.as_dict(), "date": time.strftime("%Y-%m-%d"), "models": []}
    for path in shipped + list(args.models):
        try:
            result = run_model(path, options, args.seconds)
        except (BackendUnavailable, ModelError) as exc:
            print("selftest: %s: %s" % (os.path.basename(path), exc), file=sys.stderr)
            result = {"model": os.path.basename(path), "error": str(exc).splitlines()[0]}
        report["models"].append(result)
        for row in result.get("rows", []):
            print("%-40s batch %3d: %8.1f plates/s (%.2f ms)" % (result["model"], row["batch"], row["plates_per_s"],
                                                               row["batch_ms"]))
    ok = [m for m in report["models"] if "rows" in m]
    report["gpu"] = ok[0]["gpu"] if ok else None
    report["tensorrt"] = ok[0]["engine"]["tensorrt"] if ok else None
    report["published"] = published_for(device, report["gpu"])
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "selftest.json"), json.dumps(report, indent=1, sort_keys=True).encode("utf-8"),
                 0o644)
    atomic_write(os.path.join(args.out, "selftest.md"), markdown(report).encode("utf-8"), 0o644)
    print(markdown(report))
    return 0 if ok else 1


def _models_dir():
    try:
        return resources.find_data("models")
    except IOError:
        return "models"


if __name__ == "__main__":
    sys.exit(main())
