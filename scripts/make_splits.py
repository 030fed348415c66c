#!/usr/bin/env python3
"""Write the three fixed parts of every real crop set in ../shared/data/real into configs/training/splits/:
<region>_<set>_train.txt (trained on), _val.txt (picks epochs, runs, recipes) and _eval.txt (measured once per
shipped model, for the manifest; `make evaluate` reads only these).

Rules, so that no plate text straddles two parts and the split never moves:
- A plate text lives in one part only, across all sets of a region (EasyPR's HasPlate has several crops of
  one plate; a text may appear in two sets).
- The sets the models of 2026-11-24 were fine-tuned on keep that history: their fine-tune half stays `train`
  (the shipped weights have seen it), and their former held-out half, which chose those models' epoch, is cut
  in two, alternately (sorted by id), into `val` and `eval`.
- Every other set: the text's SHA-1 picks the part, 70% train, 15% val, 15% eval.

Run: python3 scripts/make_splits.py [--data ../shared/data/real] [--check] (--check: exit 1 when the files
on disk differ from what the rules give)."""
import argparse
import hashlib
import io
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SPLITS = os.path.join(ROOT, "configs", "training", "splits")
PARTS = ("train", "val", "eval")
# (region, set) -> (fine-tune list, former held-out list) of the 2026-11-24 models
HISTORY = {
    ("us", "openalpr_seg_and_ocr"): ("us_openalpr_seg_and_ocr_finetune.txt", "us_openalpr_seg_and_ocr_eval.txt"),
    ("ch", "lprnet_pytorch_test"): ("ch_lprnet_pytorch_test_finetune.txt", "ch_lprnet_pytorch_test_eval.txt"),
}
LEGACY_DIR = os.path.join(SPLITS, "legacy")


def read_ids(path):
    with io.open(path, encoding="utf-8") as f:
        return [line.split("#", 1)[0].strip() for line in f if line.split("#", 1)[0].strip()]


def read_labels(set_dir):
    out = {}
    label_dir = os.path.join(set_dir, "label")
    for name in sorted(os.listdir(label_dir)):
        if name.endswith(".txt"):
            with io.open(os.path.join(label_dir, name), encoding="utf-8") as f:
                out[name[:-4]] = f.read().strip()
    return out


def hashed_part(text):
    bucket = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 100
    return "train" if bucket < 70 else ("val" if bucket < 85 else "eval")


def assign(data_root):
    """{(region, set): {part: [ids]}}"""
    result = {}
    for region in sorted(os.listdir(data_root)):
        region_dir = os.path.join(data_root, region)
        if not os.path.isdir(region_dir):
            continue
        sets = sorted(s for s in os.listdir(region_dir) if os.path.isdir(os.path.join(region_dir, s, "label")))
        labels = dict((s, read_labels(os.path.join(region_dir, s))) for s in sets)
        text_part = {}
        # history first: those texts are fixed by what the earlier models saw
        for s in sets:
            if (region, s) not in HISTORY:
                continue
            finetune, held = (read_ids(os.path.join(LEGACY_DIR, f)) for f in HISTORY[(region, s)])
            for i in finetune:
                text_part.setdefault(labels[s][i], "train")
            alternate = 0
            for i in sorted(held):
                text = labels[s][i]
                if text not in text_part:
                    text_part[text] = ("val", "eval")[alternate % 2]
                    alternate += 1
        for s in sets:
            parts = dict((p, []) for p in PARTS)
            for i, text in sorted(labels[s].items()):
                part = text_part.setdefault(text, hashed_part(text))
                parts[part].append(i)
            result[(region, s)] = parts
    return result


def render(region, set_name, part, ids, data_root):
    head = ("# %s part of ../shared/data/real/%s/%s (%d crops); written by scripts/make_splits.py, see its rules\n"
            % (part, region, set_name, len(ids)))
    return head + "".join(i + "\n" for i in ids)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "real"))
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.data):
        print("error: --data %s: no such folder" % args.data, file=sys.stderr)
        return 2
    stale = []
    for (region, s), parts in sorted(assign(args.data).items()):
        for part in PARTS:
            path = os.path.join(SPLITS, "%s_%s_%s.txt" % (region, s, part))
            text = render(region, s, part, parts[part], args.data)
            old = io.open(path, encoding="utf-8").read() if os.path.exists(path) else None
            if old == text:
                continue
            stale.append(path)
            if not args.check:
                with io.open(path + ".part", "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(path + ".part", path)
        print("%s/%s: %s" % (region, s, ", ".join("%s %d" % (p, len(parts[p])) for p in PARTS)))
    if args.check and stale:
        print("stale: %s" % ", ".join(os.path.relpath(p, ROOT) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
