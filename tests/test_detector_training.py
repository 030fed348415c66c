"""The plate detector's training (lpr-edge-train detect): the grouped split, DetectNet_v2 targets that decode
back through the runtime's decoder, the metrics, and a tiny spec that trains a few steps on a handful of real
scenes, resumes from its checkpoint and exports an ONNX with the contract the runtime recognises."""
import json
import os

import numpy as np
import pytest

from helpers import ROOT

import torch  # noqa: E402,F401 - the train extra; make test installs it, so a missing torch fails here

from edge.detect.contracts import DETECTNET_V2, decode_detectnet, recognise  # noqa: E402
from edge.training.cli import main as train_main  # noqa: E402
from edge.training.detect import data as D  # noqa: E402
from edge.training.detect.targets import make_targets, metrics  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "detect")
SPLITS = os.path.join(ROOT, "configs", "training", "splits")
needs_data = pytest.mark.skipif(not os.path.isdir(DATA), reason="needs ../shared/data/detect")


@pytest.mark.parametrize("box", [[100.3, 60.2, 180.9, 84.7], [5, 3, 30, 12], [300, 200, 500, 280],
                                 [240.5, 120.5, 260.1, 127.9]])
def test_targets_round_trip_through_the_runtime_decoder(box):
    """A box encoded into a target grid decodes (decode_detectnet) back to itself within 1 px."""
    cov, weight, bbox = make_targets(np.array([box], np.float32), [], 288, 512, shrink=0.5)
    assert cov.shape == (1, 18, 32) and bbox.shape == (4, 18, 32) and cov.sum() >= 1
    assert (weight[cov > 0] == 1).all()
    boxes = decode_detectnet(cov, bbox, 288, 512, 0.5, 0.3)
    assert len(boxes) == 1 and np.abs(boxes[0, :4] - np.clip(box, 0, [512, 288, 512, 288])).max() < 1.0


def test_two_boxes_and_dont_care():
    a, b = [40, 40, 120, 70], [300, 150, 340, 165]
    tiny = [200, 20, 204, 22]
    cov, weight, bbox = make_targets(np.array([a, b], np.float32), np.array([tiny], np.float32), 288, 512)
    boxes = decode_detectnet(cov, bbox, 288, 512, 0.5, 0.3)
    got = sorted(boxes[:, :4].round().tolist())
    assert got == sorted([a, b])
    assert weight[0, 1, 12] == 0  # the tiny plate's cell is left out of the loss
    assert weight[0, 10, 10] == 1 and cov[0, 10, 10] == 0  # background counts as negative


def test_metrics_ap_recall_precision():
    gts = np.array([[10, 10, 50, 30], [100, 100, 140, 120]], np.float32)
    dets = np.array([[11, 10, 50, 31, 0.9], [300, 10, 340, 30, 0.8], [100, 101, 141, 120, 0.4]], np.float32)
    m = metrics([(dets, gts, np.zeros((0, 4)))], threshold=0.5)
    assert m["recall"] == 0.5 and m["precision"] == 0.5
    assert abs(m["ap50"] - (0.5 * 1.0 + 0.5 * 2 / 3.0)) < 1e-6


def test_split_groups_roboflow_copies_and_video_frames():
    rows = [{"id": "abc_jpg.rf.%032x" % i, "group": "abc"} for i in range(3)] + \
           [{"id": "train_ride_1.mp4_t_%d" % t, "group": "train"} for t in (10, 12, 15, 100)] + \
           [{"id": "valid_ride_1.mp4_t_13", "group": "valid"}, {"id": "photo_7", "group": ""}]
    keys = D.group_keys("src", rows)
    assert len(set(keys["abc_jpg.rf.%032x" % i] for i in range(3))) == 1
    near = set(keys["train_ride_1.mp4_t_%d" % t] for t in (10, 12, 15)) | {keys["valid_ride_1.mp4_t_13"]}
    assert len(near) == 1 and keys["train_ride_1.mp4_t_100"] not in near
    assert keys["photo_7"] == "src/photo_7"


@needs_data
def test_committed_split_is_the_grouped_split():
    split = D.make_split(DATA)
    for name in D.SPLITS:
        assert D.read_ids(os.path.join(SPLITS, "detect_%s.txt" % name)) == split[name]
    assert not set(split["train"]) & set(split["val"]) and not set(split["train"]) & set(split["eval"])


