"""The fixed three-way splits of the real crop sets (configs/training/splits/, scripts/make_splits.py)."""
import io
import os
import subprocess
import sys

import pytest

from helpers import ROOT

SPLITS = os.path.join(ROOT, "configs", "training", "splits")
REAL = os.path.join(ROOT, "..", "shared", "data", "real")
needs_data = pytest.mark.skipif(not os.path.isdir(REAL), reason="no ../shared/data/real here")


def ids(path):
    with io.open(path, encoding="utf-8") as f:
        return [line.split("#", 1)[0].strip() for line in f if line.split("#", 1)[0].strip()]


@needs_data
def test_the_split_files_are_what_the_rules_give():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_splits.py"), "--check"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert result.returncode == 0, result.stderr


@needs_data
def test_every_set_has_three_parts_and_no_text_straddles_them():
    for region in sorted(os.listdir(REAL)):
        if not os.path.isdir(os.path.join(REAL, region)):
            continue
        part_of_text = {}
        for set_name in sorted(os.listdir(os.path.join(REAL, region))):
            label_dir = os.path.join(REAL, region, set_name, "label")
            if not os.path.isdir(label_dir):
                continue
            seen = []
            for part in ("train", "val", "eval"):
                part_ids = ids(os.path.join(SPLITS, "%s_%s_%s.txt" % (region, set_name, part)))
                assert part_ids, (region, set_name, part)
                for i in part_ids:
                    with io.open(os.path.join(label_dir, i + ".txt"), encoding="utf-8") as f:
                        text = f.read().strip()
                    assert part_of_text.setdefault(text, part) == part, (region, set_name, i, text)
                seen += part_ids
            assert sorted(seen) == sorted(n[:-4] for n in os.listdir(label_dir) if n.endswith(".txt"))


def test_earlier_models_history_is_kept():
    """What the 2026-11-24 models were fine-tuned on stays train; what chose their epoch is never train."""
    legacy = os.path.join(SPLITS, "legacy")
    for region, name in (("us", "openalpr_seg_and_ocr"), ("ch", "lprnet_pytorch_test")):
        train = set(ids(os.path.join(SPLITS, "%s_%s_train.txt" % (region, name))))
        held = set(ids(os.path.join(legacy, "%s_%s_eval.txt" % (region, name))))
        assert set(ids(os.path.join(legacy, "%s_%s_finetune.txt" % (region, name)))) <= train
        evaluation = set(ids(os.path.join(SPLITS, "%s_%s_eval.txt" % (region, name))))
        assert evaluation <= held and not (evaluation & train)
