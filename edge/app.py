"""The daemon: one App object with explicit init, start and stop steps (as Frigate's app.py).

    capture threads (one per camera) -> FrameMailbox (bounded, drop oldest) -> recognizer worker
    (batches crops across cameras, LPRNet, tracker) -> outbox (SQLite, committed) -> MQTT publisher

Cameras in mode 'detect' send whole frames (at detect_fps) to another FrameMailbox instead, which the
detector worker (edge/detect: batches frames across cameras, finds plates, keeps those in the camera's zones)
turns into plate crops for the recognizer's mailbox.

Each camera reads with the model of its slot (cameras[].model; config model: is slot default, models: the
others); one recognizer is loaded per slot some camera uses, and events carry the model that read them.

Stop (SIGTERM/SIGINT, or every source ended with exit_when_sources_end) ends within 5 s: capture stops,
the worker reads what is queued and closes open tracks, and the publisher publishes what the outbox
holds until the deadline; what is left stays in the outbox for the next start.
"""
import json
import logging
import os
import signal
import threading
import time

from edge.capture import CaptureThread
from edge.events import EventIds, build_event, encode, frame_jpeg, frigate_payload, snapshot_jpeg
from edge.outbox import CommitBuffer, Outbox, OutboxWriteError
from edge.ota.daemon import OtaService
from edge import __version__
from edge.events import utc_iso
from edge.publish.homeassistant import HomeAssistantDiscovery
from edge.publish.mqtt import MqttPublisher
from edge.publish.topics import Topics
from edge.queues import FrameMailbox
from edge.recognize.worker import RecognizerWorker
from edge.service import health
from edge.service.http import HealthServer
from edge.service.metrics import Metrics
from edge.service.notify import Notifier
from edge.track import KnownPlates, Tracker

log = logging.getLogger("edge.app")

STOP_BUDGET_S = 5.0
TEST_WEDGE_ENV = "LPR_EDGE_TEST_WEDGE"  # test hook: recognizer, camera or mqtt stops making progress


