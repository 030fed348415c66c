"""Health of every stage, for the systemd watchdog and the /healthz endpoint.

A component is 'failed' when its thread died, or made no progress within `stage_deadline_s` (the capture
loop stuck in a read, the worker stuck inside one batch, the publisher's loop stuck). It is 'degraded'
when it runs but cannot do its job fully (a camera reconnecting, the broker unreachable or refusing us,
the outbox dropping events). An idle camera that sends frames with no plates is 'ok': frames are progress.

Overall: failed if any component failed (systemd's watchdog pings stop, /healthz answers 503), else
degraded if any is degraded (/healthz 200, body says why), else ok.
"""
import time
from collections import namedtuple

from edge.outbox import path_state

Component = namedtuple("Component", "name state reason")

OK, DEGRADED, FAILED = "ok", "degraded", "failed"
_RANK = {OK: 0, DEGRADED: 1, FAILED: 2}


def _age(last, now):
    return now - last if last else 0.0


EDGE_STREAK_S = 60.0  # a ROI whose every read is cut for this long is degraded


def _camera(capture, stage_deadline_s, now, edge_streak=None):
    """A camera waiting, opening or reconnecting is degraded; only a thread that stopped turning (no stamp
    for longer than the deadline plus the bound of the call it is inside) is failed."""
    name = "camera:%s" % capture.camera.id
    age = _age(capture.last_progress, now)
    if capture.state == "failed":
        return Component(name, FAILED if not capture.source.finite else DEGRADED, "capture failed: %s" % capture.error)
    if capture.state == "ended":
        return Component(name, OK, "source ended")
    if not capture.is_alive():
        return Component(name, FAILED, "capture thread is not running")
    if age > stage_deadline_s + capture.blocked_bound_s:
        return Component(name, FAILED, "capture loop made no progress for %.0f s (wedged)" % age)
    if capture.state == "reconnecting":
        return Component(name, DEGRADED, "reconnecting (%d attempts): %s" % (capture.reconnects, capture.error))
    streak = edge_streak.get(capture.camera.id) if edge_streak else None
    if streak is not None and streak[1] - streak[0] >= EDGE_STREAK_S and time.time() - streak[1] < EDGE_STREAK_S:
        return Component(name, DEGRADED, "every plate read for %.0f s reached the ROI's edge (%d reads rejected as "
                                         "at_edge): the ROI cuts the plates; check it on /snapshot.jpg"
                         % (streak[1] - streak[0], streak[2]))
    return Component(name, OK, "%s, %d frames" % (capture.state, capture.frames))


def _wedged(name, worker, stage_deadline_s, now):
    """FAILED when a worker thread died, sits inside one batch, or its loop stopped turning; else None."""
    busy = worker.busy_since
    if not worker.is_alive():
        return Component(name, FAILED, "worker thread is not running: %s" % (worker.error or "stopped"))
    if busy is not None and now - busy > stage_deadline_s:
        return Component(name, FAILED, "stuck inside one batch for %.0f s (wedged)" % (now - busy))
    if busy is None and _age(worker.last_progress, now) > stage_deadline_s:
        return Component(name, FAILED, "worker loop made no progress for %.0f s (wedged)"
                         % _age(worker.last_progress, now))
    return None


def _detector(app, worker):
    fallback = getattr(app.detector.session, "fallback_reason", None)
    if fallback:
        return Component("detector", DEGRADED, "running on %s, not tensorrt: %s" % (app.detector.session.name,
                                                                                   fallback))
    return Component("detector", OK, "%d frames, %d plates found, %d kept" % (
        worker.frames_detected, worker.plates_detected, worker.plates_kept))


def _recognizer_problem(app):
    """What degrades a model slot's recognizer (named by slot where there are several), or None."""
    for slot, recognizer in app.recognizers.items():
        which = "" if len(app.recognizers) == 1 else "slot %s: " % slot
        if recognizer.invalid_ids:
            return "%s%d class ids beyond the characters list: wrong list for this model?" % (
                which, recognizer.invalid_ids)
        if getattr(recognizer.backend, "fallback_reason", None):  # [trt] tensorrt asked for, another backend runs
            return "%srunning on %s, not tensorrt: %s" % (which, recognizer.backend.name,
                                                          recognizer.backend.fallback_reason)
    return None


