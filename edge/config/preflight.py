"""Checks of a loaded config against this machine, run by both `run` (before any thread starts) and
`check-config`, so what would crash the pipeline is a config error (exit 2) naming its key instead of a
traceback and a restart loop: the state dir, the health port, each camera's file or folder."""
import errno
import os
import socket

from edge.capture.sources import SourceError, open_source, parse_uri
from edge.redact import redact


def preflight_problems(config, bind_health=True):
    """One line per problem, each starting with the key path."""
    problems = []
    problems += _state_dir_problems(config)
    if bind_health and config.health.port:
        problems += _port_problems(config.health.host, config.health.port)
    for i, camera in enumerate(config.cameras):
        problems += _source_problems("cameras[%d].source" % i, camera)
    return problems


def warnings_for(config):
    """What will work, but not as the config hopes (check-config prints these; run logs them at start)."""
    out = []
    if config.recognizer.backend == "onnxruntime":
        try:
            import onnxruntime

            have = set(onnxruntime.get_available_providers())
        except ImportError:
            have = set()
        missing = [p for p in config.recognizer.providers if p not in have]
        if missing:
            out.append("recognizer.providers: this ONNX Runtime lacks %s (it has %s): those are skipped"
                       % (", ".join(missing), ", ".join(sorted(have)) or "none"))
    return out


def _state_dir_problems(config):
    problems = []
    for key, folder in (("state_dir", config.state_dir), ("outbox.path", os.path.dirname(config.outbox.path))):
        existing = folder
        while existing and not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if existing and not os.path.isdir(existing):
            problems.append("%s: value %r is wrong: %s is a file, not a folder" % (key, folder, existing))
        elif existing and not os.access(existing, os.W_OK | os.X_OK):
            problems.append("%s: value %r is wrong: %s is not writable by this user" % (key, folder, existing))
    if os.path.isdir(config.outbox.path):
        problems.append("outbox.path: value %r is wrong: it is a folder, not a database file" % config.outbox.path)
    return problems[:1] if len(problems) == 2 and problems[0].startswith("state_dir") else problems


def _port_problems(host, port):
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        sock.bind((host, port))
    except OSError as exc:
        why = "in use by another process" if exc.errno == errno.EADDRINUSE else exc.strerror
        return ["health.port: value %d is wrong: cannot listen on %s:%d (%s)" % (port, host, port, why)]
    finally:
        sock.close()
    return []


def _source_problems(key, camera):
    try:
        kind, location = parse_uri(camera.source)
    except SourceError as exc:
        return ["%s: value %r is wrong: %s" % (key, redact(camera.source), exc)]
    if kind in ("csi", "gst"):
        from edge.capture.hwdecode import opencv_has_gstreamer

        if not opencv_has_gstreamer():
            return ["%s: value %r is wrong: this OpenCV has no GStreamer, which %s:// sources need (pip's "
                    "opencv-python has none: on a Jetson use JetPack's OpenCV through a venv made with "
                    "--system-site-packages)" % (key, redact(camera.source), kind)]
        return []
    if kind not in ("video", "folder"):
        return []
    source = open_source(camera)
    try:
        source.open()  # a file proves itself by giving one frame; a folder by holding images
    except SourceError as exc:
        return ["%s: value %r is wrong: %s" % (key, camera.source, str(exc).split(": ", 1)[-1])]
    finally:
        source.close()
    return []