TINY = """
random_seed: 5
model_name: tiny_lpd
model_config: {input_size: [128, 64], channels: [8, 8, 16, 16], blocks: [0, 0, 0, 1], dilations: [1]}
training_config: {batch_size: 4, num_epochs: 1, crop_size: [128, 64], max_steps: %d, threads: 1,
                  checkpoint_minutes: 60}
eval_config: {max_images: 6, min_box_px: [4, 2]}
dataset_config:
  path: %s
  splits: {train: %s, val: %s}
  max_train_scenes: 12
  synthetic_fraction: 0.5
  synthetic_pool: 6
"""


@needs_data
def test_tiny_training_resumes_and_exports_the_contract(tmp_path, capsys):
    import onnx

    from edge.infer.onnxruntime_backend import OnnxRuntimeSession

    def spec(steps):
        path = tmp_path / ("s%d.yaml" % steps)
        path.write_text(TINY % (steps, DATA, os.path.join(SPLITS, "detect_train.txt"),
                                os.path.join(SPLITS, "detect_val.txt")))
        return str(path)

    out = str(tmp_path / "run")
    assert train_main(["detect", "--spec", spec(2), "--output-dir", out, "--device", "cpu"]) == 0
    first = json.load(open(os.path.join(out, "history.json")))
    assert first[-1]["step"] == 2 and set(first[-1]["val"]) >= {"recall", "precision", "ap50"}
    onnx_path = str(tmp_path / "tiny.onnx")
    assert train_main(["detect", "--spec", spec(3), "--output-dir", out, "--device", "cpu", "--resume",
                       "--export", onnx_path]) == 0
    history = json.load(open(os.path.join(out, "history.json")))
    assert [h["step"] for h in history] == [2, 3]  # went on from step 2, history kept
    printed = capsys.readouterr().out
    assert "max abs difference" in printed and "the same" in printed
    session = OnnxRuntimeSession(onnx_path)
    contract = recognise(session.inputs, session.outputs)
    assert contract.kind == DETECTNET_V2 and (contract.input_h, contract.input_w) == (64, 128)
    assert contract.input_name == "input_1:0"
    assert contract.outputs == ("output_cov/Sigmoid:0", "output_bbox/BiasAdd:0")
    model = onnx.load(onnx_path)
    assert 11 <= model.opset_import[0].version <= 13
    batch = np.random.default_rng(0).random((3, 3, 64, 128), dtype=np.float32)
    cov, bbox = session.run({"input_1:0": batch}, list(contract.outputs))
    assert cov.shape == (3, 1, 4, 8) and bbox.shape == (3, 4, 4, 8) and 0 <= cov.min() and cov.max() <= 1


def test_giou_loss_is_zero_on_the_target_and_independent_of_plate_size():
    """The GIoU term reads the bbox planes as the runtime decoder does: a perfect box costs 0; the same
    relative error costs the same on a 20 px plate and a 200 px one (L1 on the planes grows with size)."""
    from edge.detect.contracts import encode_detectnet
    from edge.training.detect.train import _decoded, giou_loss

    def planes(box):
        return torch.from_numpy(encode_detectnet(np.array([box], np.float32), 18, 32, 288, 512))[None]

    small, big = [100, 100, 120, 106], [100, 100, 300, 160]
    for box in (small, big):
        t = planes(box)
        x1, y1, x2, y2 = (v[0, 5, 7].item() for v in _decoded(t))
        assert np.allclose([x1, y1, x2, y2], box, atol=1e-3)
        assert giou_loss(t, t).abs().max().item() < 1e-5
    # each box widened by 10% of its width on the right: the same IoU, 1/1.1
    loss_small = giou_loss(planes([100, 100, 122, 106]), planes(small))[0, 5, 7].item()
    loss_big = giou_loss(planes([100, 100, 320, 160]), planes(big))[0, 5, 7].item()
    assert abs(loss_small - (1 - 1 / 1.1)) < 1e-4 and abs(loss_big - loss_small) < 1e-4
    l1_small = (planes([100, 100, 122, 106]) - planes(small)).abs().sum().item()
    l1_big = (planes([100, 100, 320, 160]) - planes(big)).abs().sum().item()
    assert l1_big > 9 * l1_small


