"""`lpr-edge bench pipeline [--cameras 1,4,8] [--fps 25] [--mode roi|detect] [--seconds N] [--json]`: the whole
daemon in this process, for each camera count: the bundled sample (or --config's first camera) copied that
many times, played in real time through capture, crops or detection, recognition, tracking, the outbox and
a real MQTT publish to a local broker (a private mosquitto on a free port unless --config names one).
Measured in one run, so the figures compare as ratios:

    per camera: frames/s taken, frames dropped by a full queue; detections/s over all cameras
    events, and their latency: from the capture of the frame whose read confirmed the track to the event's
            arrival at a subscriber on the broker (after the outbox commit, the PUBLISH and the broker's
            forwarding: on loopback within a millisecond of its PUBACK)
    the process: CPU (% of one core), RSS at start and most
    overhead: the process CPU per plate read, against the CPU the models alone take for it (measured right
            after, in the same process, at the batch sizes the pipeline ran): 1 - model CPU / pipeline CPU
            is the share of the CPU spent on everything but the models (decoding, cropping, queues,
            tracking, SQLite, MQTT)

Outbox and state go to a temporary folder: the bench never touches a running daemon's state."""
import datetime
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import numpy as np

DEFAULT_CONFIGS = {"roi": "configs/demo.yaml", "detect": "configs/demo-drive.yaml"}


class BenchError(ValueError):
    pass


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (IOError, OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu():
    times = os.times()
    return times[0] + times[1]


def _parse_iso(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PrivateBroker:
    """mosquitto on a free loopback port in a temporary folder, for the bench's publishes."""

    def __init__(self, workdir):
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
        if binary is None:
            raise BenchError("bench pipeline needs mosquitto for its local broker (apt-get install mosquitto), or "
                             "--config naming a running broker")
        self.port = _free_port()
        conf = os.path.join(workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % self.port)
            if os.geteuid() == 0:
                f.write("user root\n")
        self.proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise BenchError("the bench's mosquitto did not start on port %d" % self.port)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def retimed_sample(source, fps, workdir):
    """The sample file played at `fps` (frames repeated or dropped by ffmpeg), for cameras faster than it."""
    if not shutil.which("ffmpeg"):
        raise BenchError("--fps needs ffmpeg to re-time the sample video")
    out = os.path.join(workdir, "sample-%gfps.mp4" % fps)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", source, "-filter:v", "fps=%g" % fps, "-c:v",
                    "libx264", "-preset", "veryfast", "-crf", "20", out], check=True)
    return out


def bench_config(data, cameras, state_dir, source=None, detect_fps=None, broker_port=None):
    """The config mapping to run: camera 0 copied `cameras` times, looping in real time; state in `state_dir`."""
    base = dict(data["cameras"][0])
    if source is not None:
        base["source"] = source
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
    if broker_port is not None:
        out["mqtt"] = dict(data.get("mqtt", {}), host="127.0.0.1", port=broker_port)
        for key in ("tls", "username", "password_env", "password_file"):
            out["mqtt"].pop(key, None)
    return out


class _Arrivals:
    """A subscriber on the events topic: when each event arrived, against its confirming frame's capture."""

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

    def take(self):
        with self.lock:
            out, self.latencies = self.latencies, []
        return out

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def run_once(data, source_name, base_dir, cameras, seconds, state_dir, source=None, detect_fps=None,
             broker_port=None, warmup_s=3.0):
    """One camera count: the measured figures (a dict)."""
    from edge.app import App
    from edge.config import parse_config

    config = parse_config(bench_config(data, cameras, state_dir, source, detect_fps, broker_port), source_name,
                          base_dir)
    app = App(config)
    app.init()
    arrivals = _Arrivals(config, app.topics.events)
    rss_start = _rss_bytes()
    app.start()
    try:
        time.sleep(warmup_s)  # sources open, first batches
        arrivals.take()
        before = _counters(app)
        t0, cpu0, rss_max = time.monotonic(), _cpu(), rss_start
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)
            rss_max = max(rss_max, _rss_bytes())
        wall, cpu = time.monotonic() - t0, _cpu() - cpu0
        after = _counters(app)
        latencies = arrivals.take()
        crops, batches = after["crops"] - before["crops"], after["batches"] - before["batches"]
        det_frames, det_batches = after["det_frames"] - before["det_frames"], after["det_batches"] - before["det_batches"]
        frames = {cid: after["frames"][cid] - before["frames"][cid] for cid in after["frames"]}
        dropped = {cid: after["dropped"].get(cid, 0) - before["dropped"].get(cid, 0) for cid in after["frames"]}
        model_cpu = _model_cpu(app, crops, batches, det_frames, det_batches)
    finally:
        backend = app.recognizer.backend
        backend_name, fallback = backend.name, getattr(backend, "fallback_reason", None)
        app.stop_event.set()
        app.stop()
        arrivals.close()
    return {
        "cameras": cameras, "mode": config.cameras[0].mode, "seconds": round(wall, 1),
        "fps_per_camera": round(sum(frames.values()) / wall / cameras, 2),
        "frames_dropped": sum(dropped.values()),
        "detections_per_s": round(det_frames / wall, 2) if app.detector_worker is not None else None,
        "plates_read_per_s": round(crops / wall, 2),
        "mean_batch": round(crops / float(batches), 1) if batches else None,
        "events": after["events"] - before["events"],
        "latency_ms_p50": round(1000 * float(np.percentile(latencies, 50)), 1) if latencies else None,
        "latency_ms_p99": round(1000 * float(np.percentile(latencies, 99)), 1) if latencies else None,
        "latency_count": len(latencies),
        "cpu_percent": round(100 * cpu / wall, 1),
        "rss_mb": round(rss_max / 1e6, 1), "rss_mb_start": round(rss_start / 1e6, 1),
        "model_cpu_percent": round(100 * model_cpu / wall, 1) if model_cpu is not None else None,
        "overhead": round(1 - model_cpu / cpu, 3) if model_cpu is not None and cpu > 0 else None,
        # the backend that ran, not the one asked for (TensorRT falls back to ONNX Runtime where it cannot)
        "backend": backend_name, "backend_fallback": fallback,
    }


