"""Plate events: the JSON payload published on <prefix>/<device_id>/events (schema in
configs/schema/event.schema.json). Field names follow Frigate's tracked_object_update where they mean
the same (plate, score, camera, timestamp, plate_box). Delivery is at least once: consumers dedup by id.
"""
import base64
import datetime
import json
import os
import threading
import time

SCHEMA_ID = "lpr-edge/plate-event/1"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class EventIds:
    """ULID-style ids: 48-bit milliseconds + 80 random bits in Crockford base32 (26 characters). They
    sort by creation time and stay monotonic within one millisecond (the random part is incremented)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self, now=None):
        ms = int((time.time() if now is None else now) * 1000)
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = (self._last_rand + 1) & ((1 << 80) - 1)
            else:
                rand = int.from_bytes(os.urandom(10), "big")
            self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | rand
        return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def utc_iso(ts):
    """UTC ISO-8601 with milliseconds and a Z, e.g. 2026-11-24T03:00:00.123Z."""
    dt = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def snapshot_jpeg(track, quality):
    """The best read's plate crop (what the model saw) as JPEG bytes."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(track.best.image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


FRAME_SNAPSHOT_WIDTH = 640


def frame_jpeg(frame_rgb, quality, width=FRAME_SNAPSHOT_WIDTH):
    """A full frame as JPEG bytes, downscaled to at most `width` pixels wide (plate events stay small)."""
    import cv2

    h, w = frame_rgb.shape[:2]
    if w > width:
        frame_rgb = cv2.resize(frame_rgb, (width, int(round(h * width / float(w)))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


def build_event(track, event_id, device_id, model_info, known=None, snapshot=None, detector=None):
    """The event payload for a finished track (a dict, ready for json.dumps); `snapshot` is JPEG bytes
    to carry inline; `detector` (edge.detect.Detector) where the plate was found by one."""
    best = track.best
    event = {
        "schema": SCHEMA_ID,
        "id": event_id,
        "type": "plate",
        "device_id": device_id,
        "camera": track.camera_id,
        "roi": track.roi_id,
        "plate": best.text,
        "score": round(best.score, 4),
        "char_scores": [round(s, 4) for s in best.char_scores],
        "read_count": track.reads,
        "timestamp": utc_iso(best.wall_time),
        "first_seen": utc_iso(track.first.wall_time),
        "last_seen": utc_iso(track.last.wall_time),
        "plate_box": list(best.box),
        "model": {"name": model_info.name, "version": model_info.version, "sha256": model_info.sha256},
        "known": known,
    }
    if best.det_score is not None and detector is not None:
        event["detection"] = {"score": round(float(best.det_score), 4), "zone": best.zone or None,
                              "model": {"name": detector.name, "version": detector.version,
                                        "sha256": detector.sha256}}
    if snapshot is not None:
        event["snapshot"] = {"content_type": "image/jpeg", "encoding": "base64",
                             "data": base64.b64encode(snapshot).decode("ascii")}
    return event


def frigate_payload(event, wall_time):
    """The event in the shape of Frigate's tracked_object_update for LPR, plus our id for dedup."""
    x, y, w, h = event["plate_box"]
    return {"type": "lpr", "id": event["id"], "name": event["known"], "plate": event["plate"],
            "score": event["score"], "camera": event["camera"], "timestamp": round(wall_time, 3),
            "plate_box": [x, y, x + w, y + h]}


def encode(event):
    """Compact UTF-8 JSON."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
