"""The detector worker: one thread between the detect cameras' capture threads and the recognizer worker.
It takes frames round-robin across cameras (each camera already thinned to its detect_fps by its capture
thread), runs them through the detector in batches, keeps the boxes each camera's zones, masks and
min_plate_px let count, and queues their 96x48 crops for the recognizer as FrameCrops. It owns the
detector; the queues on both sides are bounded (FrameMailbox)."""
import logging
import threading
import time

from edge.capture import FrameCrops, FrameImage, SourceEnded

log = logging.getLogger("edge.detect")

IDLE_POLL_S = 0.2
DRAIN_S = 2.0  # on stop: how long the last frames may take to reach the recognizer (it reads them meanwhile)


class DetectorWorker(threading.Thread):
    def __init__(self, detector, inbox, outbox, filters, stop_event, max_batch=8, wait_for_room=None):
        threading.Thread.__init__(self, name="detector", daemon=True)
        self.detector = detector
        self.inbox = inbox  # FrameMailbox of FrameImage / SourceEnded from the detect cameras
        self.outbox = outbox  # the recognizer's FrameMailbox
        self.filters = filters  # camera id -> PlateFilter
        self.stop_event = stop_event
        self.max_batch = max_batch
        self.wait_for_room = wait_for_room or set()  # cameras whose frames must not be dropped (fast files)
        self.frames_detected = 0
        self.plates_detected = 0  # boxes the detector gave
        self.plates_kept = 0  # boxes that counted (zones, masks, size) and went to the recognizer
        self.batches = 0
        self.infer_seconds = 0.0  # wall time inside the detector (preprocess, model, decode)
        self.last_progress = time.monotonic()
        self.busy_since = None
        self.error = None
        self._drain_deadline = None  # set while draining on stop: puts then wait for room until it
        self.last_boxes = {}  # camera id -> (wall time, boxes [K,5]) of its last detected frame, for /snapshot.jpg

    def run(self):
        try:
            while not self.stop_event.is_set():
                self.last_progress = time.monotonic()
                self.step(IDLE_POLL_S)
        except Exception as exc:
            log.exception("detector worker failed")
            self.error = str(exc)
        finally:
            self.drain()

    def step(self, timeout):
        items = self.inbox.take(self.max_batch, timeout)
        frames = [i for i in items if isinstance(i, FrameImage)]
        if frames:
            self.process(frames)
        for item in items:
            if isinstance(item, SourceEnded):  # after that camera's frames: the recognizer closes its tracks
                self._put(item.camera_id, item, True)
        return bool(items)

    def process(self, frames):
        self.busy_since = start = time.monotonic()
        try:
            boxes = self.detector.detect([f.image for f in frames])
        finally:
            self.busy_since = None
        self.infer_seconds += time.monotonic() - start
        self.batches += 1
        self.frames_detected += len(frames)
        for frame, found in zip(frames, boxes):
            self.plates_detected += len(found)
            self.last_boxes[frame.camera_id] = (frame.wall_time, found)
            crops = self.filters[frame.camera_id].crops(frame.image, found)
            if not crops:
                continue
            self.plates_kept += len(crops)
            self._put(frame.camera_id, FrameCrops(frame.camera_id, frame.seq, frame.timestamp, frame.wall_time, crops),
                      frame.camera_id in self.wait_for_room)
        log.debug("detector: %d frames in %.1f ms", len(frames), (time.monotonic() - start) * 1000)

    def _put(self, camera_id, item, wait):
        """To the recognizer: a live camera's crops drop the oldest when its queue is full, as frames do; while
        draining on stop every put waits for room (the recognizer reads on meanwhile) until the deadline."""
        if self._drain_deadline is not None:
            self.outbox.put(camera_id, item, wait=True, deadline=self._drain_deadline)
        else:
            self.outbox.put(camera_id, item, wait=wait, stop_event=self.stop_event)

    def drain(self):
        """On stop: detect what is queued, so frames already taken are read (the recognizer reads on until
        this thread ends)."""
        self._drain_deadline = time.monotonic() + DRAIN_S
        try:
            while self.step(0) and time.monotonic() < self._drain_deadline:
                pass
        except Exception:
            log.exception("detector worker: draining failed")
