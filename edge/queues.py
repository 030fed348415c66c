"""FrameMailbox: the bounded queues between the capture threads and the recognizer worker.

One deque per camera. A live camera's `put` never blocks: when its queue is full the oldest frame is
dropped and counted. A file played 'fast' uses `put(..., wait=True)` to wait for room instead, so a
batch run loses nothing. The worker takes frames round-robin across cameras, so one busy camera
cannot starve the others.
"""
import collections
import threading
import time


class FrameMailbox:
    def __init__(self):
        self._cond = threading.Condition()
        self._queues = collections.OrderedDict()
        self._limits = {}
        self.dropped = collections.Counter()
        self._next = 0

    def add_camera(self, camera_id, size):
        with self._cond:
            self._queues[camera_id] = collections.deque()
            self._limits[camera_id] = size

    def put(self, camera_id, item, wait=False, stop_event=None, deadline=None):
        """Queue `item`; returns False if a frame had to be dropped to make room. With `wait`, wait for room
        until `stop_event` is set or the monotonic `deadline` passes."""
        with self._cond:
            queue = self._queues[camera_id]
            limit = self._limits[camera_id]
            if wait:
                while len(queue) >= limit and not (stop_event is not None and stop_event.is_set()) and \
                        (deadline is None or time.monotonic() < deadline):
                    self._cond.wait(0.1)
            dropped = False
            while len(queue) >= limit:
                queue.popleft()
                self.dropped[camera_id] += 1
                dropped = True
            queue.append(item)
            self._cond.notify_all()
            return not dropped

    def take(self, max_items, timeout):
        """Up to `max_items` frames, round-robin across cameras; waits up to `timeout` s for the first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(self._queues.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            out = []
            names = list(self._queues)
            while len(out) < max_items and any(self._queues.values()):
                name = names[self._next % len(names)]
                self._next += 1
                if self._queues[name]:
                    out.append(self._queues[name].popleft())
            self._cond.notify_all()
            return out

    def wait_for_items(self, timeout):
        """Block until some frame is queued or `timeout` passes; True if a frame is there."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(self._queues.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def depth(self, camera_id=None):
        with self._cond:
            if camera_id is not None:
                return len(self._queues[camera_id])
            return sum(len(q) for q in self._queues.values())
