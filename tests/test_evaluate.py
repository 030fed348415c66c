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
    for name in os.listdir(os.path.join(data, "image")):  # crops with texture, so that a cut shows
        noise = np.random.default_rng(len(name)).integers(0, 255, (24, 94, 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(data, "image", name), noise)
    chars = os.path.join(ROOT, "models", "us_lp_characters.txt")
    sheet = str(tmp_path / "errors.png")
    result = run_cli("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars,
                     "--contact-sheet", sheet)
    assert result.returncode == 0, result.stderr
    assert "3 of 3 misreads" in result.stdout
    image = cv2.imread(sheet)
    assert image.shape == (96 + 40, 6 * 192, 3)  # one row of cells: crop enlarged, truth and read under it
    assert image[:96, :3 * 192].std() > 0 and (image[:96, 3 * 192:] == 255).all()  # three crops, then blank
    cut = str(tmp_path / "cut.png")  # --crops detector: the cells show the crops as the model read them
    assert run_cli("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars, "--crops",
                   "detector", "--contact-sheet", cut).returncode == 0
    assert cv2.imread(cut).shape == image.shape and not np.array_equal(cv2.imread(cut), image)
    bad = run_cli("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars,
                  "--contact-sheet", str(tmp_path / "no" / "such" / "dir.png"))
    assert bad.returncode == 2 and "--contact-sheet" in bad.stderr and "Traceback" not in bad.stderr


def test_per_set_counts_several_split_files_and_detector_crops(tmp_path):
    """--only-ids may name one file per set; the result counts each set; --crops detector cuts every crop
    as a detector's box would, the same way in every run."""
    model = make_lprnet_like(tmp_path / "m.onnx", force_class=3)
    make_dataset(str(tmp_path / "a"), ["3", "3", "4"])
    make_dataset(str(tmp_path / "b"), ["3", "5"])
    os.rename(str(tmp_path / "b" / "image" / "000.jpg"), str(tmp_path / "b" / "image" / "b0.jpg"))
    os.rename(str(tmp_path / "b" / "label" / "000.txt"), str(tmp_path / "b" / "label" / "b0.txt"))
    (tmp_path / "a.txt").write_text("000\n002\n")
    (tmp_path / "b.txt").write_text("# comment\nb0\n")
    chars = os.path.join(ROOT, "models", "us_lp_characters.txt")
    args = ("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars, "--json",
            "--only-ids", str(tmp_path / "a.txt"), "--only-ids", str(tmp_path / "b.txt"))
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["count"] == 3 and summary["crops"] == "tight"
    assert summary["per_set"] == {
        "a": {"count": 2, "correct": 1, "plate_accuracy": 0.5, "confusions": [{"truth": "4", "read": "3", "count": 1}]},
        "b": {"count": 1, "correct": 1, "plate_accuracy": 1.0, "confusions": []}}
    assert "per set: a 50.00% (1/2), b 100.00% (1/1)" in result.stdout
    result = run_cli(*(args + ("--crops", "detector")))
    assert result.returncode == 0 and json.loads(result.stdout.strip().splitlines()[-1])["crops"] == "detector"
    assert run_cli(*(args + ("--crops", "loose"))).returncode == 2
    missing = run_cli("evaluate", "--model", model, "--data", str(tmp_path), "--characters", chars,
                      "--only-ids", str(tmp_path / "no-such-split.txt"))
    assert missing.returncode == 2 and "no-such-split.txt" in missing.stderr and "Traceback" not in missing.stderr


def test_detector_crop_is_jittered_the_same_each_run():
    from edge.evaluate import DETECTOR_HEIGHTS, detector_crop

    plate = np.zeros((150, 320, 3), np.uint8)
    plate[30:120, 40:280] = 255
    a, b, c = detector_crop(plate, "0001"), detector_crop(plate, "0001"), detector_crop(plate, "0002")
    assert np.array_equal(a, b) and (a.shape != c.shape or not np.array_equal(a, c))
    for key in ("%04d" % i for i in range(50)):
        crop = detector_crop(plate, key)
        assert DETECTOR_HEIGHTS[0] <= crop.shape[0] < DETECTOR_HEIGHTS[1] and crop.flags["C_CONTIGUOUS"]
        assert 1.5 < crop.shape[1] / float(crop.shape[0]) < 2.9  # the plate's aspect, give or take the jitter
    small = np.full((12, 30, 3), 80, np.uint8)  # already smaller than a detector sees: not downscaled further
    assert detector_crop(small, "x").shape[0] >= 12 - 2
