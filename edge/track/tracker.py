"""Reads of the same plate across consecutive frames of one camera ROI form a track; a track becomes
one event. A read joins a track when its text is within `max_edit_distance` edits of the track's text
and it comes within `expire_s` (source time) of the track's last read.

A track is emitted once: as soon as one text has `min_reads` confirmations (a car waiting at a gate is
reported while it waits), or when the track ends with at least `min_reads` reads. The event carries the
best read of the winning text (highest score), the read count and the first and last time seen.
Reads that are too short, below `min_confidence` or off the plate `format` never join a track, nor do
reads of a fixed ROI whose characters reach the crop's edge (`at_edge`: the ROI cuts the plate, so the
text is likely truncated); they are counted by reason.

Plates found by the detector (roi 'plate') move through the frame: a read that matches no track by text
joins the track whose last box its box overlaps (tracking.box_iou) if at most half its characters differ,
so a car driving through, its plate growing or partly hidden, stays one track and one event.

A read whose text is a strict part of an open track's emitted plate, more than `max_edit_distance` shorter
(`4455` after `SG94455` was published: the plate half out of the frame or hidden as the car leaves) is a
fragment: it keeps that track alive, and its box followed, but is no vote and starts no track of its own (a
second event for one car); it is counted as rejected (`fragment`). Only within `expire_s` of the track's last
vote, and in mode detect only near the track's last box: a plate that is part of the previous car's (Swiss
`ZH1234` after `ZH123456`) is a car of its own once the first has gone, as is a read that is one of the known
plates. The other way round, a read that holds an open, not yet emitted track's text (the plate coming into
view) joins that track, where the whole text soon outvotes the part; a part already read `min_reads` times was
an event.
"""
import collections
import re
import time
from collections import namedtuple

PlateRead = namedtuple("PlateRead", "camera_id roi_id timestamp wall_time text score char_scores image box "
                                    "det_score zone at_edge")
PlateRead.__new__.__defaults__ = (None, "", False)  # reads of fixed ROIs: no detector score, no zone

REJECT_REASONS = ("too_short", "at_edge", "low_confidence", "format", "fragment")  # why a read joined no track
DETECT_ROI = "plate"  # edge.detect.zones.DETECT_ROI: crops cut from detected boxes
WALL_SLACK_S = 2.0  # a camera that stops sending frames closes its tracks this long after expire_s


def edit_distance(a, b, limit=None):
    """Levenshtein distance; stops early (returns limit + 1) once it must exceed `limit`."""
    if a == b:
        return 0
    if limit is not None and abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        if limit is not None and min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


def box_iou(a, b):
    """IoU of two [x, y, w, h] boxes."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = float(ix * iy)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


class Track:
    def __init__(self, read):
        self.camera_id, self.roi_id = read.camera_id, read.roi_id
        self.reads = 0
        self.counts = collections.Counter()
        self.best_by_text = {}
        self.first, self.last = read, read
        self.last_vote = read  # the last read that counted for a text (fragments only follow)
        self.emitted = False
        self.add(read)

    def follow(self, read):
        """A fragment of this track's plate: the track lives on and follows its box; no vote."""
        self.last = read

    def add(self, read):
        self.reads += 1
        self.counts[read.text] += 1
        best = self.best_by_text.get(read.text)
        if best is None or read.score > best.score:
            self.best_by_text[read.text] = read
        self.last = self.last_vote = read

    @property
    def text(self):
        """The winning text: most reads; among those, not one that is part of another (a shorter text scores
        higher, its score a product of fewer characters), then the highest score."""
        top = max(self.counts.values())
        tied = [t for t in self.counts if self.counts[t] == top]
        whole = [t for t in tied if not any(t != u and t in u for u in tied)]
        return max(whole, key=lambda t: self.best_by_text[t].score)

    @property
    def best(self):
        return self.best_by_text[self.text]