def check_app(app, stage_deadline_s, now=None):
    """[Component] for every stage of a running App."""
    now = time.monotonic() if now is None else now
    out = []
    for capture in app.captures:
        out.append(_camera(capture, stage_deadline_s, now, getattr(app.worker, "edge_streak", None)))
    detector = getattr(app, "detector_worker", None)
    if detector is not None:
        out.append(_wedged("detector", detector, stage_deadline_s, now) or _detector(app, detector))
    worker = app.worker
    wedged = _wedged("recognizer", worker, stage_deadline_s, now)
    if wedged is not None:
        out.append(wedged)
    elif _recognizer_problem(app):
        out.append(Component("recognizer", DEGRADED, _recognizer_problem(app)))
    else:
        out.append(Component("recognizer", OK, "%d crops in %d batches" % (worker.crops_read, worker.batches)))
    pub = app.publisher
    age = _age(pub.last_progress, now)
    if not pub.is_alive() and pub.state != "stopped":
        out.append(Component("mqtt", FAILED, "publisher thread is not running: %s" % (pub.last_error or "")))
    elif pub.is_alive() and age > stage_deadline_s:
        out.append(Component("mqtt", FAILED, "publisher loop made no progress for %.0f s (wedged)" % age))
    elif pub.rejected:
        out.append(Component("mqtt", DEGRADED, "the broker refused %d events (not authorised to publish on %s?)"
                             % (pub.rejected, pub.topics.events)))
    elif not pub.connected:
        out.append(Component("mqtt", DEGRADED, "not connected (%s): %s" % (pub.state, pub.last_error or "connecting")))
    elif pub.oldest_unacked_s() > pub.config.ack_timeout_s / 2:
        out.append(Component("mqtt", DEGRADED, "connected, but the oldest message has waited %.0f s for its PUBACK"
                             % pub.oldest_unacked_s()))
    else:
        out.append(Component("mqtt", OK, "connected, %d events published" % pub.published))
    out.append(_outbox(app, pub))
    if getattr(app, "ota", None) is not None and app.ota.manager is not None:  # OTA hook: the model and its update
        out.append(app.ota.health_component())
    return out


SALVAGE_REPORT_S = 3600.0  # a salvaged outbox is degraded for an hour, then a note in the ok reason


def _outbox(app, pub):
    depth = pub.outbox_depth or (0, 0)
    waiting = "%d events waiting" % depth[0]
    if pub.outbox_snapshots:
        waiting += ", %d snapshots" % pub.outbox_snapshots
    commits = app.commits
    if commits.held:
        return Component("outbox", DEGRADED, "%s: %d events could not be committed (held in memory, retried); %s"
                         % (_disk_reason(commits.last_error), len(commits.held), waiting))
    if pub.ack_error:
        return Component("outbox", DEGRADED, "%s: published rows cannot be deleted (retried); %s"
                         % (_disk_reason(pub.ack_error), waiting))
    if app.events_dropped or commits.dropped:
        return Component("outbox", DEGRADED, "%d events dropped because the outbox was full; %s"
                         % (app.events_dropped + commits.dropped, waiting))
    salvage = path_state(app.config.outbox.path).salvage
    if salvage:
        note = "damaged file moved aside to %s: %d pending events salvaged, %s lost" % (
            salvage["aside"], salvage["salvaged"], salvage["lost"] if salvage["lost"] is not None else "unknown")
        if time.time() - salvage["time"] < SALVAGE_REPORT_S:
            return Component("outbox", DEGRADED, "%s; %s" % (note, waiting))
        waiting += " (earlier: %s)" % note
    return Component("outbox", OK, waiting)


def _disk_reason(error):
    return "disk full" if error and "full" in error.lower() else "cannot write (%s)" % error


def overall(components):
    state = OK
    for c in components:
        if _RANK[c.state] > _RANK[state]:
            state = c.state
    return state


def report(components):
    """The /healthz body."""
    return {"status": overall(components),
            "components": {c.name: {"status": c.state, "reason": c.reason} for c in components}}
