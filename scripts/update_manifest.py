#!/usr/bin/env python3
"""Write models/manifest.yaml from the models in models/: sha256, I/O contract, recipe, data provenance,
and accuracy measured here with `lpr-edge evaluate`: on the validation parts of ../shared/data/real (what
picked the epoch) and, once per shipped model, on the evaluation parts (configs/training/splits/*_eval.txt:
never trained on, chose nothing), both on tight crops and as a detector cuts them, with per-set figures and
the most frequent confusions. Run after `make finetune-us` / `make finetune-ch`.

    .venv/bin/python scripts/update_manifest.py [--skip-eval] [--regions us,ch] [--runs DIR]
"""
import argparse
import datetime
import io
import json
import os
import subprocess
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)
from edge.recognize.model import sha256_file  # noqa: E402

REAL = os.path.join(ROOT, "..", "shared", "data", "real")
CH_PROVINCES = "皖沪津渝冀晋蒙辽吉黑苏浙京闽赣鲁豫鄂湘粤桂琼川贵云藏陕甘青宁新"
# Chinese plates (GA 36-2018): a province, a letter, then five letters or digits (the last may be 警 or 学);
# new-energy plates have six: D/F-type letter first (small cars) or last (large cars). US plates vary too
# much by state and vanity plates to hold reads to one format.
CH_PLATE_FORMAT = ("[{p}][A-HJ-NP-Z][A-HJ-NP-Z0-9]{{4}}[A-HJ-NP-Z0-9警学]|[{p}][A-HJ-NP-Z][A-HJK][A-HJ-NP-Z0-9]\\d{{4}}"
                   "|[{p}][A-HJ-NP-Z]\\d{{5}}[A-HJK]").format(p=CH_PROVINCES)
TRAINED_ON = ("pretrained on one NVIDIA H100 (PyTorch, CUDA, TF32; 2026-11-24); fine-tuned on this 2-core CPU "
              "from the shipped ONNX's own weights")
SPLITS = "configs/training/splits"
MODELS = {
    "us": {"name": "us_lprnet_baseline10_mid", "characters": "us_lp_characters.txt",
           "sets": ["openalpr_seg_and_ocr"], "extra_train": ["br/openalpr_train_detector"], "normalize": ["O=0"],
           "pretrain": "configs/training/us_mid.yaml", "finetune": "configs/training/us_mid_finetune.yaml"},
    "ch": {"name": "ch_lprnet_baseline10_mid", "characters": "ch_lp_characters.txt",
           "sets": ["lprnet_pytorch_test", "easypr_general_test", "easypr_svm_hasplate", "ccpd_samples"],
           "extra_train": [], "normalize": [], "pretrain": "configs/training/ch_mid.yaml",
           "finetune": "configs/training/ch_mid_finetune.yaml", "plate_format": CH_PLATE_FORMAT},
}


def evaluate(region, info, part, crops="tight"):
    """`lpr-edge evaluate` of the shipped model on one part of every set of its region."""
    splits = ["%s/%s_%s_%s.txt" % (SPLITS, region, s, part) for s in info["sets"]]
    # the arguments in the order the Makefile's evaluate target gives them (a test holds the two together)
    cmd = [os.path.join(ROOT, ".venv", "bin", "lpr-edge"), "evaluate", "--model", "models/%s.onnx" % info["name"],
           "--characters", "models/%s" % info["characters"], "--data", "../shared/data/real/%s" % region]
    for n in info["normalize"]:
        cmd += ["--normalize", n]
    cmd += ["--crops", crops]
    for split in splits:
        cmd += ["--only-ids", split]
    result = _run_json(cmd)
    greedy = {}
    if info.get("plate_format") and crops == "tight":  # the same model without its plate format, for comparison
        greedy = {"plate_accuracy_greedy": _run_json(cmd + ["--plate-format", "none"])["plate_accuracy"]}
    return dict({
        "plate_accuracy": result["plate_accuracy"], "char_accuracy": result["char_accuracy"],
        "count": result["count"], "skipped": result["skipped"],
        "per_set": dict((name, dict(v, confusions=["%s->%s x%d" % (c["truth"], c["read"], c["count"])
                                                   for c in v["confusions"]]))
                        for name, v in result["per_set"].items()),
        "confusions": ["%s->%s x%d" % (c["truth"], c["read"], c["count"]) for c in result["confusions"]],
        "command": " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd),
        "make": "make evaluate" if part == "eval" else "make evaluate-val",
        "measured": datetime.date.today().isoformat(),
    }, **greedy)


def accuracy_block(region, info, part):
    what = {"eval": "evaluation parts (never trained on, chose nothing for this model, measured once for it; the parts "
                    "cut from a former held-out half once helped pick the epoch of the weights it starts from)",
            "val": "validation parts (picked the epoch: optimistic)"}[part]
    return {"data": "../shared/data/real/%s, the %s: %s" % (region, what, ", ".join(
                "%s/%s_%s_%s.txt" % (SPLITS, region, s, part) for s in info["sets"])),
            "tight_crops": evaluate(region, info, part),
            "detector_crops": dict(evaluate(region, info, part, "detector"),
                                   note="each crop cut as a detector's box would: sides jittered up to 8%, 5% "
                                        "margin, seen 18-40 px high (lpr-edge evaluate --crops detector)")}


