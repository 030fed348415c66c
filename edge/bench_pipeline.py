"""`lpr-edge bench pipeline --config FILE --cameras N`: the whole daemon in this process, with the config's
first camera copied N times (a looping file played at its own frame rate, or a live stream opened N times),
for --seconds, against the config's broker. Measured in one run, so the figures compare as ratios:

    per camera: frames taken, frames dropped by a full queue, frames the detector looked at
    events: how many, and their latency from the read that confirmed the track to the event's arrival at a
            subscriber on the broker (after the outbox commit, the PUBLISH and its PUBACK path)
    the process: CPU (% of one core, and of the machine), RSS at start, end and most
    busy: the share of the time the detector and the recognizer worker spent inside their model calls
            (1.0: that stage is saturated and frames queue or drop); CPU beyond what those calls use is the
            pipeline's own overhead (decoding, cropping, queues, tracking, SQLite, MQTT)

The outbox and state go to a temporary folder: the bench never touches a running daemon's state."""
import datetime
import json
import os
import shutil
import tempfile
import threading
import time

import numpy as np


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (IOError, OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _parse_iso(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def bench_config(data, cameras, detect_fps, state_dir):
    """The config mapping to run: camera 0 copied `cameras` times, looping in real time; state in `state_dir`."""
    base = dict(data["cameras"][0])
    copies = []
    for i in range(cameras):
        cam = dict(base, id="%s%d" % (base["id"], i + 1), enabled=True)
        if "://" not in cam["source"] or cam["source"].startswith(("file://", "dir://")):
            cam.update(loop=True, pacing="realtime")
        if detect_fps is not None and cam.get("mode") == "detect":
            cam["detect_fps"] = detect_fps
        copies.append(cam)
    out = dict(data, cameras=copies, state_dir=state_dir, exit_when_sources_end=False, print_events=False)
    out["health"] = dict(data.get("health", {}), port=0)
    out["outbox"] = {k: v for k, v in data.get("outbox", {}).items() if k != "path"}
    out["home_assistant"] = dict(data.get("home_assistant", {}), enabled=False)
    return out


class _Arrivals:
    """A subscriber on the events topic: when each event arrived, against its confirming read's time."""

    def __init__(self, config, topic):
        from edge.publish.mqtt import make_client

        self.latencies = []
        self.lock = threading.Lock()
        self.client = make_client(config.mqtt, "lpr-edge-bench-%d" % os.getpid())
        self.client.on_message = self._on_message
        self.client.connect(config.mqtt.host, config.mqtt.port, 30)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        now = time.time()
        try:
            event = json.loads(message.payload.decode("utf-8"))
            confirmed = _parse_iso(event["last_seen"])  # the track's last read when it was emitted
        except (ValueError, KeyError, UnicodeDecodeError):
            return
        with self.lock:
            self.latencies.append(now - confirmed)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def run(data, source, base_dir, cameras, seconds, detect_fps=None, sample_s=1.0):
    from edge.app import App
    from edge.config import parse_config

    state = tempfile.mkdtemp(prefix="lpr-edge-bench-")
    config = parse_config(bench_config(data, cameras, detect_fps, state), source, base_dir)
    app = App(config)
    app.init()
    arrivals = _Arrivals(config, app.topics.events)
    rss_start = _rss_bytes()
    app.start()
    try:
        time.sleep(min(3.0, seconds / 4.0))  # warm-up: sources open, first batches
        t0, cpu0 = time.monotonic(), _cpu()
        frames0 = {c.camera.id: c.frames for c in app.captures}
        dropped0 = dict(app.mailbox.dropped)
        det0 = _detector_frames(app)
        infer0 = _infer_seconds(app)
        events0 = app.events_committed
        with arrivals.lock:
            lat0 = len(arrivals.latencies)
        rss_max = rss_start
        while time.monotonic() - t0 < seconds:
            time.sleep(sample_s)
            rss_max = max(rss_max, _rss_bytes())
        wall, cpu = time.monotonic() - t0, _cpu() - cpu0
        result = {
            "cameras": cameras, "seconds": round(wall, 1), "mode": config.cameras[0].mode,
            "frames_per_s": {c.camera.id: round((c.frames - frames0[c.camera.id]) / wall, 2) for c in app.captures},
            "dropped_per_s": {cid: round((app.mailbox.dropped[cid] - dropped0.get(cid, 0)) / wall, 2)
                              for cid in frames0},
            "detections_per_s": round((_detector_frames(app) - det0) / wall, 2) if app.detector_worker else None,
            "events": app.events_committed - events0,
            "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
            "cpu_percent_of_machine": round(100 * cpu / wall / (os.cpu_count() or 1), 1),
            "rss_mb": {"start": round(rss_start / 1e6, 1), "end": round(_rss_bytes() / 1e6, 1),
                       "max": round(rss_max / 1e6, 1)},
        }
        det, rec = _infer_seconds(app)
        result["busy"] = {"detector": round((det - infer0[0]) / wall, 3) if app.detector_worker else None,
                          "recognizer": round((rec - infer0[1]) / wall, 3)}
        with arrivals.lock:
            latencies = arrivals.latencies[lat0:]
        result["event_latency_ms"] = {
            "count": len(latencies),
            "p50": round(1000 * float(np.percentile(latencies, 50)), 1) if latencies else None,
            "p99": round(1000 * float(np.percentile(latencies, 99)), 1) if latencies else None}
    finally:
        app.stop_event.set()
        app.stop()
        arrivals.close()
        shutil.rmtree(state, ignore_errors=True)
    return result


def _cpu():
    times = os.times()
    return times[0] + times[1]


def _detector_frames(app):
    return app.detector_worker.frames_detected if app.detector_worker is not None else 0


def _infer_seconds(app):
    """(detector, recognizer) seconds spent inside model calls so far."""
    return (app.detector_worker.infer_seconds if app.detector_worker is not None else 0.0,
            app.worker.infer_seconds)
