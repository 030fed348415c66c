"""What a slow step before READY is doing, for systemd's STATUS= line: "building TensorRT engine for
us_lprnet_baseline10_mid.onnx (42 s)". The engine build sets it; app._ExtendStartTimeout reads it."""
import contextlib
import threading
import time

_lock = threading.Lock()
_current = []  # [(what, monotonic start)]


@contextlib.contextmanager
def activity(what):
    item = (what, time.monotonic())
    with _lock:
        _current.append(item)
    try:
        yield
    finally:
        with _lock:
            _current.remove(item)


def describe():
    """The newest activity with its elapsed seconds, or None."""
    with _lock:
        if not _current:
            return None
        what, start = _current[-1]
    return "%s (%d s)" % (what, time.monotonic() - start)