def _run_json(cmd):
    out = subprocess.run(cmd + ["--json"], cwd=ROOT, stdout=subprocess.PIPE, universal_newlines=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def history(region, info, runs):
    path = os.path.join(runs, "%s_finetune" % region, "history.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--regions", default="us,ch", help="the entries to write again (others are kept)")
    parser.add_argument("--runs", default=os.path.expanduser("~/.cache/lpr-edge/runs"),
                        help="where make finetune-<region> left its runs (the history of the epochs)")
    args = parser.parse_args()
    path = os.path.join(ROOT, "models", "manifest.yaml")
    manifest = {}
    if os.path.exists(path):
        with io.open(path, encoding="utf-8") as f:
            manifest = yaml.safe_load(f) or {}
    manifest["schema"] = 1
    manifest.setdefault("default", {})
    models = manifest.setdefault("models", {})
    for name in list(models):  # entries whose file is no longer shipped
        if not os.path.exists(os.path.join(ROOT, "models", models[name].get("file", name + ".onnx"))):
            del models[name]
    for region, info in MODELS.items():
        if region not in args.regions.split(","):
            continue
        file = "models/%s.onnx" % info["name"]
        if not os.path.exists(os.path.join(ROOT, file)):
            print("skip %s: %s not built" % (region, file))
            continue
        spec = yaml.safe_load(open(os.path.join(ROOT, info["pretrain"])))
        entry = models.get(info["name"], {})
        entry.update({
            "file": os.path.basename(file),
            "region": region,
            "characters": info["characters"],
            "version": datetime.date.today().strftime("%Y.%m.%d"),
            "sha256": sha256_file(os.path.join(ROOT, file)),
            "size_bytes": os.path.getsize(os.path.join(ROOT, file)),
            "contract": {"input": "image_input float32 [N,3,48,96] RGB in [0,1] (stretch resize)",
                         "outputs": ["tf_op_layer_ArgMax int64 [N,24]", "tf_op_layer_Max float32 [N,24]",
                                     "class_probs float32 [N,24,classes] (lpr-edge's addition)"],
                         "blank": "last class = len(characters)",
                         "decoding": "greedy CTC; with a plate_format, a read that does not fit is decoded again "
                                     "as the most probable CTC path that fits" if info.get("plate_format")
                                     else "greedy CTC"},
            "architecture": {"arch": "baseline", "nlayers": spec["lpr_config"]["nlayers"],
                             "width": spec["lpr_config"]["width"], "hidden_units": spec["lpr_config"]["hidden_units"],
                             "note": "NVIDIA's baseline10 with channels x%s and a %d-unit LSTM"
                                     % (spec["lpr_config"]["width"], spec["lpr_config"]["hidden_units"])},
            "recipe": {"pretrain": "%s (synthetic plates only; make train-%s)" % (info["pretrain"], region),
                       "finetune": "%s (make finetune-%s)" % (info["finetune"], region),
                       "trained_on": TRAINED_ON},
            "data": {"synthetic": "edge/training/synth.py, fonts from Debian fonts-dejavu-core, fonts-liberation, "
                                  "fonts-wqy-microhei",
                     "real_train": ["../shared/data/real/%s/%s, ids in %s/%s_%s_train.txt" % (region, s, SPLITS, region, s)
                                    for s in info["sets"]] +
                                   ["../shared/data/real/%s, ids in %s/%s_train.txt" % (s, SPLITS, s.replace("/", "_"))
                                    for s in info["extra_train"]],
                     "splits": "scripts/make_splits.py: a plate text in one part only; train / val (picks epochs and "
                               "recipes) / eval (measured once per shipped model)",
                     "licenses": "see ../shared/data/real/README.md: OpenALPR benchmarks and train-detector AGPL-3.0, "
                                 "LPRNet_Pytorch and EasyPR Apache-2.0, CCPD MIT"},
        })
        entry.pop("plate_format", None)
        if info.get("plate_format"):
            entry["plate_format"] = info["plate_format"]
        models[info["name"]] = entry
        manifest["default"][region] = info["name"]
        write(path, manifest)  # the new sha256 first: the model is refused at load while the manifest disagrees
        hist = history(region, info, args.runs)
        if hist:
            entry["finetune_history"] = [{"epoch": h["epoch"], "loss": round(h["loss"], 4),
                                          "val_plate_accuracy": round(h["val_plate_accuracy"], 4)} for h in hist]
            entry.pop("training_history", None)
            picked, best = None, -1.0  # the export: the first epoch best on the val parts, as train.py picks it
            for h in hist:
                if h["val_plate_accuracy"] == h["val_plate_accuracy"] and h["val_plate_accuracy"] > best:
                    picked, best = h["epoch"], h["val_plate_accuracy"]
            entry["finetune_picked_epoch"] = picked
        if not args.skip_eval and os.path.isdir(REAL):
            entry["validation"] = accuracy_block(region, info, "val")
            entry["accuracy"] = accuracy_block(region, info, "eval")
            for key in ("tight_crops", "detector_crops"):
                acc = entry["accuracy"][key]
                print("%s, %s: plate %.4f char %.4f on %d evaluation plates" % (
                    region, key, acc["plate_accuracy"], acc["char_accuracy"], acc["count"]))
    write(path, manifest)
    print("wrote %s" % path)


def write(path, manifest):
    with io.open(path + ".part", "w", encoding="utf-8") as f:
        f.write("# Shipped models (LPRNet recognizers; plate detectors under detectors:, kept as they are here).\n"
                "# Written by scripts/update_manifest.py; accuracy measured by the command given with it. A model\n"
                "# whose sha256 differs from its entry is refused at load.\n")
        yaml.safe_dump(manifest, f, allow_unicode=True, sort_keys=False, width=110)
    os.replace(path + ".part", path)


if __name__ == "__main__":
    main()
