"""The detect stage: both detector contracts decoded against boxes known in advance (small ONNX files built
here, run by the real ONNX Runtime), a model of another layout refused naming its tensors, zones, masks and
min_plate_px, crops from boxes, tracking by box overlap, and the daemon finding the sample's plates with a
detector instead of a fixed ROI."""
import json
import os

import jsonschema
import numpy as np
import pytest

from detector_models import detectnet_model, other_model, yolo_e2e_model
from edge.config.model import RoiConfig, TrackingConfig
from edge.detect import DETECT_ROI, Detector, DetectorError, PlateFilter, crop_box
from edge.detect import contracts
from edge.track import PlateRead, Tracker
from helpers import ROOT, run_cli


def frame(w, h):
    return np.zeros((h, w, 3), np.uint8)


def test_detectnet_boxes_come_back_in_frame_pixels_for_any_frame_size(tmp_path):
    boxes = [[100, 150, 180, 180], [300, 60, 360, 84]]  # input pixels of a 512x288 network
    detector = Detector.load(detectnet_model(tmp_path / "d.onnx", boxes))
    assert detector.kind == contracts.DETECTNET_V2 and detector.input_size == (512, 288)
    out = detector.detect([frame(1280, 720), frame(512, 288), frame(640, 480)])
    assert len(out) == 3
    # nine cells say each plate; NMS leaves one box per plate, the best cell's score
    for found, (sx, sy) in zip(out, [(2.5, 2.5), (1.0, 1.0), (1.25, 480 / 288.0)]):
        want = sorted([[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in boxes])
        assert found.shape == (2, 5)
        np.testing.assert_allclose(sorted(found[:, :4].tolist()), want, atol=0.5)
        np.testing.assert_allclose(found[:, 4], [0.9, 0.9], atol=1e-6)


def test_detectnet_threshold_drops_weak_cells(tmp_path):
    detector = Detector.load(detectnet_model(tmp_path / "d.onnx", [[100, 150, 180, 180]], score=0.25))
    assert detector.detect([frame(512, 288)])[0].shape == (0, 5)  # 0.25 < the 0.3 default
    detector.threshold = 0.2
    assert detector.detect([frame(512, 288)])[0].shape == (1, 5)


def test_encode_decode_round_trip():
    gh, gw = 18, 32
    for box in ([10, 20, 90, 50], [400.5, 200.25, 505, 280], [0, 0, 16, 8]):
        target = contracts.encode_detectnet(box, gh, gw, 288, 512)
        cov = np.zeros((1, gh, gw), np.float32)
        cov[0, 5, 7] = 1.0  # any cell decodes the box it was encoded with
        found = contracts.decode_detectnet(cov, target, 288, 512, 0.5, 0.3)
        np.testing.assert_allclose(found[0, :4], box, atol=1e-3)


def test_yolo_end_to_end_undoes_the_letterbox(tmp_path):
    # a 1280x720 frame letterboxed into 640x640: scale 0.5, 140 grey rows above
    detector = Detector.load(yolo_e2e_model(tmp_path / "y.onnx", [[100, 250, 200, 290], [300, 300, 340, 320]]))
    assert detector.kind == contracts.YOLO_E2E and detector.max_batch == 1
    found = detector.detect([frame(1280, 720), frame(640, 640)])
    np.testing.assert_allclose(found[0][:, :4], [[200, 220, 400, 300], [600, 320, 680, 360]], atol=0.5)
    np.testing.assert_allclose(found[1][:, :4], [[100, 250, 200, 290], [300, 300, 340, 320]], atol=0.5)
    image, transform = contracts.letterbox(frame(1280, 720) + 7, 640, 640)
    assert image[0, 0, 0] == contracts.LETTERBOX_GREY and image[320, 320, 0] == 7 and transform == (0.5, 0.5, 0, 140)


def test_a_model_of_another_layout_is_refused_naming_its_tensors(tmp_path):
    with pytest.raises(DetectorError) as err:
        Detector.load(other_model(tmp_path / "other.onnx"))
    text = str(err.value)
    assert "other.onnx" in text and "logits" in text and "detectnet_v2" in text and "yolo_e2e" in text
    with pytest.raises(DetectorError) as err:
        Detector.load(os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx"))  # a recognizer, not a detector
    assert "image_input" in str(err.value) and "fits no detector contract" in str(err.value)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(DetectorError) as err:
        Detector.load(str(tmp_path / "junk.onnx"))
    assert "junk.onnx" in str(err.value) and "\n" not in str(err.value)


def test_zones_masks_and_min_plate_px():
    zones = [RoiConfig("lane", [(0, 100), (400, 100), (400, 300), (0, 300)])]
    masks = [[(300, 150), (400, 150), (400, 300), (300, 300)]]
    keep = PlateFilter("gate", zones, masks, min_plate_px=30)
    boxes = np.array([[50, 150, 150, 190, 0.9],    # in the lane
                      [320, 200, 380, 230, 0.9],   # in the lane, but masked
                      [50, 10, 150, 40, 0.9],      # above the lane
                      [60, 200, 80, 210, 0.9]],    # 20 px wide: too small
                     np.float32)
    crops = keep.crops(frame(640, 360), boxes)
    assert [(c.roi_id, c.zone, c.box) for c in crops] == [(DETECT_ROI, "lane", [50, 150, 100, 40])]
    assert crops[0].image.shape == (48, 96, 3) and crops[0].det_score == pytest.approx(0.9)
    assert keep.rejected == {"small": 1, "outside_zone": 1, "masked": 1}
    assert [c.zone for c in PlateFilter("gate").crops(frame(640, 360), boxes[:1])] == [""]  # no zones: anywhere


def test_crop_grows_the_box_and_stretches_it_to_96x48():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 50:150] = 255  # the plate: 100x20
    crop = crop_box(image, [50, 40, 150, 60, 0.8], margin=0.1)
    assert crop.image.shape == (48, 96, 3)
    # 10% of the width and height on each side: 120x24 cut, the plate is rows 4-43 and columns 8-87 of the 96x48 crop
    assert crop.image[:3].max() == 0 and crop.image[-3:].max() == 0 and crop.image[10:38, 12:84].min() == 255
    edge = crop_box(image, [0, 0, 20, 10], margin=0.5)  # grown past the frame: clipped, never a crash
    assert edge.image.shape == (48, 96, 3)


def _read(text, box, t):
    return PlateRead("gate", DETECT_ROI, t, 1000.0 + t, text, 0.9, [0.9] * len(text), None, box, 0.8, "")


def test_a_car_driving_through_is_one_track_even_when_reads_differ():
    config = TrackingConfig(min_confidence=0.5, min_plate_length=4, max_edit_distance=1, expire_s=1.0,
                            min_reads=3, max_track_s=60)
    tracker = Tracker(config)
    reads = ["7JXW1ET", "7JXW1ET", "7JXW1E", "1JXWIEI", "7JXW1ET", "JXW1ET"]  # partly hidden, blurred
    events = []
    for i, text in enumerate(reads):  # the plate moves right and grows, frame by frame
        events += tracker.add(_read(text, [100 + 12 * i, 200, 80 + 4 * i, 20 + i], 0.1 * i))
    # another car at the same time, elsewhere in the frame
    for i in range(3):
        events += tracker.add(_read("3XQRLF", [500, 50, 80, 20], 0.1 * i + 0.05))
    events += tracker.close_all()
    assert sorted(t.text for t in events) == ["3XQRLF", "7JXW1ET"]
    assert [t.reads for t in events if t.text == "7JXW1ET"] == [len(reads)]


def _detect_config(tmp_path, broker_port, detector_path, **changes):
    from test_daemon import demo_config

    changes.update({"cameras.0.mode": "detect", "cameras.0.rois": [], "cameras.0.detect_fps": 0})
    path = demo_config(tmp_path, broker_port, **changes)
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f)
    cfg["cameras"][0].pop("rois")
    cfg["detector"] = {"path": detector_path}
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


