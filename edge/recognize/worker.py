"""The recognizer worker: one thread that batches crops across cameras (up to max_batch, waiting at most
max_wait_ms once it holds one), runs LPRNet, and hands each read to the tracker; finished tracks become
events committed to the outbox. It owns the recognizers (one per model slot a camera uses), the tracker
and its outbox connection. The crops of one gather are split by slot: a batch never mixes models."""
import collections
import logging
import threading
import time

from edge.capture import FrameCrops, SourceEnded
from edge.track import PlateRead

log = logging.getLogger("edge.recognize")

DEFAULT_SLOT = "default"
IDLE_POLL_S = 0.2
UPSTREAM_DRAIN_S = 2.5  # on stop, how long to read on while the detector worker hands on its last crops
RECENT_READS = 50  # per camera, for /reads


class RecognizerWorker(threading.Thread):
    def __init__(self, recognizers, mailbox, tracker, emit, stop_event, max_batch, max_wait_ms, metrics=None,
                 tick=None, recent_reads=RECENT_READS, slot_of=None):
        threading.Thread.__init__(self, name="recognizer", daemon=True)
        # slot -> Recognizer; a single recognizer is the default slot's (every camera reads with it)
        self.recognizers = dict(recognizers) if isinstance(recognizers, dict) else {DEFAULT_SLOT: recognizers}
        self.slot_of = dict(slot_of or {})  # camera id -> slot; cameras not named read with the default slot
        self.mailbox = mailbox
        self.tracker = tracker
        self.emit = emit  # callable(track) -> commits the event; runs in this thread
        self.tick = tick  # callable() once per step, in this thread (retries commits a full disk held back)
        self.stop_event = stop_event
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.ended_cameras = set()
        self.crops_read = 0
        self.batches = 0
        self.last_progress = time.monotonic()
        self.busy_since = None  # set while inside a batch: the watchdog's wedge detector reads it
        self.error = None
        self.metrics = metrics
        self.wedge = False  # test hook (LPR_EDGE_TEST_WEDGE=recognizer): hang inside a batch
        # camera -> its last reads, in memory only (personal data: events.recent_reads bounds it)
        self.recent = collections.defaultdict(lambda: collections.deque(maxlen=recent_reads))
        self._swaps = {}  # slot -> (recognizer, on_swap, done event): taken between two batches
        self._swaps_lock = threading.Lock()  # the OTA thread adds, this thread takes
        self.upstream = None  # the detector worker feeding the mailbox, if any (see drain)
        self.infer_seconds = 0.0  # wall time inside the recognizer (preprocess, model, decode): `bench pipeline`
        self.edge_streak = {}  # camera -> (first, last wall time, count) of at_edge reads with none kept since

    @property
    def recognizer(self):
        """The default slot's recognizer (else the only one): what single-model callers mean."""
        return self.recognizers.get(DEFAULT_SLOT) or next(iter(self.recognizers.values()))

    def slot_for(self, camera_id):
        return self.slot_of.get(camera_id, DEFAULT_SLOT)

    def swap_recognizer(self, slot, recognizer, on_swap=None):
        """Hand over a loaded recognizer for one slot (a model update, a rollback). The worker takes it
        between two batches, so no queued frame goes unread and no batch mixes models; `on_swap(old, new)`
        runs in this thread at that moment. Returns an Event set once the new recognizer serves."""
        done = threading.Event()
        with self._swaps_lock:
            self._swaps[slot] = (recognizer, on_swap, done)
        return done

    def _take_swaps(self):
        with self._swaps_lock:
            pending, self._swaps = self._swaps, {}
        for slot, (recognizer, on_swap, done) in pending.items():
            old, self.recognizers[slot] = self.recognizers.get(slot), recognizer
            try:
                if on_swap is not None:
                    on_swap(old, recognizer)
            finally:
                done.set()

    def run(self):
        try:
            while not self.stop_event.is_set():
                self.last_progress = time.monotonic()
                self.step()
        except Exception as exc:
            log.exception("recognizer worker failed")
            self.error = str(exc)
        finally:
            self.drain()

    def _gather(self):
        """Frames whose crops fill one batch, or whatever came within max_wait after the first."""
        items = self.mailbox.take(self.max_batch, IDLE_POLL_S)
        if not items:
            return items
        deadline = time.monotonic() + self.max_wait_s
        while self._crop_count(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            more = self.mailbox.take(self.max_batch - self._crop_count(items), remaining)
            if not more:
                break
            items.extend(more)
        return items

    @staticmethod
    def _crop_count(items):
        return sum(len(i.crops) for i in items if isinstance(i, FrameCrops))

    def step(self):
        if self._swaps:
            self._take_swaps()
        items = self._gather()
        frames = [i for i in items if isinstance(i, FrameCrops)]
        if frames:
            self.process(frames)
        for item in items:
            if isinstance(item, SourceEnded):
                self.ended_cameras.add(item.camera_id)
                for track in self.tracker.close_camera(item.camera_id):
                    self.emit(track)
        for track in self.tracker.expire_idle(time.time()):
            self.emit(track)
        if self.tick is not None:
            self.tick()

    def process(self, frames):
        """Read the frames' crops, one batch per model slot (in the order the slots first appear)."""
        by_slot = collections.OrderedDict()
        for frame in frames:
            by_slot.setdefault(self.slot_for(frame.camera_id), []).extend((frame, crop) for crop in frame.crops)
        for slot, flat in by_slot.items():
            self._read(self.recognizers[slot], flat)

    def _read(self, recognizer, flat):
        self.busy_since = start = time.monotonic()
        try:
            while self.wedge and not self.stop_event.is_set():
                time.sleep(0.05)
            reads = recognizer.read([crop.image for _, crop in flat])
        finally:
            self.busy_since = None
        self.infer_seconds += time.monotonic() - start
        if self.metrics is not None:
            self.metrics.observe_batch(len(flat), time.monotonic() - start)
        self.batches += 1
        self.crops_read += len(flat)
        for (frame, crop), read in zip(flat, reads):
            plate_read = PlateRead(frame.camera_id, crop.roi_id, frame.timestamp, frame.wall_time, read.text,
                                   read.score, read.char_scores, crop.image, crop.box, crop.det_score, crop.zone,
                                   read.at_edge)
            for track in self.tracker.add(plate_read):
                self.emit(track)
            self._remember(plate_read)

    def _remember(self, read):
        reason = self.tracker.last_reason
        entry = {"time": round(read.wall_time, 3), "roi": read.roi_id, "text": self.tracker.last_text,
                 "raw": read.text, "score": round(read.score, 4), "kept": reason is None, "reason": reason or "kept"}
        self.recent[read.camera_id].append(entry)
        self._streak(read.camera_id, read.wall_time, reason)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("camera %s roi %s: read %r score %.3f: %s", read.camera_id, read.roi_id, entry["text"],
                      read.score, "kept" if reason is None else "rejected (%s)" % reason)

    def _streak(self, camera_id, wall_time, reason):
        """Per camera: the run of at_edge reads with no kept read between them (first, last, count), for
        health: a ROI that cuts every plate is degraded, not healthy. Other rejections (an empty road reads
        short or unsure text) neither extend nor end a run."""
        if reason is None:
            self.edge_streak.pop(camera_id, None)
        elif reason == "at_edge":
            first, _, count = self.edge_streak.get(camera_id, (wall_time, wall_time, 0))
            self.edge_streak[camera_id] = (first, wall_time, count + 1)

    def drain(self):
        """On stop: read what is queued and close every open track, so nothing recognized is lost. With a
        detector upstream, wait for it to hand on what it still holds first (it drains too)."""
        deadline = time.monotonic() + UPSTREAM_DRAIN_S
        try:
            while self.upstream is not None and self.upstream.is_alive() and time.monotonic() < deadline:
                frames = [i for i in self.mailbox.take(self.max_batch, 0.05) if isinstance(i, FrameCrops)]
                if frames:  # read while the detector hands on its last crops, so its puts find room
                    self.process(frames)
            while True:
                items = self.mailbox.take(self.max_batch, 0)
                if not items:
                    break
                frames = [i for i in items if isinstance(i, FrameCrops)]
                if frames:
                    self.process(frames)
            for track in self.tracker.close_all():
                self.emit(track)
            if self.tick is not None:
                self.tick()
        except Exception:
            log.exception("recognizer worker: draining failed")