class App:
    def __init__(self, config):
        self.config = config
        self.stop_event = threading.Event()  # capture and worker; the signal handlers set it
        self.publisher_stop = threading.Event()  # set only after the worker drained, so its last events go out
        self.mailbox = FrameMailbox()
        self.captures = []
        self.recognizers = {}  # model slot -> Recognizer, for the slots the cameras use (OTA swaps them)
        self.worker = None
        self.publisher = None
        self.event_ids = EventIds()
        self.events_committed = 0
        self.events_dropped = 0
        self.started_at = None
        self.model_load_seconds = 0.0
        self.notifier = Notifier()
        self.metrics = Metrics()
        self.http = None
        self.service_thread = None
        self._worker_outbox = None  # opened in the worker thread: SQLite connections are per thread
        self.commits = CommitBuffer()  # events a full disk could not take yet, retried in order
        self.camera_fps = {}  # camera id -> frames/s over the service thread's last tick
        self.ota = None  # model updates (edge/ota)
        self.detector = None  # edge/detect, for cameras in mode 'detect'
        self.detect_mailbox = None
        self.detector_worker = None

    # --- init: everything that can fail on bad input, before any thread starts -----------------
    def init(self):
        cfg = self.config
        start = time.monotonic()
        self.ota = OtaService(self)  # OTA hook: an installed model on the state dir replaces a slot's model
        for slot in cfg.used_slots():
            model_config = self.ota.model_config(slot)
            with _ExtendStartTimeout(self.notifier, "loading model %s" % os.path.basename(model_config.path)):
                self.recognizers[slot] = recognizer = self.ota.load_recognizer(model_config, slot)
            log.info("model %s %s (%s, %d characters) on %s %s%s", recognizer.model.name, recognizer.model.version,
                     recognizer.model.path, len(recognizer.model.characters), recognizer.backend.name,
                     ",".join(recognizer.backend.providers),
                     "" if slot == "default" else " for slot %s (cameras %s)" % (
                         slot, ", ".join(c.id for c in cfg.cameras if c.model == slot)))
        self.model_load_seconds = time.monotonic() - start
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.device_id)
        detect_cameras = [c for c in cfg.cameras if c.mode == "detect"]
        if detect_cameras:
            self._load_detector()
        for camera in cfg.cameras:
            self.mailbox.add_camera(camera.id, camera.queue_size)
            inbox = self.detect_mailbox if camera.mode == "detect" else self.mailbox
            self.captures.append(CaptureThread(camera, inbox, self.stop_event))
        if detect_cameras:
            self._init_detector_worker(detect_cameras)
        limits = (cfg.outbox.max_events, cfg.outbox.max_bytes)
        _private_dir(cfg.state_dir)
        try:  # a damaged file is salvaged here, before any thread; a full disk is reported and retried later
            Outbox(cfg.outbox.path, *limits).close()
        except OutboxWriteError as exc:
            log.error("outbox: %s; starting anyway, events are held in memory until it can be written", exc)
        tracker = Tracker(cfg.tracking, {c.id: c.format for c in cfg.cameras})
        self.known = KnownPlates(cfg.tracking.known_plates, cfg.tracking.match_distance)
        max_batch = cfg.recognizer.max_batch
        engine_batches = [r.backend.max_batch for r in self.recognizers.values() if r.backend.max_batch]
        if engine_batches:
            max_batch = min(max_batch, min(engine_batches) * 4)
        self.worker = RecognizerWorker(self.recognizers, self.mailbox, tracker, self._emit, self.stop_event,
                                       max_batch, cfg.recognizer.max_wait_ms, self.metrics, tick=self._retry_commits,
                                       recent_reads=cfg.events.recent_reads,
                                       slot_of={c.id: c.model for c in cfg.cameras})
        self.worker.upstream = self.detector_worker  # on stop it reads the detector's last crops too
        discovery = None
        if cfg.home_assistant.enabled:
            discovery = HomeAssistantDiscovery(
                cfg.home_assistant, self.topics, cfg.device_id, [(c.id, [r.id for r in c.rois]) for c in cfg.cameras],
                known_plates=sorted(cfg.tracking.known_plates), snapshot_topic=cfg.events.snapshot == "topic",
                frame_topic=cfg.events.frame_snapshot,
                announced_path=os.path.join(cfg.state_dir, "ha_discovery.json"))
        self.publisher = MqttPublisher(cfg.mqtt, cfg.device_id, self.publisher_stop, cfg.outbox.path, limits,
                                       print_events=cfg.print_events, status_fn=self.status, discovery=discovery,
                                       retention_s=cfg.events.retention_h * 3600.0)
        self.ota.attach()  # OTA hook: MQTT commands, hot swap, probation
        self.metrics.attach(self)
        if cfg.health.port:
            self.http = HealthServer(cfg.health.host, cfg.health.port, self.health_report, self.metrics.registry,
                                     routes={"/snapshot.jpg": self.snapshot_page, "/reads": self.reads_page})
        self._apply_test_wedge(os.environ.get(TEST_WEDGE_ENV))

    def _load_detector(self):
        from edge.detect import Detector
        from edge.recognize.backends import infer_options

        d = self.config.detector
        options = infer_options(self.config.recognizer)
        options.max_batch = d.max_batch
        with _ExtendStartTimeout(self.notifier, "loading detector %s" % os.path.basename(d.path)):
            self.detector = Detector.load(d.path, self.config.recognizer.backend, options, d.threshold, d.nms_iou,
                                          d.name, d.version)
        w, h = self.detector.input_size
        log.info("detector %s (%s, input %dx%d) on %s", self.detector.name, self.detector.kind, w, h,
                 self.detector.session.name)
        self.detect_mailbox = FrameMailbox()

    def _init_detector_worker(self, cameras):
        from edge.detect import DetectorWorker, PlateFilter

        filters = {}
        for camera in cameras:
            self.detect_mailbox.add_camera(camera.id, camera.queue_size)
            filters[camera.id] = PlateFilter(camera.id, camera.zones, camera.masks, camera.min_plate_px,
                                             self.config.detector.margin)
        fast = set(c.camera.id for c in self.captures if c.camera.mode == "detect" and c.waits_for_room)
        self.detector_worker = DetectorWorker(self.detector, self.detect_mailbox, self.mailbox, filters,
                                              self.stop_event, self.config.detector.max_batch, wait_for_room=fast)

    def _apply_test_wedge(self, stage):
        if not stage:
            return
        log.warning("test hook %s=%s: that stage will stop making progress", TEST_WEDGE_ENV, stage)
        if stage == "recognizer":
            self.worker.wedge = True
        elif stage == "camera":
            for capture in self.captures:
                capture.wedge = True
        elif stage == "mqtt":
            self.publisher.wedge = True

    def _outbox_for_worker(self):
        if self._worker_outbox is None:
            self._worker_outbox = Outbox(self.config.outbox.path, self.config.outbox.max_events,
                                         self.config.outbox.max_bytes)
        return self._worker_outbox

    def _emit(self, track):
        """Runs in the worker thread: commit the event to the outbox (its own connection); an event the disk
        cannot take now is held and committed before any newer one, so it is late, never lost."""
        mode = self.config.events.snapshot
        jpeg = snapshot_jpeg(track, self.config.events.snapshot_quality) if mode != "none" else None
        event_id = self.event_ids.new()
        model = self.recognizers[self.worker.slot_for(track.camera_id)].model  # the slot that read it
        event = build_event(track, event_id, self.config.device_id, model,
                            known=self.known.match(track.best.text), snapshot=jpeg if mode == "inline" else None,
                            detector=self.detector)
        extra = ()
        if mode == "topic" and jpeg is not None:  # same transaction: the snapshot is as durable as its event
            extra = ((event_id + ".snapshot", self.topics.snapshot(track.camera_id), jpeg, True),)
        frame = self._frame_snapshot(track.camera_id)
        if frame is not None:
            extra += ((event_id + ".frame.snapshot", self.topics.frame(track.camera_id), frame, True),)
        payload = encode(event if self.config.events.format != "frigate" else
                         frigate_payload(event, track.best.wall_time))
        try:
            outbox = self._outbox_for_worker()
        except OutboxWriteError as exc:
            self.commits.hold(event_id, self.topics.events, payload, extra, exc)
            outbox = None
        if outbox is not None:
            self.events_dropped += self.commits.commit(outbox, event_id, self.topics.events, payload, extra)
        self.events_committed += 1
        held = any(h[0] == event_id for h in self.commits.held)
        log.info("camera %s: plate %s (score %.2f, %d reads, roi %s%s) %s %s", track.camera_id, event["plate"],
                 event["score"], event["read_count"], track.roi_id,
                 ", known: %s" % event["known"] if event["known"] else "", "held" if held else "event", event_id)

    def _frame_snapshot(self, camera_id):
        """The camera's newest frame (the car is still in view when its event is made), if frames are sent."""
        if not self.config.events.frame_snapshot:
            return None
        for capture in self.captures:
            if capture.camera.id == camera_id and capture.last_frame is not None:
                return frame_jpeg(capture.last_frame, self.config.events.snapshot_quality)
        return None

    def _retry_commits(self):
        """Worker tick: commit what a full disk held back, as soon as there is room again."""
        if not self.commits.held:
            return
        try:
            outbox = self._outbox_for_worker()
        except OutboxWriteError as exc:
            self.commits.failed(exc)
            return
        self.events_dropped += self.commits.flush(outbox)

    @property
    def recognizer(self):
        """The default slot's recognizer, else the first slot's: what single-model views show."""
        return self.recognizers.get("default") or next(iter(self.recognizers.values()), None)

    def models(self):
        """Per model slot: the model serving it, its backend and the cameras reading with it."""
        out = {}
        for slot, recognizer in self.recognizers.items():
            m = recognizer.model
            out[slot] = {"name": m.name, "version": m.version, "sha256": m.sha256, "backend": recognizer.backend.name,
                         "cameras": [c.id for c in self.config.cameras if c.model == slot]}
        return out

    def status(self):
        """The appliance's state for the retained status topic (and, later, the health endpoint)."""
        model = self.recognizer.model
        depth = self.publisher.outbox_depth or (0, 0)
        return {
            "device_id": self.config.device_id,
            "state": "stopped" if self.stop_event.is_set() else "running",
            "version": __version__,
            "timestamp": utc_iso(time.time()),
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0.0,
            "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
            "models": self.models(),
            "backend": self.recognizer.backend.name,
            "backend_fallback_reason": self.recognizer.backend.fallback_reason,  # [trt] why not tensorrt, or None
            "cameras": [{"id": c.camera.id, "state": c.state, "frames": c.frames, "reconnects": c.reconnects,
                         "fps": round(self.camera_fps.get(c.camera.id, 0.0), 1),
                         "dropped_frames": self.dropped_frames(c.camera.id), "error": c.error}
                        for c in self.captures],
            "events": self.events_committed,
            "events_dropped": self.events_dropped,
            "published": self.publisher.published,
            "refused": self.publisher.rejected,
            "outbox_events": depth[0],
            "outbox_snapshots": self.publisher.outbox_snapshots,
            "events_held": len(self.commits.held),
            "detector": self._detector_status(),
        }

    def dropped_frames(self, camera_id):
        """Frames a full queue dropped: the recognizer's, and for a detect camera the detector's too."""
        dropped = self.mailbox.dropped[camera_id]
        if self.detect_mailbox is not None:
            dropped += self.detect_mailbox.dropped[camera_id]
        return dropped

    def _detector_status(self):
        """Mode detect: the detector model and what it found (None without detect cameras)."""
        if self.detector is None:
            return None
        worker = self.detector_worker
        return dict(self.detector.describe(), frames=worker.frames_detected, plates_found=worker.plates_detected,
                    plates_kept=worker.plates_kept)

    # --- start / run / stop --------------------------------------------------------------------
    def health_report(self):
        report = health.report(health.check_app(self, self.config.health.stage_deadline_s))
        report.update({"device_id": self.config.device_id, "version": __version__,
                       "backend": self.recognizer.backend.name, "models": self.models(),
                       "cameras": {c.camera.id: {"state": c.state, "frames": c.frames,
                                                 "fps": round(self.camera_fps.get(c.camera.id, 0.0), 1)}
                                   for c in self.captures}})
        return report

    # --- the installer's views (HTTP threads; they only read) --------------------------------------
    def _capture(self, query):
        ids = [c.camera.id for c in self.captures]
        camera_id = query.get("camera") or (ids[0] if len(ids) == 1 else None)
        for capture in self.captures:
            if capture.camera.id == camera_id:
                return capture, None
        return None, (404, "text/plain", ("unknown camera %r: ?camera= one of %s\n" % (
            query.get("camera"), ", ".join(ids))).encode("utf-8"))

    def snapshot_page(self, query):
        from edge.service.snapshot import annotate, jpeg

        capture, error = self._capture(query)
        if error:
            return error
        frame = capture.last_frame
        if frame is None:
            return 503, "text/plain", ("camera %s has sent no frame yet (%s)\n" % (capture.camera.id, capture.state)
                                       ).encode("utf-8")
        reads = list(self.worker.recent.get(capture.camera.id, ()))
        boxes = ()
        if self.detector_worker is not None and capture.camera.mode == "detect":
            boxes = self.detector_worker.last_boxes.get(capture.camera.id, (None, ()))[1]
        return 200, "image/jpeg", jpeg(annotate(frame, capture.camera, reads, boxes))

    def reads_page(self, query):
        capture, error = self._capture(query)
        if error:
            return error
        reads = list(self.worker.recent.get(capture.camera.id, ()))
        try:
            limit = max(1, int(query.get("n", len(reads) or 1)))
        except ValueError:
            return 400, "text/plain", b"n must be a number\n"
        body = {"camera": capture.camera.id, "reads": reads[-limit:]}
        return 200, "application/json", json.dumps(body, ensure_ascii=False).encode("utf-8")

    def start(self):
        self.started_at = time.time()
        if self.http is not None:
            self.http.start()
            log.info("health and metrics on http://%s:%d/healthz and /metrics", self.config.health.host, self.http.port)
        self.publisher.start()
        self.ota.start()  # OTA hook
        self.worker.start()
        if self.detector_worker is not None:
            self.detector_worker.start()
        for capture in self.captures:
            capture.start()
        self.service_thread = ServiceThread(self)
        self.service_thread.start()
        self.notifier.notify(READY=1, STATUS="running: %d camera(s)" % len(self.captures))
        log.info("lpr-edge running: device %s, %d camera(s), profile %s", self.config.device_id,
                 len(self.captures), self.config.device_profile)

    def sources_done(self):
        """Every camera's source ended and the worker has seen each end."""
        return all(c.state in ("ended", "failed") for c in self.captures) and \
            len(self.worker.ended_cameras) == len(self.captures)

    def run_until_stopped(self, poll_s=0.2):
        """Block until a signal, or until every source ended (exit_when_sources_end) and all is published."""
        while not self.stop_event.is_set():
            if self.config.exit_when_sources_end and self.sources_done() and self.mailbox.depth() == 0:
                depth = self.publisher.outbox_depth
                if depth is not None and depth[0] == 0 and self.publisher.connected and not self.commits.held \
                        and self.events_committed <= self.publisher.published + self.publisher.rejected:
                    log.info("all sources ended and every event is published; stopping")
                    break
                if not self.publisher.connected and self.publisher.state in ("refused", "error"):
                    log.error("all sources ended but the broker is unreachable (%s); %d events wait in the outbox",
                              self.publisher.last_error, (depth or (0,))[0])
                    return 1
            if not self.worker.is_alive() and self.worker.error:
                log.error("recognizer worker died: %s", self.worker.error)
                return 1
            detector = self.detector_worker
            if detector is not None and not detector.is_alive() and detector.error:
                log.error("detector worker died: %s", detector.error)  # its cameras' ends would never come
                return 1
            self.stop_event.wait(poll_s)
        return self._sources_exit_code()

    def _sources_exit_code(self):
        """1 when a source failed (a damaged or undecodable file, say), so a batch run does not pass as done."""
        failed = [c for c in self.captures if c.state == "failed"]
        for c in failed:
            log.error("camera %s: source failed: %s", c.camera.id, c.error)
        return 1 if failed else 0

    def stop(self):
        """Ordered stop within STOP_BUDGET_S: capture, worker drain, publisher drain."""
        deadline = time.monotonic() + STOP_BUDGET_S
        self.notifier.notify(STOPPING=1, STATUS="stopping")
        self.stop_event.set()
        if self.ota is not None:
            self.ota.stop()  # OTA hook: no swap while stopping; a probation left open rolls back at the next start
        for capture in self.captures:
            capture.join(max(0.1, min(1.0, deadline - time.monotonic())))
        if self.detector_worker is not None:  # it detects what is queued, then the recognizer reads that
            self.detector_worker.join(max(0.1, deadline - time.monotonic() - 3.0))
        self.worker.join(max(0.1, deadline - time.monotonic() - 2.5))
        self.publisher.drain_then_stop(max(0.1, deadline - time.monotonic() - 0.5))
        self.publisher_stop.set()
        self.publisher.join(max(0.1, deadline - time.monotonic() - 0.2))
        if self.publisher.is_alive():
            log.warning("publisher still busy at the stop deadline; unpublished events stay in the outbox")
        for recognizer in self.recognizers.values():
            recognizer.close()
        if self.detector is not None and not (self.detector_worker and self.detector_worker.is_alive()):
            self.detector.close()  # never under a thread still inside it (a slow drain: the process ends anyway)
        if self.http is not None:
            self.http.stop()
        self.notifier.close()
        log.info("stopped: %d events committed, %d published this run, %d waiting in the outbox",
                 self.events_committed, self.publisher.published, (self.publisher.outbox_depth or (0,))[0])


