"""`lpr-edge evaluate` on plate crops in the TAO layout."""
import json
import os

import cv2
import numpy as np

from edge.evaluate import confusions
from helpers import ROOT, run_cli
from onnx_models import make_lprnet_like


def make_dataset(root, labels):
    os.makedirs(os.path.join(root, "image"))
    os.makedirs(os.path.join(root, "label"))
    for i, text in enumerate(labels):
        cv2.imwrite(os.path.join(root, "image", "%03d.jpg" % i), np.full((24, 94, 3), 100 + i, np.uint8))
        with open(os.path.join(root, "label", "%03d.txt" % i), "w") as f:
            f.write(text + "\n")


def test_confusions_alignment():
    assert confusions("ABC123", "A8C123") == [("B", "8")]
    assert sorted(confusions("ABC123", "ABC12")) == [("3", "")]


def test_evaluate_json_last_line(tmp_path):
    model = make_lprnet_like(tmp_path / "m.onnx", force_class=3)  # reads "3" for every plate
    data = str(tmp_path / "set")
    make_dataset(data, ["3", "3", "33", "ABO"])  # ABO: O is not in the US list
    chars = os.path.join(ROOT, "models", "us_lp_characters.txt")
    result = run_cli("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["count"] == 3 and summary["plate_accuracy"] == round(2 / 3.0, 4)
    assert summary["char_accuracy"] == 0.75  # one missing character of four
    assert summary["skipped"] == 1 and "not in the list" in summary["skipped_reasons"]
    result = run_cli("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars, "--json",
                     "--normalize", "O=0")
    assert json.loads(result.stdout.strip().splitlines()[-1])["count"] == 4


def test_evaluate_bad_data_folder(tmp_path):
    model = make_lprnet_like(tmp_path / "m.onnx")
    chars = os.path.join(ROOT, "models", "us_lp_characters.txt")
    result = run_cli("evaluate", "--model", model, "--data", str(tmp_path / "nothing"), "--characters", chars)
    assert result.returncode == 2 and "no plate dataset" in result.stderr


def test_bench_runs_and_reports_ratios(tmp_path):
    model = make_lprnet_like(tmp_path / "m.onnx")
    chars = os.path.join(ROOT, "models", "us_lp_characters.txt")
    result = run_cli("bench", "--model", model, "--characters", chars, "--batch", "1,4", "--seconds", "0.2", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout.strip().splitlines()[-1])["rows"]
    assert [r["batch"] for r in rows] == [1, 4] and rows[0]["speedup_vs_first"] == 1.0


def test_contact_sheet_of_misreads(tmp_path):
    model = make_lprnet_like(tmp_path / "m.onnx", force_class=3)  # reads "3" for every plate
    data = str(tmp_path / "set")
    make_dataset(data, ["3", "AB1", "33", "C9"])  # three misreads
    chars = os.path.join(ROOT, "models", "us_lp_characters.txt")
    sheet = str(tmp_path / "errors.png")
    result = run_cli("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars,
                     "--contact-sheet", sheet)
    assert result.returncode == 0, result.stderr
    assert "3 of 3 misreads" in result.stdout
    image = cv2.imread(sheet)
    assert image.shape == (96 + 40, 6 * 192, 3)  # one row of cells: crop enlarged, truth and read under it
    assert image[:96, :3 * 192].std() > 0 and (image[:96, 3 * 192:] == 255).all()  # three crops, then blank
    bad = run_cli("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars,
                  "--contact-sheet", str(tmp_path / "no" / "such" / "dir.png"))
    assert bad.returncode == 2 and "--contact-sheet" in bad.stderr and "Traceback" not in bad.stderr