@needs_data
def test_fine_tune_from_an_exported_onnx_starts_from_its_weights(tmp_path, capsys):
    """--init-from an exported detector ONNX: the weights read back give the file's outputs (BatchNorm folded,
    so its statistics stay frozen, recorded in the checkpoint); a file of another model is one line, exit 2."""
    from edge.training.detect.train import load_detector, model_config
    from edge.training.from_onnx import load_detector_onnx
    from edge.training.detect.spec import load_detect_spec
    from edge.infer.onnxruntime_backend import OnnxRuntimeSession

    path = tmp_path / "s.yaml"
    # a checkpoint (validation) after every step: training goes on after each with BatchNorm still frozen
    path.write_text((TINY % (2, DATA, os.path.join(SPLITS, "detect_train.txt"), os.path.join(SPLITS, "detect_val.txt")))
                    .replace("checkpoint_minutes: 60", "checkpoint_minutes: 0.000001"))
    first, onnx_path = str(tmp_path / "first"), str(tmp_path / "tiny.onnx")
    assert train_main(["detect", "--spec", str(path), "--output-dir", first, "--device", "cpu",
                       "--export", onnx_path]) == 0
    cfg = model_config(load_detect_spec(str(path)))
    model = load_detector_onnx(onnx_path, cfg)
    batch = np.random.default_rng(1).random((2, 3, 64, 128), dtype=np.float32)
    cov, bbox = OnnxRuntimeSession(onnx_path).run({"input_1:0": batch}, ["output_cov/Sigmoid:0",
                                                                         "output_bbox/BiasAdd:0"])
    with torch.no_grad():
        cov_t, bbox_t = model(torch.from_numpy(batch))
    assert np.abs(torch.sigmoid(cov_t).numpy() - cov).max() < 1e-5 and np.abs(bbox_t.numpy() - bbox).max() < 1e-4
    tuned = str(tmp_path / "tuned")
    assert train_main(["detect", "--spec", str(path), "--output-dir", tuned, "--device", "cpu",
                       "--init-from", onnx_path]) == 0
    _, ckpt = load_detector(os.path.join(tuned, "last.pt"))
    assert ckpt["frozen_bn"] is True and ckpt["init_from"] == onnx_path and ckpt["step"] == 2
    # the starting model was validated first: best.pt is a trained one only where it did better on val
    assert [(h["step"], h["reason"]) for h in ckpt["history"]][:2] == [(0, "init"), (1, "interval")]
    assert ckpt["history"][0]["loss"] is None
    # the running statistics stayed those of the folded file (identity), though the model trained
    bn = [v for k, v in ckpt["model"].items() if k.endswith("running_mean")]
    assert bn and all(float(v.abs().max()) == 0.0 for v in bn)
    capsys.readouterr()
    lprnet = os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")
    assert train_main(["detect", "--spec", str(path), "--output-dir", str(tmp_path / "bad"), "--device", "cpu",
                       "--init-from", lprnet]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and lprnet in err[0] and "not an lpr-edge detector" in err[0]


@needs_data
def test_data_workers_do_not_hang_after_opencv_ran_threaded(tmp_path):
    """A data worker forked while OpenCV's thread pool exists hung at its first OpenCV call (a CPU run with
    --workers 1 stuck for good, 0% CPU): the trainer turns OpenCV's threads off before it forks."""
    import subprocess
    import sys

    path = tmp_path / "s.yaml"
    path.write_text(TINY % (3, DATA, os.path.join(SPLITS, "detect_train.txt"), os.path.join(SPLITS, "detect_val.txt")))
    code = ("import numpy as np, cv2; big = np.zeros((720, 1280, 3), np.uint8)\n"
            "for _ in range(10): cv2.warpPerspective(big, np.eye(3), (1280, 720)); cv2.resize(big, (512, 288))\n"
            "from edge.training.cli import main; raise SystemExit(main(%r))"
            % ["detect", "--spec", str(path), "--output-dir", str(tmp_path / "run"), "--device", "cpu",
               "--workers", "1"])
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out = proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the trainer and its hung worker
        proc.communicate()
        pytest.fail("training with --workers 1 hung (120 s)")
    assert proc.returncode == 0, out.decode()[-2000:]
    with open(str(tmp_path / "run" / "history.json")) as f:
        assert json.load(f)[-1]["step"] == 3


@needs_data
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on a GPU machine)")
def test_detector_trains_on_the_gpu_and_exports(tmp_path):
    """On a CUDA machine: a few steps on the GPU with a data worker, the model back on the CPU, exported."""
    path = tmp_path / "s.yaml"
    path.write_text(TINY % (4, DATA, os.path.join(SPLITS, "detect_train.txt"), os.path.join(SPLITS, "detect_val.txt")))
    out, onnx_path = str(tmp_path / "run"), str(tmp_path / "tiny.onnx")
    assert train_main(["detect", "--spec", str(path), "--output-dir", out, "--device", "cuda", "--workers", "1",
                       "--export", onnx_path]) == 0
    assert json.load(open(os.path.join(out, "history.json")))[-1]["step"] == 4 and os.path.exists(onnx_path)
