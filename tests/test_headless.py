"""What an installer at a gate with no screen uses, against the real daemon, broker and HTTP: `lpr-edge snapshot`,
/snapshot.jpg, /reads, /healthz's device facts, debug logging of each read; the status topic on a clean stop;
the Frigate-shaped payload; retention of plate data; camera credentials in the config."""
import json
import os
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edge.config import ConfigError, load_config
from helpers import ROOT, VENV_BIN, Subscriber, free_port, run_cli, wait_for
from test_daemon import EVENTS, demo_config, expected_plates
from test_faults import health, launch, stop

SAMPLE = os.path.join(ROOT, "samples", "gate_us.mp4")


def fetch(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()
    except OSError:  # not listening yet
        return 0, None, b'{"reads": []}'


def decode_jpeg(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_snapshot_command_draws_rois_and_grid_on_a_live_frame(tmp_path):
    out = str(tmp_path / "gate.jpg")
    result = run_cli("snapshot", "--config", os.path.join(ROOT, "configs", "demo.yaml"), "--camera", "gate",
                     "--out", out)
    assert result.returncode == 0, result.stderr
    image = decode_jpeg(open(out, "rb").read())
    assert image.shape == (360, 640, 3)  # the camera's own frame size: coordinates read off it are the config's
    raw = cv2.VideoCapture(SAMPLE).read()[1]
    green = (image[:, :, 1] > 200) & (image[:, :, 0] < 80) & (image[:, :, 2] < 80)
    assert green[225:295, 250:392].sum() > 200 and green[:200].sum() < 50  # the ROI outline, where the config has it
    assert np.abs(image[50, :, :].astype(int) - raw[50, :, :]).mean() > 3  # a grid line at y=50
    assert not os.path.exists(out + ".part")
    bad = run_cli("snapshot", "--config", os.path.join(ROOT, "configs", "demo.yaml"), "--camera", "nope",
                  "--out", out)
    assert bad.returncode == 2 and "unknown camera 'nope'" in bad.stderr and "gate" in bad.stderr
    nowhere = run_cli("snapshot", "--config", os.path.join(ROOT, "configs", "demo.yaml"),
                      "--out", str(tmp_path / "no" / "dir" / "x.jpg"))
    assert nowhere.returncode == 2 and "--out" in nowhere.stderr and "Traceback" not in nowhere.stderr


def test_installer_views_debug_reads_and_status_on_clean_stop(broker, tmp_path):
    sub = Subscriber(broker.port, "lpr-edge/demo/status")
    hport = free_port()
    config = demo_config(tmp_path, broker.port, **{"health": {"port": hport}, "cameras.0.pacing": "realtime",
                                                   "exit_when_sources_end": False, "mqtt.status_interval_s": 1})
    proc = launch(config)
    try:
        assert wait_for(lambda: len(json.loads(fetch(hport, "/reads?camera=gate")[2])["reads"]) >= 10, 40)
        code, ctype, body = fetch(hport, "/reads?camera=gate")
        reads = json.loads(body)["reads"]
        assert code == 200 and ctype == "application/json"
        assert all(set(r) >= {"time", "roi", "text", "score", "kept", "reason"} for r in reads)
        assert any(r["kept"] for r in reads) or any(r["reason"] in ("too_short", "low_confidence") for r in reads)
        assert len(json.loads(fetch(hport, "/reads?camera=gate&n=3")[2])["reads"]) == 3
        code, ctype, body = fetch(hport, "/snapshot.jpg?camera=gate")
        assert code == 200 and ctype == "image/jpeg" and decode_jpeg(body).shape == (360, 640, 3)
        assert fetch(hport, "/snapshot.jpg?camera=nope")[0] == 404
        assert fetch(hport, "/reads?camera=gate&n=x")[0] == 400
        report = health(hport)[1]
        assert report["device_id"] == "demo" and report["version"] and report["backend"] == "onnxruntime"
        assert wait_for(lambda: health(hport)[1]["cameras"]["gate"]["fps"] > 1.0, 15), health(hport)[1]["cameras"]
    finally:
        out, err = stop(proc)
    assert wait_for(lambda: sub.events() and sub.events()[-1]["state"] == "stopped", 10), sub.events()[-1:]
    last = sub.events()[-1]
    assert last["cameras"][0]["frames"] > 0 and "uptime_s" in last
    sub.close()
    assert "Traceback" not in err


def test_debug_log_level_logs_each_read(tmp_path):
    crops = tmp_path / "crops"
    crops.mkdir()
    for i in range(3):
        cv2.imwrite(str(crops / ("%d.png" % i)), np.full((48, 96, 3), 100 + i, np.uint8))
    config = demo_config(tmp_path, free_port(), **{"cameras.0.source": str(crops), "cameras.0.mode": "crop",
                                                   "cameras.0.rois": [], "exit_when_sources_end": False})
    proc = subprocess.Popen(  # no broker: reads happen all the same
                            [os.path.join(VENV_BIN, "lpr-edge"), "run", "--config", config, "--log-level", "debug"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    time.sleep(6)
    out, err = stop(proc)
    lines = [line for line in err.splitlines() if "roi frame: read" in line]
    assert len(lines) >= 3, err[-2000:]
    assert all("score" in line and ("kept" in line or "rejected (" in line) for line in lines)
    assert "camera gate" in lines[0]


def test_frigate_shaped_events(broker, subscriber, tmp_path):
    sub = subscriber(EVENTS)
    plates = expected_plates()
    config = demo_config(tmp_path, broker.port, **{"events": {"format": "frigate"},
                                                   "tracking.known_plates": {"Alice's car": [plates[1]]}})
    proc = launch(config)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = sub.events(EVENTS)
    assert [e["plate"] for e in events] == plates
    import jsonschema

    with open(os.path.join(ROOT, "configs", "schema", "frigate-event.schema.json")) as f:
        schema = json.load(f)
    for e in events:
        jsonschema.validate(e, schema)
        assert e["type"] == "lpr" and e["camera"] == "gate" and isinstance(e["timestamp"], float)
        x1, y1, x2, y2 = e["plate_box"]
        assert x2 > x1 and y2 > y1 and 0 < e["score"] <= 1 and len(e["id"]) == 26
        assert abs(e["timestamp"] - time.time()) < 300
    assert events[1]["name"] == "Alice's car" and events[0]["name"] is None


def test_retention_deletes_old_unpublished_rows_and_counts_them(tmp_path):
    from edge.outbox import Outbox

    path = str(tmp_path / "o.db")
    box = Outbox(path)
    for i in range(5):
        box.add("e%d" % i, "t", b"x")
    db = sqlite3.connect(path)
    db.execute("UPDATE outbox SET created = created - 7200 WHERE event_id IN ('e0', 'e1', 'e2')")
    db.commit()
    db.close()
    assert box.expire(3600) == 3
    assert [r.event_id for r in box.pending(0, 10)] == ["e3", "e4"]
    assert box.dropped_total() == 3


def test_camera_credentials_in_the_config(tmp_path, monkeypatch):
    base = """
device_id: t
device_profile: cpu
model: {path: %s/models/us_lprnet_baseline10_mid.onnx}
health: {port: 0}
cameras:
  - id: gate
    mode: crop
""" % ROOT
    (tmp_path / "pw").write_text("p@ss:w/rd\n")
    path = tmp_path / "c.yaml"
    path.write_text(base + "    source: rtsp://10.0.0.9/live\n    username: viewer\n    password_file: pw\n")
    camera = load_config(str(path)).cameras[0]
    assert camera.source_url() == "rtsp://viewer:p%40ss%3Aw%2Frd@10.0.0.9/live"
    assert "p@ss" not in repr(camera)
    monkeypatch.setenv("LPR_CAM_PW", "envpw")
    path.write_text(base + "    source: rtsp://10.0.0.9/live\n    username: viewer\n    password_env: LPR_CAM_PW\n")
    assert load_config(str(path)).cameras[0].source_url() == "rtsp://viewer:envpw@10.0.0.9/live"
    for extra, words in (("    source: rtsp://u:p@10.0.0.9/live\n    username: viewer\n", "keep them out"),
                         ("    source: rtsp://10.0.0.9/live\n    password_file: pw\n", "need a username"),
                         ("    source: rtsp://10.0.0.9/live\n    username: v\n    password_env: NOPE_X\n", "not set"),
                         ("    source: rtsp://10.0.0.9/live\n    username: v\n    password_file: nope\n", "no such file"),
                         ("    source: %s\n    username: v\n" % SAMPLE, "only network sources")):
        path.write_text(base + extra)
        with pytest.raises(ConfigError) as info:
            load_config(str(path))
        assert words in str(info.value) and "cameras[0]" in str(info.value)


def test_frame_snapshot_with_its_event_and_home_assistant_image_entities(broker, tmp_path):
    sub = Subscriber(broker.port, "#")
    config = demo_config(tmp_path, broker.port, **{"events": {"snapshot": "topic", "frame_snapshot": True},
                                                   "home_assistant": {"enabled": True}})
    proc = launch(config)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    frames = sub.payloads("lpr-edge/demo/gate/frame")
    assert len(frames) == len(expected_plates())
    image = decode_jpeg(frames[-1])
    assert image.shape == (360, 640, 3)  # the sample's frame size is within the 640 px cap
    assert decode_jpeg(sub.payloads("lpr-edge/demo/gate/snapshot")[-1]).shape == (48, 96, 3)
    configs = {t: json.loads(p.decode()) for t, p, _ in sub.messages if t.endswith("/config") and p}
    assert configs["homeassistant/image/lpr_edge_demo_gate_frame_image/config"]["image_topic"] == \
        "lpr-edge/demo/gate/frame"
    assert configs["homeassistant/image/lpr_edge_demo_gate_plate_image/config"]["image_topic"] == \
        "lpr-edge/demo/gate/snapshot"
    retained = Subscriber(broker.port, "lpr-edge/demo/gate/frame")  # a late subscriber gets the last frame
    assert wait_for(lambda: retained.messages, 5) and retained.messages[0][2]
    retained.close()
    sub.close()