class Tracker:
    def __init__(self, config, camera_formats=None):
        self.config = config
        self.formats = {}
        for camera_id, pattern in (camera_formats or {}).items():
            if pattern:
                self.formats[camera_id] = re.compile(pattern)
        self.default_format = re.compile(config.format) if config.format else None
        self.replace_rules = [(re.compile(p), r) for p, r in config.replace_rules]
        from edge.track.known import KnownPlates  # here: known.py imports this module

        self.known = KnownPlates(config.known_plates or {}, config.match_distance)
        self.tracks = collections.defaultdict(list)  # (camera, roi) -> open tracks
        self.rejected = collections.Counter()  # reason -> reads
        self.dropped_tracks = 0  # tracks that ended with fewer than min_reads reads
        self.last_reason = None
        self.last_text = None

    def _format(self, camera_id):
        return self.formats.get(camera_id, self.default_format)

    def reject_reason(self, read):
        if len(read.text) < self.config.min_plate_length:
            return "too_short"
        if read.at_edge and read.roi_id not in (DETECT_ROI, "frame"):
            return "at_edge"  # a fixed ROI that cuts the plate: a truncated text must not become an event
        if read.score < self.config.min_confidence:
            return "low_confidence"
        fmt = self._format(read.camera_id)
        if fmt is not None and not fmt.fullmatch(read.text):
            return "format"
        return None

    def apply_rules(self, read):
        """replace_rules on the text; if a rule changed the length, every character gets the plate's
        geometric-mean score so that their product still equals the plate score."""
        text = read.text
        for pattern, replacement in self.replace_rules:
            text = pattern.sub(replacement, text)
        if text == read.text:
            return read
        scores = read.char_scores
        if len(text) != len(read.text):
            scores = [read.score ** (1.0 / len(text))] * len(text) if text else []
        return read._replace(text=text, char_scores=scores)

    def add(self, read):
        """Take one read; return the tracks to emit now."""
        read = self.apply_rules(read)
        key = (read.camera_id, read.roi_id)
        out = self._expire(key, read.timestamp)
        reason = self.reject_reason(read)
        self.last_reason = reason  # why the read just taken was rejected (None: it joined a track)
        self.last_text = read.text  # after replace_rules
        if reason:
            self.rejected[reason] += 1
            return out
        limit = self.config.max_edit_distance
        best, best_dist = None, limit + 1
        for track in self.tracks[key]:
            dist = edit_distance(read.text, track.text, limit)
            if dist < best_dist:
                best, best_dist = track, dist
        if best is None:
            host = self._fragment_of(key, read)
            if host is not None:
                host.follow(read)
                self.last_reason = "fragment"
                self.rejected["fragment"] += 1
                return out
        if best is None and read.roi_id == DETECT_ROI:
            best = self._by_box(key, read)
        if best is None:
            best = self._holding(key, read)
        if best is None:
            best = Track(read)
            self.tracks[key].append(best)
        else:
            best.add(read)
        if not best.emitted and best.counts[best.text] >= self.config.min_reads:
            best.emitted = True
            out.append(best)
        if best.last.timestamp - best.first.timestamp > self.config.max_track_s:
            self.tracks[key].remove(best)  # a parked car: close this track, the next read starts another
            out.extend(self._closed([best]))
        return out

    def _by_box(self, key, read):
        """Detected plates: the open track whose last box this read's box overlaps most (at least box_iou),
        when no more than half the characters differ: the same car, read partly wrong this frame."""
        best, best_iou = None, self.config.box_iou
        for track in self.tracks[key]:
            overlap = box_iou(track.last.box, read.box)
            if overlap >= best_iou and edit_distance(read.text, track.text, len(track.text) // 2) <= \
                    len(track.text) // 2:
                best, best_iou = track, overlap
        return best

    def _fragment_of(self, key, read):
        """The open, emitted track (most reads first) whose plate `read` is a strict part of, if any: voted on
        within expire_s, and in mode detect with its last box near this read's. Only a confirmed plate hosts
        fragments: one stray longer misread must not swallow the reads of a real plate."""
        if self.known.match(read.text) is not None:
            return None
        hosts = [t for t in self.tracks[key] if t.emitted and len(read.text) < len(t.text) and read.text in t.text
                 and read.timestamp - t.last_vote.timestamp <= self.config.expire_s and self._near(t, read)]
        return max(hosts, key=lambda t: t.reads) if hosts else None

    def _holding(self, key, read):
        """The open track, not yet emitted, whose text is a strict part of this read's (a plate coming into
        view); in mode detect its last box near this read's."""
        parts = [t for t in self.tracks[key] if not t.emitted and len(t.text) < len(read.text) and
                 t.text in read.text and self._near(t, read)]
        return max(parts, key=lambda t: len(t.text)) if parts else None

    @staticmethod
    def _near(track, read):
        """Fixed ROIs: always (one ROI, one lane). Detected plates: the read's box within two widths and one
        height of the track's last box (a plate moves about that far between detections as a car leaves)."""
        if read.roi_id != DETECT_ROI or not track.last.box or not read.box:
            return True
        x, y, w, h = track.last.box
        rx, ry, rw, rh = read.box
        return rx < x + 3 * w and rx + rw > x - 2 * w and ry < y + 2 * h and ry + rh > y - h

    def _expire(self, key, now):
        old = [t for t in self.tracks[key] if now - t.last.timestamp > self.config.expire_s]
        for track in old:
            self.tracks[key].remove(track)
        return self._closed(old)

    def _closed(self, tracks):
        out = []
        for track in tracks:
            if track.emitted:
                continue
            if track.reads >= self.config.min_reads:
                track.emitted = True
                out.append(track)
            else:
                self.dropped_tracks += 1
        return out

    def expire_idle(self, wall_now=None):
        """Close tracks of cameras that stopped sending reads (by wall clock)."""
        wall_now = time.time() if wall_now is None else wall_now
        limit = self.config.expire_s + WALL_SLACK_S
        out = []
        for key in list(self.tracks):
            old = [t for t in self.tracks[key] if wall_now - t.last.wall_time > limit]
            for track in old:
                self.tracks[key].remove(track)
            out.extend(self._closed(old))
        return out

    def close_camera(self, camera_id):
        out = []
        for key in [k for k in self.tracks if k[0] == camera_id]:
            out.extend(self._closed(self.tracks.pop(key)))
        return out

    def close_all(self):
        out = []
        for key in list(self.tracks):
            out.extend(self._closed(self.tracks.pop(key)))
        return out

    def open_tracks(self):
        return sum(len(v) for v in self.tracks.values())
