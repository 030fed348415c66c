#!/usr/bin/env python3
"""The benchmark report for the README: runs `lpr-edge bench model` (recognizer, and the detector when one
is given) and `lpr-edge bench pipeline` in one go, writes the JSON of each, PNG plots (throughput against
batch size; latency and CPU against camera count) and prints the markdown tables with the date and machine.

    .venv/bin/python scripts/bench_report.py --out docs/bench [--detector models/X.onnx] [--cameras 1,2,4]
    .venv/bin/python scripts/bench_report.py --out docs/bench --from-json docs/bench   # plots and tables again
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
LPR_EDGE = os.path.join(ROOT, ".venv", "bin", "lpr-edge")
US_MODEL = os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")


def run_json(args):
    out = subprocess.run([LPR_EDGE] + args + ["--json"], cwd=ROOT, stdout=subprocess.PIPE, universal_newlines=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args):
    results = {"model": run_json(["bench", "model", "--model", US_MODEL, "--batch", args.batch, "--seconds",
                                  str(args.seconds)])}
    if args.detector:
        results["detector"] = run_json(["bench", "detector", "--model", args.detector, "--batch", "1,8",
                                        "--seconds", str(args.seconds)])
    results["pipeline"] = run_json(["bench", "pipeline", "--cameras", args.cameras, "--seconds",
                                    str(args.pipeline_seconds)] + (["--fps", str(args.fps)] if args.fps else []))
    return results


def plot(results, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    rows = results["model"]["rows"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["batch"] for r in rows], [r["plates_per_s"] for r in rows], "o-", label="recognizer (plates/s)")
    if "detector" in results:
        drows = results["detector"]["rows"]
        ax.plot([r["batch"] for r in drows], [r["frames_per_s"] for r in drows], "s-", label="detector (frames/s)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("per second")
    ax.set_title("throughput against batch size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "throughput-batch.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    runs = results["pipeline"]["runs"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    cams = [r["cameras"] for r in runs]
    ax.plot(cams, [r["latency_ms_p50"] for r in runs], "o-", label="latency p50 (ms)")
    ax.plot(cams, [r["latency_ms_p99"] for r in runs], "o--", label="latency p99 (ms)")
    ax.plot(cams, [r["cpu_percent"] for r in runs], "s-", label="CPU (% of one core)")
    ax.set_xlabel("cameras")
    ax.set_xticks(cams)
    ax.set_title("pipeline, mode %s" % results["pipeline"]["mode"])
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "pipeline-cameras.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def tables(results):
    machine = results["pipeline"]["machine"]
    lines = ["Measured %s on %s (%d cores), ONNX Runtime CPU." % (results["pipeline"]["date"], machine["cpu"],
                                                                 machine["cores"]), ""]
    lines += ["| batch | plates/s | p50 ms | p99 ms | GFLOP/s | of the plain 3x3 conv |", "|---:|---:|---:|---:|---:|---:|"]
    for r in results["model"]["rows"]:
        lines.append("| %d | %.1f | %.1f | %.1f | %s | %s |" % (
            r["batch"], r["plates_per_s"], r["latency_ms_p50"], r["latency_ms_p99"],
            "%.1f" % r["gflops"] if r.get("gflops") else "-",
            "%.0f%%" % (100 * r["vs_conv3x3"]) if r.get("vs_conv3x3") else "-"))
    if "detector" in results:
        lines += ["", "| detector batch | frames/s | p50 ms | p99 ms |", "|---:|---:|---:|---:|"]
        for r in results["detector"]["rows"]:
            lines.append("| %d | %.1f | %.1f | %.1f |" % (r["batch"], r["frames_per_s"], r["latency_ms_p50"],
                                                         r["latency_ms_p99"]))
    lines += ["", "| cameras | fps/camera | dropped | events | latency p50 ms | p99 ms | CPU % | RSS MB | overhead |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["pipeline"]["runs"]:
        lines.append("| %d | %.1f | %d | %d | %s | %s | %.0f | %.0f | %s |" % (
            r["cameras"], r["fps_per_camera"], r["frames_dropped"], r["events"], r["latency_ms_p50"],
            r["latency_ms_p99"], r["cpu_percent"], r["rss_mb"],
            "%.0f%%" % (100 * r["overhead"]) if r["overhead"] is not None else "-"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the JSON and the PNG plots")
    parser.add_argument("--from-json", metavar="DIR", help="plot and tabulate an earlier run's results.json")
    parser.add_argument("--detector", help="also bench this detector ONNX")
    parser.add_argument("--batch", default="1,4,8,16,32,64")
    parser.add_argument("--cameras", default="1,2,4")
    parser.add_argument("--fps", type=float, help="each pipeline camera's frame rate (the sample re-timed)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    parser.add_argument("--pipeline-seconds", type=float, default=20.0, help="per camera count")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.from_json:
        with open(os.path.join(args.from_json, "results.json")) as f:
            results = json.load(f)
    else:
        results = measure(args)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    for path in plot(results, args.out):
        print("wrote %s" % os.path.relpath(path, ROOT))
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