# the sample's plates sit at x 255-387, y 224-294 of its 640x360 frames: 0.8 of that in a 512x288 network
SAMPLE_PLATE_NET = [204, 179, 310, 235]


@pytest.mark.parametrize("contract", ["detectnet_v2", "yolo_e2e"])
def test_the_daemon_reads_the_sample_through_a_detector(contract, broker, subscriber, tmp_path):
    from test_daemon import EVENTS, event_schema, expected_plates, start_daemon

    if contract == "detectnet_v2":
        model = detectnet_model(tmp_path / "det.onnx", [SAMPLE_PLATE_NET])
    else:  # 640x360 letterboxed into 640x640: 140 grey rows above
        model = yolo_e2e_model(tmp_path / "det.onnx", [[255, 224 + 140, 387, 294 + 140]])
    sub = subscriber("lpr-edge/#")
    proc = start_daemon(_detect_config(tmp_path, broker.port, model))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    events = sub.events(EVENTS)
    assert [e["plate"] for e in events] == expected_plates(), err
    for event in events:
        jsonschema.validate(event, event_schema())
        assert event["roi"] == DETECT_ROI and event["detection"]["model"]["name"] == "det"
        x, y, w, h = event["plate_box"]
        assert abs(x - 255) <= 2 and abs(y - 224) <= 2 and abs(x + w - 387) <= 2 and abs(y + h - 294) <= 2
    assert "detector det (%s, input" % contract in err
    status = json.loads(sub.payloads("lpr-edge/demo/status")[-1])
    assert status["detector"]["contract"] == contract and status["detector"]["plates_kept"] >= 8 * 3