def _counters(app):
    det = app.detector_worker
    return {"frames": {c.camera.id: c.frames for c in app.captures},
            "dropped": {c.camera.id: app.dropped_frames(c.camera.id) for c in app.captures},
            "crops": app.worker.crops_read, "batches": app.worker.batches, "events": app.events_committed,
            "det_frames": det.frames_detected if det is not None else 0, "det_batches": det.batches if det else 0}


def _model_cpu(app, crops, batches, det_frames, det_batches, seconds=2.0):
    """CPU seconds the models alone would take for what the pipeline read: their CPU per item at the
    pipeline's mean batch, measured now in this process (the pipeline's threads are idle by then: capture
    keeps running, so stop it first)."""
    from edge.bench import _timed

    for capture in app.captures:
        capture.wedge = True  # hold capture still while the models are timed alone
    time.sleep(0.5)
    total = 0.0
    rng = np.random.default_rng(0)
    if crops:
        batch = max(1, int(round(crops / float(batches))))
        items = [rng.integers(0, 256, (48, 96, 3), dtype=np.uint8) for _ in range(batch)]
        total += crops * _cpu_per_item(app.recognizer.read, items, seconds, _timed)
    if det_frames and app.detector is not None:
        batch = max(1, int(round(det_frames / float(det_batches))))
        frame = app.captures[0].last_frame
        if frame is None:
            return None
        total += det_frames * _cpu_per_item(app.detector.detect, [frame] * batch, seconds, _timed)
    return total


def _cpu_per_item(fn, items, seconds, timed):
    fn(items)  # warm
    cpu0 = _cpu()
    runs = len(timed(lambda: fn(items), seconds))
    return (_cpu() - cpu0) / (runs * len(items))


def run(camera_counts, seconds, mode="roi", fps=None, config_path=None, detect_fps=None, backend=None,
        engine_dir=None):
    """Every camera count in turn: {"machine", "runs": [...]}. A private broker unless --config is given.
    `backend` (with `engine_dir`, TensorRT's cache) in place of the config's recognizer.backend when given."""
    from edge import resources
    from edge.config.yamlload import load_yaml_text

    if config_path is None:
        try:
            config_path = resources.find_data(DEFAULT_CONFIGS[mode])
        except IOError:
            raise BenchError("no bundled config for mode %s (%s): give --config" % (mode, DEFAULT_CONFIGS[mode]))
        own_broker = True
    else:
        own_broker = False
    with open(config_path) as f:
        data = load_yaml_text(f.read(), config_path)
    base_dir = os.path.dirname(os.path.abspath(config_path))
    if backend is not None:
        data = dict(data, recognizer=dict(data.get("recognizer") or {}, backend=backend))
        if engine_dir is not None:
            data["recognizer"]["engine_dir"] = os.path.abspath(engine_dir)
    if data["cameras"][0].get("mode", "roi") != mode:
        raise BenchError("%s: its first camera is in mode %s, not %s" % (config_path, data["cameras"][0].get(
            "mode", "roi"), mode))
    work = tempfile.mkdtemp(prefix="lpr-edge-bench-")
    broker = None
    try:
        broker = PrivateBroker(work) if own_broker else None
        source = None
        if fps:
            src = data["cameras"][0]["source"]
            src = src if os.path.isabs(src) else os.path.normpath(os.path.join(base_dir, src))
            source = retimed_sample(src, fps, work)
        runs = []
        for count in camera_counts:
            state = os.path.join(work, "state-%d" % count)
            runs.append(run_once(data, config_path, base_dir, count, seconds, state, source, detect_fps,
                                 broker.port if broker else None))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"machine": machine(), "date": datetime.date.today().isoformat(), "mode": mode, "fps": fps,
            "config": config_path, "backend": runs[-1]["backend"] if runs else None, "runs": runs}


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except (IOError, OSError):
        pass
    return {"cpu": model, "cores": os.cpu_count()}