def _private_dir(path):
    """The state dir holds plate data: readable by the service user only (systemd's StateDirectory does
    the same with StateDirectoryMode=0700)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    try:
        if os.stat(path).st_uid == os.getuid():
            os.chmod(path, 0o700)
    except OSError as exc:
        log.warning("state dir %s: cannot make it private: %s", path, exc)


def install_signal_handlers(stop_event):
    def handler(signum, frame):
        log.info("signal %d: stopping", signum)
        stop_event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class _ExtendStartTimeout:
    """While a slow step runs before READY=1 (a model load, a TensorRT engine build), keep pushing
    systemd's start timeout out with EXTEND_TIMEOUT_USEC, and say what is happening in STATUS."""

    INTERVAL_S = 10.0

    def __init__(self, notifier, what):
        self.notifier, self.what = notifier, what
        self._done = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.notifier.enabled:
            self._thread = threading.Thread(target=self._run, name="extend-timeout", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        from edge.infer import progress  # [trt] "building TensorRT engine for <model> (<n> s)" while it builds

        while True:
            self.notifier.notify(EXTEND_TIMEOUT_USEC=int(3 * self.INTERVAL_S * 1e6),
                                 STATUS=progress.describe() or self.what)
            if self._done.wait(self.INTERVAL_S):
                return

    def __exit__(self, *exc):
        self._done.set()
        if self._thread is not None:
            self._thread.join(1.0)
        return False


class ServiceThread(threading.Thread):
    """Every tick: judge the stages' health; send STATUS= (cameras, fps, outbox, MQTT) and, only while no
    stage is failed, WATCHDOG=1. A wedged stage therefore stops the pings and systemd restarts us."""

    def __init__(self, app):
        threading.Thread.__init__(self, name="service", daemon=True)
        self.app = app
        usec = app.notifier.watchdog_usec
        self.interval = usec / 2e6 if usec else 5.0
        self._frames = None
        self._per_camera = {}
        self._withholding = None

    def run(self):
        while not self.app.stop_event.wait(self.interval):
            self.tick()

    def tick(self):
        app = self.app
        components = health.check_app(app, app.config.health.stage_deadline_s)
        state = health.overall(components)
        frames = sum(c.frames for c in app.captures)
        fps = (frames - self._frames) / self.interval if self._frames is not None else 0.0
        self._frames = frames
        for c in app.captures:
            before = self._per_camera.get(c.camera.id)
            if before is not None:
                app.camera_fps[c.camera.id] = (c.frames - before) / self.interval
            self._per_camera[c.camera.id] = c.frames
        streaming = sum(1 for c in app.captures if c.state == "streaming")
        status = "%s: %d/%d cameras streaming, %.1f fps, outbox %d, mqtt %s" % (
            state, streaming, len(app.captures), fps, (app.publisher.outbox_depth or (0,))[0], app.publisher.state)
        failed = [c for c in components if c.state == health.FAILED]
        if failed:
            reason = "; ".join("%s: %s" % (c.name, c.reason) for c in failed)
            if reason != self._withholding:
                log.error("watchdog: withholding the ping: %s", reason)
            self._withholding = reason
            app.notifier.notify(STATUS=status + " | " + reason)
        else:
            if self._withholding:
                log.info("watchdog: every stage is making progress again")
            self._withholding = None
            fields = {"STATUS": status}
            if app.notifier.watchdog_usec:
                fields["WATCHDOG"] = 1
            app.notifier.notify(**fields)
