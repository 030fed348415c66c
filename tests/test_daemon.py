"""The daemon end to end, as a user runs it: `lpr-edge run` on the bundled sample video (as a file and as a
live RTSP camera) with the shipped model, publishing to a real mosquitto; stop by signal; SIGKILL with events
in the outbox, then restart."""
import io
import json
import os
import signal
import sqlite3
import subprocess
import time

import cv2
import jsonschema
import numpy as np
import yaml

from helpers import ROOT, VENV_BIN, Subscriber, free_port, wait_for

EVENTS = "lpr-edge/demo/events"


def demo_config(tmp_path, port, **changes):
    with io.open(os.path.join(ROOT, "configs", "demo.yaml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["model"]["path"] = os.path.join(ROOT, "models", os.path.basename(cfg["model"]["path"]))
    cfg["cameras"][0]["source"] = os.path.join(ROOT, "samples", "gate_us.mp4")
    cfg["state_dir"] = str(tmp_path / "state")
    cfg["mqtt"]["port"] = port
    cfg["health"] = {"port": free_port()}  # never the default port: another lpr-edge may hold it
    for key, value in changes.items():
        target = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            target = target[int(p)] if p.isdigit() else target[p]
        target[parts[-1]] = value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def start_daemon(config_path, **kwargs):
    return subprocess.Popen([os.path.join(VENV_BIN, "lpr-edge"), "run", "--config", config_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **kwargs)


def expected_plates():
    with open(os.path.join(ROOT, "samples", "gate_us.mp4.plates.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def event_schema():
    with open(os.path.join(ROOT, "configs", "schema", "event.schema.json")) as f:
        return json.load(f)


def test_sample_video_gives_one_event_per_plate(broker, subscriber, tmp_path):
    sub = subscriber("lpr-edge/#")
    proc = start_daemon(demo_config(tmp_path, broker.port))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = sub.events(EVENTS)
    assert sorted(e["plate"] for e in events) == sorted(expected_plates()), err
    assert [e["plate"] for e in events] == expected_plates()  # in the order the cars came
    schema = event_schema()
    for event in events:
        jsonschema.validate(event, schema)
        assert event["camera"] == "gate" and event["roi"] == "lane1" and event["read_count"] >= 3
    assert len(set(e["id"] for e in events)) == len(events)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)  # ids sort by time
    printed = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["id"] for e in printed] == [e["id"] for e in events]  # one printed line per published event
    assert not any(retain for t, _, retain in sub.messages if t == EVENTS)
    assert sub.payloads("lpr-edge/demo/availability")[-1] == b"offline"


def test_sigterm_stops_within_5_s(broker, subscriber, tmp_path):
    sub = subscriber(EVENTS)
    config = demo_config(tmp_path, broker.port, **{"exit_when_sources_end": False, "cameras.0.loop": True,
                                                   "cameras.0.pacing": "realtime"})
    proc = start_daemon(config)
    try:
        assert wait_for(lambda: len(sub.events(EVENTS)) >= 1, 60)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - start < 5.0
        assert proc.returncode == 0
    finally:
        proc.kill()
        proc.wait()


def test_rtsp_camera_gives_one_event_per_plate(broker, subscriber, rtsp_camera, tmp_path):
    """The daemon on a real RTSP stream (the sample served live by GStreamer's RTSP server), as on a pole."""
    sub = subscriber(EVENTS)
    proc = start_daemon(demo_config(tmp_path, broker.port, **{"cameras.0.source": rtsp_camera.url,
                                                              "exit_when_sources_end": False}))
    try:
        plates = expected_plates()
        assert wait_for(lambda: len(sub.events(EVENTS)) >= len(plates), 90), proc.poll()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        events = sub.events(EVENTS)
        assert [e["plate"] for e in events[:len(plates)]] == plates, err  # the file's 24 s: each car once
        assert all(e["camera"] == "gate" and e["read_count"] >= 3 for e in events)
    finally:
        proc.kill()
        proc.wait()


def test_bad_config_exits_2_and_starts_nothing(tmp_path):
    config = demo_config(tmp_path, 1883, **{"tracking.min_confidence": 7})
    proc = start_daemon(config)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "tracking.min_confidence" in err and "7" in err
    assert not os.path.exists(str(tmp_path / "state"))


def test_bad_model_exits_2(tmp_path):
    bad = tmp_path / "us_broken.onnx"
    bad.write_bytes(b"not a model")
    (tmp_path / "us_lp_characters.txt").write_bytes(open(os.path.join(ROOT, "models", "us_lp_characters.txt"), "rb").read())
    config = demo_config(tmp_path, 1883)
    text = open(config).read().replace(os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx"), str(bad))
    open(config, "w").write(text)
    proc = start_daemon(config)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "us_broken.onnx" in err


def test_sigkill_with_events_in_outbox_then_restart(make_broker, tmp_path):
    port = free_port()  # nothing listens yet: events pile up in the outbox
    config = demo_config(tmp_path, port, **{"exit_when_sources_end": False, "mqtt.reconnect_max_s": 1})
    proc = start_daemon(config)
    outbox = str(tmp_path / "state" / "outbox.sqlite3")

    def committed():
        try:
            return sqlite3.connect(outbox).execute("SELECT count(*) FROM outbox").fetchone()[0]
        except sqlite3.Error:
            return 0

    try:
        assert wait_for(lambda: committed() >= 3, 90), proc.stderr.read() if proc.poll() is not None else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ids = [row[0] for row in sqlite3.connect(outbox).execute("SELECT event_id FROM outbox ORDER BY seq")]
    assert len(ids) >= 3
    # restart with a camera that sees no plates, and a broker now: the backlog goes out
    blank = tmp_path / "blank"
    blank.mkdir()
    cv2.imwrite(str(blank / "0001.png"), np.full((48, 96, 3), 128, np.uint8))
    broker = make_broker(port=port).start()
    sub = Subscriber(port, EVENTS)
    config = demo_config(tmp_path, port, **{"cameras.0.source": str(blank), "cameras.0.mode": "crop",
                                            "cameras.0.rois": []})
    proc = start_daemon(config)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert [e["id"] for e in sub.events(EVENTS)][:len(ids)] == ids
    sub.close()


def committed_ids(stderr_text):
    """Event ids the daemon logged as committed to its outbox ('... event <ULID>')."""
    import re

    return re.findall(r"plate \S+ \(.*\) (?:event|held) ([0-9A-HJKMNP-TV-Z]{26})$", stderr_text, re.M)


def assert_every_committed_event_arrives(stderr_text, sub, timeout):
    """One event per sample plate was committed, and each reached the subscriber; returns their ids."""
    committed = committed_ids(stderr_text)
    assert len(committed) == len(expected_plates()), stderr_text
    assert wait_for(lambda: set(e["id"] for e in sub.events(EVENTS)) >= set(committed), timeout)
    return committed


def test_broker_outage_while_plates_stream(make_broker, tmp_path):
    broker = make_broker(persistent=True).start()
    sub = Subscriber(broker.port, EVENTS, persistent=True)
    config = demo_config(tmp_path, broker.port, **{"exit_when_sources_end": True, "cameras.0.pacing": "realtime",
                                                   "mqtt.reconnect_max_s": 1})
    proc = start_daemon(config)
    try:
        assert wait_for(lambda: len(sub.events(EVENTS)) >= 1, 60)
        broker.stop()  # the sample keeps playing: events wait in the outbox
        time.sleep(6)
        broker.start()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    committed = assert_every_committed_event_arrives(err, sub, 10)
    first_seen = []
    for e in sub.events(EVENTS):
        if e["id"] not in first_seen:
            first_seen.append(e["id"])
    assert first_seen == committed  # in order
    sub.close()


def test_known_plates_and_inline_snapshot(broker, subscriber, tmp_path):
    sub = subscriber(EVENTS)
    plates = expected_plates()
    config = demo_config(tmp_path, broker.port, **{"events": {"snapshot": "inline"},
                                                   "tracking.known_plates": {"Alice's car": [plates[1]]}})
    proc = start_daemon(config)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    events = {e["plate"]: e for e in sub.events(EVENTS)}
    assert events[plates[1]]["known"] == "Alice's car"
    assert events[plates[0]]["known"] is None
    import base64

    jpeg = base64.b64decode(events[plates[0]]["snapshot"]["data"])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 96, 3)
    for event in events.values():
        jsonschema.validate(event, event_schema())
