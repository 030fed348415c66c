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

Component = namedtuple("Component", "name state reason")

OK, DEGRADED, FAILED = "ok", "degraded", "failed"
_RANK = {OK: 0, DEGRADED: 1, FAILED: 2}


def _age(last, now):
    return now - last if last else 0.0


def check_app(app, stage_deadline_s, now=None):
    """[Component] for every stage of a running App."""
    now = time.monotonic() if now is None else now
    out = []
    for capture in app.captures:
        name = "camera:%s" % capture.camera.id
        age = _age(capture.last_progress, now)
        if capture.state == "failed":
            out.append(Component(name, FAILED if not capture.source.finite else DEGRADED,
                                 "capture failed: %s" % capture.error))
        elif capture.state == "ended":
            out.append(Component(name, OK, "source ended"))
        elif not capture.is_alive():
            out.append(Component(name, FAILED, "capture thread is not running"))
        elif age > stage_deadline_s:
            out.append(Component(name, FAILED, "no frame and no reconnect attempt for %.0f s (wedged)" % age))
        elif capture.state == "reconnecting":
            out.append(Component(name, DEGRADED, "reconnecting: %s" % capture.error))
        else:
            out.append(Component(name, OK, "%s, %d frames" % (capture.state, capture.frames)))
    worker = app.worker
    busy = worker.busy_since
    if not worker.is_alive():
        out.append(Component("recognizer", FAILED, "worker thread is not running: %s" % (worker.error or "stopped")))
    elif busy is not None and now - busy > stage_deadline_s:
        out.append(Component("recognizer", FAILED, "stuck inside one batch for %.0f s (wedged)" % (now - busy)))
    elif busy is None and _age(worker.last_progress, now) > stage_deadline_s:
        out.append(Component("recognizer", FAILED, "worker loop made no progress for %.0f s (wedged)"
                             % _age(worker.last_progress, now)))
    elif app.recognizer.invalid_ids:
        out.append(Component("recognizer", DEGRADED, "%d class ids beyond the characters list: wrong list for "
                             "this model?" % app.recognizer.invalid_ids))
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
    else:
        out.append(Component("mqtt", OK, "connected, %d events published" % pub.published))
    depth = pub.outbox_depth or (0, 0)
    if app.events_dropped:
        out.append(Component("outbox", DEGRADED, "%d events dropped because the outbox was full; %d waiting"
                             % (app.events_dropped, depth[0])))
    else:
        out.append(Component("outbox", OK, "%d events waiting" % depth[0]))
    if getattr(app, "ota", None) is not None and app.ota.manager is not None:  # OTA hook: the model and its update
        out.append(app.ota.health_component())
    return out


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