def test_check_config_names_detect_mistakes(tmp_path):
    good = detectnet_model(tmp_path / "det.onnx", [SAMPLE_PLATE_NET])
    path = _detect_config(tmp_path, 1883, good)
    import yaml

    with open(path) as f:
        cfg = yaml.safe_load(f)
    cfg.pop("detector")
    cfg["cameras"][0]["zones"] = [{"id": "bow", "points": [[0, 0], [100, 100], [100, 0], [0, 100]]}]
    cfg["cameras"][0]["masks"] = [[[0, 0], [10, 0], [20, 0]]]  # a line: no area
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    result = run_cli("check-config", path, "--skip-port")
    assert result.returncode == 2, result.stderr
    text = result.stdout + result.stderr
    assert "cameras[0].mode: 'detect' needs a detector" in text
    assert "cameras[0].zones[0].points" in text and "crosses itself" in text
    assert "cameras[0].masks[0]: value [[0, 0], [10, 0], [20, 0]] is wrong: the points enclose no area" in text
    assert "Traceback" not in text


def test_run_refuses_a_detector_of_another_layout_with_exit_2(tmp_path):
    path = _detect_config(tmp_path, 1, other_model(tmp_path / "other.onnx"))
    result = run_cli("run", "--config", path, timeout=60)
    assert result.returncode == 2
    assert "other.onnx" in result.stderr and "fits no detector contract" in result.stderr
    assert "Traceback" not in result.stderr


