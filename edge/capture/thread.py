"""One capture thread per camera: read the source, cut the crops, queue them for the recognizer.

The thread owns its source. A live source (and a looping file) that fails is closed and reopened with
backoff (1 s doubling to 30 s), forever: a camera that comes back is picked up again. A finite source (a
file played once, an image folder) ends with a SourceEnded marker so the worker can close that camera's
tracks.

Health: the thread stamps `last_progress` on every frame and every second it waits between reopens, and
says how long the call it is inside may take (`blocked_bound_s`: an open or read with a timeout), so a
camera that is waiting or reconnecting is degraded, never wedged; only a thread that stops turning is.
"""
import logging
import threading
import time
from collections import namedtuple

from edge.capture.sources import SourceError, open_source
from edge.crop import cropper_for
from edge.redact import redact

log = logging.getLogger("edge.capture")

FrameCrops = namedtuple("FrameCrops", "camera_id seq timestamp wall_time crops")
SourceEnded = namedtuple("SourceEnded", "camera_id")
FrameImage = namedtuple("FrameImage", "camera_id seq timestamp wall_time image")
"""Mode detect: a whole frame (RGB uint8) for the detector worker."""

RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 30.0
TICK_S = 1.0  # longest wait between two progress stamps while backing off


class CaptureThread(threading.Thread):
    def __init__(self, camera, mailbox, stop_event, source=None):
        threading.Thread.__init__(self, name="capture-%s" % camera.id, daemon=True)
        self.camera = camera
        self.shown_source = redact(camera.source)
        self.mailbox = mailbox
        self.stop_event = stop_event
        self.source = source or open_source(camera)
        self.cropper = cropper_for(camera)  # None for mode detect: whole frames go to the detector
        self._last_detect_ts = None
        self.state = "starting"  # starting, opening, streaming, reconnecting, ended, failed
        self.error = None
        self.frames = 0
        self.reconnects = 0
        self.last_progress = time.monotonic()  # heartbeat for the watchdog
        self.blocked_bound_s = 0.0  # how long the source call now running may take by its own timeouts
        self.last_frame = None  # the newest RGB frame (a reference; frames are new arrays), for /snapshot.jpg
        self.waits_for_room = self.source.finite and camera.pacing == "fast"
        self._retries = not self.source.finite or getattr(self.source, "loop", False)
        self.wedge = False  # test hook (LPR_EDGE_TEST_WEDGE=camera): stop making progress

    def run(self):
        try:
            self._run()
        except Exception as exc:  # a bug must not die silently: health shows it
            log.exception("camera %s: capture thread failed", self.camera.id)
            self.state, self.error = "failed", redact(str(exc))
        finally:
            self.source.close()
            if self.state in ("ended", "failed") or self.source.finite:
                self.mailbox.put(self.camera.id, SourceEnded(self.camera.id), wait=True, stop_event=self.stop_event)

    def _run(self):
        delay = RECONNECT_MIN_S
        while not self.stop_event.is_set():
            try:
                self._open()
            except SourceError as exc:
                if not self._retries:
                    log.error("camera %s: %s", self.camera.id, exc)
                    self.state, self.error = "failed", str(exc)
                    return
                self._backoff(exc, delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            if self.reconnects:
                log.info("camera %s: streaming again from %s after %d reconnect attempt(s)", self.camera.id,
                         self.shown_source, self.reconnects)
            else:
                log.info("camera %s: streaming from %s", self.camera.id, self.shown_source)
            self.state, self.error = "streaming", None
            delay = RECONNECT_MIN_S
            try:
                if self._stream():
                    self._ended()
                    return
            except SourceError as exc:
                self.source.close()
                self._backoff(exc, delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    def _open(self):
        self.state = "opening" if not self.reconnects else "reconnecting"
        self.blocked_bound_s = getattr(self.camera, "open_timeout_s", 10.0)
        self.last_progress = time.monotonic()
        try:
            self.source.open()
        finally:
            self.blocked_bound_s = 0.0
            self.last_progress = time.monotonic()

    def _ended(self):
        truncated = getattr(self.source, "truncated", None)
        if truncated:  # the file stopped before its own frame count: damaged, not done
            self.state, self.error = "failed", truncated
            log.error("camera %s: %s", self.camera.id, truncated)
        else:
            self.state = "ended"
            log.info("camera %s: source ended after %d frames", self.camera.id, self.frames)

    def _backoff(self, exc, delay):
        self.state, self.error = "reconnecting", str(exc)
        self.reconnects += 1
        log.warning("camera %s: %s; retrying in %.0f s", self.camera.id, exc, delay)
        end = time.monotonic() + delay
        while not self.stop_event.is_set():  # waiting is progress: stamp it, tick by tick
            self.last_progress = time.monotonic()
            left = end - self.last_progress
            if left <= 0:
                break
            self.stop_event.wait(min(TICK_S, left))

    def _stream(self):
        """Read until the source ends (True) or stop is asked (False); SourceError on a live failure."""
        min_period = 1.0 / self.camera.fps if self.camera.fps else 0.0
        last_ts = None
        seq = 0
        self.blocked_bound_s = getattr(self.camera, "stall_timeout_s", 5.0) if not self.source.finite else 0.0
        while not self.stop_event.is_set():
            while self.wedge and not self.stop_event.is_set():
                time.sleep(0.05)
            item = self.source.read()
            self.last_progress = time.monotonic()
            if item is None:
                return True
            ts, frame = item
            if min_period and last_ts is not None and ts - last_ts < min_period:
                continue
            last_ts = ts
            seq += 1
            self.frames += 1
            self.last_frame = frame
            item = self._item(seq, ts, frame)
            if item is not None:
                self.mailbox.put(self.camera.id, item, wait=self.waits_for_room, stop_event=self.stop_event)
        return False

    def _item(self, seq, ts, frame):
        """What goes to the next stage: the ROI crops, or (mode detect) the whole frame for the detector,
        at most detect_fps of them a second (the snapshot still sees every frame)."""
        if self.cropper is not None:
            return FrameCrops(self.camera.id, seq, ts, time.time(), self.cropper.crops(frame))
        period = 1.0 / self.camera.detect_fps if self.camera.detect_fps else 0.0
        # 5% slack: a 10 fps stream's frames come 0.1 s apart give or take rounding, and detect_fps 10 means all
        if period and self._last_detect_ts is not None and 0 <= ts - self._last_detect_ts < period * 0.95:
            return None
        self._last_detect_ts = ts
        return FrameImage(self.camera.id, seq, ts, time.time(), frame)