def _sample_frames(tmp_path, indexes):
    """Frames of the sample video as JPEG files (each holds one plate at the ROI), and the plates they hold."""
    import cv2

    capture = cv2.VideoCapture(os.path.join(ROOT, "samples", "gate_us.mp4"))
    paths = []
    for index in range(max(indexes) + 1):
        ok, image = capture.read()
        assert ok
        if index in indexes:
            paths.append(str(tmp_path / ("frame%03d.jpg" % index)))
            cv2.imwrite(paths[-1], image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    capture.release()
    return paths


def test_read_finds_and_reads_plates_in_images_and_names_bad_files(tmp_path):
    from test_daemon import expected_plates

    folder = tmp_path / "images"
    folder.mkdir()
    frames = _sample_frames(folder, [15])  # the first car stands at the gate in frame 15
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    detector = detectnet_model(tmp_path / "det.onnx", [SAMPLE_PLATE_NET])
    result = run_cli("read", str(folder), "--detector", detector, "--json")
    assert result.returncode == 2, result.stderr  # a bad image is a bad argument; the others are still read
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_image = {os.path.basename(line["image"]): line for line in lines}
    assert set(by_image) == {"broken.png", "empty.jpg", "frame015.jpg"}
    plates = by_image["frame015.jpg"]["plates"]
    assert [p["plate"] for p in plates] == [expected_plates()[0]]
    assert plates[0]["det_score"] == pytest.approx(0.9) and len(plates[0]["char_scores"]) == len(plates[0]["plate"])
    x, y, w, h = plates[0]["box"]
    assert abs(x - 255) <= 2 and abs(y - 224) <= 2 and abs(w - 132) <= 3 and abs(h - 70) <= 3
    assert by_image["frame015.jpg"]["ms"] > 0
    assert "empty file" in by_image["empty.jpg"]["error"] and "not a decodable image" in by_image["broken.png"]["error"]
    assert "empty.jpg: empty file" in result.stderr and "Traceback" not in result.stderr
    plain = run_cli("read", frames[0], "--detector", detector)
    assert plain.returncode == 0 and "frame015.jpg: %s  score" % expected_plates()[0] in plain.stdout
    missing = run_cli("read", str(tmp_path / "nowhere.jpg"), "--detector", detector)
    assert missing.returncode == 2 and "nowhere.jpg: no such file or folder" in missing.stderr


def _yolo_scenes(tmp_path):
    """Two 640x360 scenes: one plate each, at the sample's spot and somewhere else."""
    import cv2

    root = tmp_path / "scenes" / "src"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name, (x1, y1, x2, y2) in (("a", (255, 224, 387, 294)), ("b", (40, 40, 120, 80))):
        cv2.imwrite(str(root / "images" / (name + ".jpg")), np.zeros((360, 640, 3), np.uint8))
        (root / "labels" / (name + ".txt")).write_text("0 %f %f %f %f\n" % (
            (x1 + x2) / 1280.0, (y1 + y2) / 720.0, (x2 - x1) / 640.0, (y2 - y1) / 360.0))
    return str(tmp_path / "scenes")


def test_evaluate_detector_counts_recall_precision_and_ap(tmp_path):
    data = _yolo_scenes(tmp_path)
    # the constant model finds the sample's spot in every scene (a hit in a, a false alarm in b) and
    # a weaker box far from anything (two more false alarms)
    model = detectnet_model(tmp_path / "det.onnx", [SAMPLE_PLATE_NET, [400, 20, 480, 40]])
    result = run_cli("evaluate-detector", "--model", model, "--data", data, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["images"] == 2 and report["plates"] == 2 and report["detections"] == 4
    assert report["recall_iou50"] == 0.5 and report["precision_iou50"] == 0.25
    # ranked: all four at 0.9; the one hit among them gives AP = recall 0.5 x precision at that point
    assert 0.1 <= report["ap_iou50"] <= 0.5
    assert report["frames_per_s"] > 0 and "recall 0.5, precision 0.25" in result.stdout
    only = tmp_path / "only.txt"
    only.write_text("src/a\n")
    result = run_cli("evaluate-detector", "--model", model, "--data", data, "--only-ids", str(only), "--json")
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["images"] == 1 and report["recall_iou50"] == 1.0
    (tmp_path / "empty").mkdir()
    bad = run_cli("evaluate-detector", "--model", model, "--data", str(tmp_path / "empty"))
    assert bad.returncode == 2 and "no YOLO-layout scenes" in bad.stderr


def test_average_precision_of_known_rankings():
    from edge.detect.tools import average_precision

    assert average_precision([(0.9, True), (0.8, True)], 2) == pytest.approx(1.0)
    assert average_precision([(0.9, True), (0.8, False), (0.7, True)], 2) == pytest.approx(0.5 + 0.5 * 2 / 3.0)
    assert average_precision([(0.9, False)], 1) == 0.0


def _sample_rgb_frames():
    import cv2

    capture = cv2.VideoCapture(os.path.join(ROOT, "samples", "gate_us.mp4"))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return frames


def _events_with_roi_shift(recognizer, tracking, frames, dx):
    from edge.crop.roi import RoiCropper

    points = [(255 + dx, 229), (385 + dx, 224), (387 + dx, 291), (257 + dx, 294)]  # the demo's ROI, moved
    cropper = RoiCropper("gate", [RoiConfig("lane1", points)])
    tracker = Tracker(tracking)
    events = []
    for i, image in enumerate(frames):
        crop = cropper.crops(image)[0]
        read = recognizer.read([crop.image])[0]
        events += tracker.add(PlateRead("gate", "lane1", i / 10.0, i / 10.0, read.text, read.score, read.char_scores,
                                        crop.image, crop.box, None, "", read.at_edge))
    return [t.text for t in events + tracker.close_all()], tracker.rejected


def test_roi_mode_rejects_reads_whose_characters_reach_the_crop_edge(us_model):
    from edge.config import load_config
    from edge.recognize.recognizer import Recognizer
    from test_daemon import expected_plates

    config = load_config(os.path.join(ROOT, "configs", "demo.yaml"))
    recognizer = Recognizer.from_config(config.model, config.recognizer)
    frames = _sample_rgb_frames()
    plates, rejected = _events_with_roi_shift(recognizer, config.tracking, frames, 0)
    assert plates == expected_plates() and rejected["at_edge"] == 0  # a well-placed ROI: nothing at the edge
    for dx in (10, -10):  # 10 px off: characters are cut; those reads never make an event, so no wrong plate
        plates, rejected = _events_with_roi_shift(recognizer, config.tracking, frames, dx)
        assert rejected["at_edge"] >= 30, dx
        assert plates and set(plates) <= set(expected_plates()), (dx, plates)


def test_a_camera_whose_every_read_is_cut_for_a_minute_is_degraded():
    import time
    from types import SimpleNamespace

    from edge.service import health

    capture = SimpleNamespace(camera=SimpleNamespace(id="gate"), last_progress=time.monotonic(), state="streaming",
                              frames=900, blocked_bound_s=0, is_alive=lambda: True, source=None, error=None)
    now = time.time()
    ok = health._camera(capture, 30, time.monotonic(), {"gate": (now - 20, now, 40)})
    assert ok.state == health.OK  # 20 s of cut reads: a car or two, not yet a misplaced ROI
    cut = health._camera(capture, 30, time.monotonic(), {"gate": (now - 75, now - 1, 120)})
    assert cut.state == health.DEGRADED and "reached the ROI's edge" in cut.reason and "120 reads" in cut.reason
    old = health._camera(capture, 30, time.monotonic(), {"gate": (now - 300, now - 200, 120)})
    assert old.state == health.OK  # no read for minutes since (an empty road): nothing to say


def test_at_edge_from_class_probs_and_from_ids():
    from edge.recognize.decode import at_edge

    blank = 3
    ids = np.full((3, 24), blank)
    ids[1, 0] = 1  # a character in the first step
    ids[2, 10:14] = 2  # characters well inside
    probs = np.zeros((3, 24, 4), np.float32)
    probs[:, :, blank] = 1.0
    probs[1, 0] = [0.9, 0, 0, 0.1]
    probs[2, 23] = [0, 0.4, 0, 0.6]  # the blank still wins at the edge: not counted
    assert at_edge(ids, None, blank).tolist() == [False, True, False]
    assert at_edge(ids, probs, blank).tolist() == [False, True, False]


def test_snapshot_draws_zones_masks_and_detected_boxes():
    from types import SimpleNamespace

    from edge.service.snapshot import BOX_COLOUR, MASK_COLOUR, ZONE_COLOUR, annotate

    camera = SimpleNamespace(rois=[], zones=[RoiConfig("lane", [(10, 200), (630, 200), (630, 350), (10, 350)])],
                             masks=[[(500, 10), (630, 10), (630, 100), (500, 100)]])
    image = annotate(frame(640, 360), camera, [{"roi": DETECT_ROI, "text": "ABC123", "score": 0.9, "kept": True}],
                     np.array([[100, 220, 200, 260, 0.8]], np.float32))

    def has(colour, y, x):  # the colour within 2 px (lines are antialiased)
        window = image[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3)
        return any(tuple(int(v) for v in px) == colour for px in window)

    assert has(ZONE_COLOUR, 275, 630) and has(MASK_COLOUR, 55, 630) and not has(ZONE_COLOUR, 55, 630)
    assert has(BOX_COLOUR, 240, 100) and has(BOX_COLOUR, 260, 180) and not has(BOX_COLOUR, 240, 130)


def test_check_config_loads_the_detector(tmp_path):
    good = _detect_config(tmp_path, 1883, detectnet_model(tmp_path / "det.onnx", [SAMPLE_PLATE_NET]))
    result = run_cli("check-config", good, "--skip-port")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout[:result.stdout.rindex("}") + 1])
    assert shown["detector"]["contract"] == "detectnet_v2" and shown["detector"]["input"] == [512, 288]
    assert shown["cameras"][0]["mode"] == "detect" and shown["cameras"][0]["min_plate_px"] == 30
    bad = _detect_config(tmp_path, 1883, other_model(tmp_path / "other.onnx"))
    result = run_cli("check-config", bad, "--skip-port")
    assert result.returncode == 2 and "detector:" in result.stderr and "fits no detector contract" in result.stderr


@pytest.mark.parametrize("gen", ["8.2", "10"])
def test_the_detector_runs_on_tensorrt_and_engines_build_builds_its_engine(tmp_path, monkeypatch, capsys, gen):
    """On the recording fakes of TensorRT (they compute through ONNX Runtime): the same boxes as ONNX Runtime,
    and `engines build` builds the detector's engine beside the recognizer's (tests/test_tensorrt_gpu.py is
    where real hardware runs)."""
    import shutil

    import fake_tensorrt
    from edge.cli import main
    from edge.infer import InferOptions

    model = detectnet_model(tmp_path / "det.onnx", [[100, 150, 180, 180]])
    expected = Detector.load(model).detect([frame(1280, 720)])[0]
    fake_tensorrt.install(monkeypatch, gen)
    options = InferOptions(max_batch=4, engine_dir=str(tmp_path / "engines"))
    detector = Detector.load(model, "tensorrt", options)
    try:
        assert detector.session.name == "tensorrt" and detector.session.fallback_reason is None
        np.testing.assert_allclose(detector.detect([frame(1280, 720)])[0], expected, atol=1e-3)
    finally:
        detector.close()
    recognizer = str(tmp_path / "us.onnx")  # a copy without the FP16 variant, which the fakes cannot run
    shutil.copy(os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx"), recognizer)
    config = _detect_config(tmp_path, 1883, model)
    import yaml

    with open(config) as f:
        cfg = yaml.safe_load(f)
    cfg["model"] = {"path": recognizer, "characters": os.path.join(ROOT, "models", "us_lp_characters.txt")}
    cfg["recognizer"] = {"backend": "tensorrt", "engine_dir": str(tmp_path / "engines2")}
    with open(config, "w") as f:
        yaml.safe_dump(cfg, f)
    assert main(["engines", "build", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "model: built in" in out and "detector: built in" in out
    assert len([n for n in os.listdir(str(tmp_path / "engines2")) if n.endswith(".engine")]) == 2


def test_sigterm_in_mode_detect_stops_within_5_s_and_loses_no_event(broker, subscriber, tmp_path):
    import signal
    import sqlite3
    import time

    from helpers import wait_for
    from test_daemon import EVENTS, start_daemon

    sub = subscriber(EVENTS)
    config = _detect_config(tmp_path, broker.port, detectnet_model(tmp_path / "det.onnx", [SAMPLE_PLATE_NET]),
                            **{"exit_when_sources_end": False, "cameras.0.loop": True, "cameras.0.pacing": "realtime"})
    proc = start_daemon(config)
    try:
        assert wait_for(lambda: len(sub.events(EVENTS)) >= 2, 60)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - start < 5.0 and proc.returncode == 0, err
    finally:
        proc.kill()
        proc.wait()
    committed = [line for line in err.splitlines() if " event " in line and "camera gate: plate" in line]
    with sqlite3.connect(str(tmp_path / "state" / "outbox.sqlite3")) as db:
        waiting = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    assert len(sub.events(EVENTS)) + waiting >= len(committed) > 0  # each committed event published or kept


def test_the_drive_through_demo_reads_every_car_once_with_the_shipped_detector(broker, subscriber, tmp_path):
    """make run DEMO=drive: cars cross the view at different distances and angles without stopping; the shipped
    detector finds each plate anywhere, and each car is one event with its plate."""
    import yaml

    from test_daemon import EVENTS, event_schema, start_daemon

    with open(os.path.join(ROOT, "configs", "demo-drive.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["model"]["path"] = os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")
    cfg["detector"]["path"] = os.path.join(ROOT, "models", "lpr_edge_lpd_mid.onnx")
    cfg["cameras"][0]["source"] = os.path.join(ROOT, "samples", "drive_us.mp4")
    cfg.update(state_dir=str(tmp_path / "state"), health={"port": 0})
    cfg["mqtt"]["port"] = broker.port
    path = tmp_path / "drive.yaml"
    path.write_text(yaml.safe_dump(cfg))
    sub = subscriber(EVENTS)
    proc = start_daemon(str(path))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    with open(os.path.join(ROOT, "samples", "drive_us.mp4.plates.txt")) as f:
        plates = [line.strip() for line in f if line.strip()]
    events = sub.events(EVENTS)
    assert [e["plate"] for e in events] == plates, err
    with open(os.path.join(ROOT, "samples", "drive_us.mp4.boxes.json")) as f:
        truth = json.load(f)["frames"]
    boxes = [b for frame_boxes in truth for b in frame_boxes]
    for event in events:
        jsonschema.validate(event, event_schema())
        assert event["detection"]["model"]["name"] == "lpr_edge_lpd_mid" and event["detection"]["score"] >= 0.3
        x, y, w, h = event["plate_box"]  # overlaps some frame's true box of a plate (IoU at least 0.5)
        best = max(contracts.iou(np.array([x, y, x + w, y + h], np.float32), np.array([b], np.float32))[0]
                   for b in boxes)
        assert best >= 0.5, (event["plate"], event["plate_box"])


def test_read_uses_the_shipped_detector_by_default(tmp_path):
    frames = _sample_frames(tmp_path, [15])
    result = run_cli("read", frames[0], "--json")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout.strip())
    assert line["plates"] and line["plates"][0]["plate"] == "1063403", line


def test_nan_and_padding_boxes_are_dropped_never_a_crash(tmp_path):
    nan = float("nan")
    # a good box, a NaN box, a box wholly in the letterbox's grey rows, an inverted box
    rows = [[100, 250, 200, 290], [nan, 250, 200, 290], [100, 10, 200, 60], [300, 300, 250, 320]]
    detector = Detector.load(yolo_e2e_model(tmp_path / "y.onnx", rows))
    found = detector.detect([frame(1280, 720)])[0]
    np.testing.assert_allclose(found[:, :4], [[200, 220, 400, 300]], atol=0.5)
    edge = crop_box(frame(640, 360), [640, 360, 640, 360, 0.9])  # a box on the frame's far corner: still a crop
    assert edge.image.shape == (48, 96, 3)


def test_roi_ids_of_detect_and_crop_modes_are_reserved(tmp_path):
    from test_daemon import demo_config

    path = demo_config(tmp_path, 1883, **{"cameras.0.rois.0.id": "plate"})
    result = run_cli("check-config", path, "--skip-port")
    assert result.returncode == 2 and "ROI id 'plate' is reserved" in result.stderr
