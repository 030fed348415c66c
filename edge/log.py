"""Logging: one line per event worth knowing, with the component (logger name) and camera in the text.

Under systemd (JOURNAL_STREAM set for our stderr) lines carry a <N> syslog priority prefix and no time
stamp (journald adds it); otherwise a plain time-stamped line on stderr.
"""
import logging
import os
import sys

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalPrefixFormatter(logging.Formatter):
    def format(self, record):
        return "<%d>%s" % (_PRIORITY.get(record.levelno, 6), logging.Formatter.format(self, record))


def under_journald(stream=sys.stderr):
    """True when `stream` is connected to the journal (systemd sets JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
        return st.st_dev == dev and st.st_ino == ino
    except (ValueError, OSError, AttributeError):
        return False


class _Fields(logging.Filter):
    """Structured journald fields: COMPONENT (the logger, e.g. edge.capture) and CAMERA when a line is
    about one camera (its message starts 'camera <id>:')."""

    def filter(self, record):
        record.COMPONENT = record.name
        msg = str(record.msg)
        if msg.startswith("camera %s:") and record.args:
            record.CAMERA = str(record.args[0])
        return True


def _journal_handler():
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    handler = JournalHandler(SYSLOG_IDENTIFIER="lpr-edge")
    handler.addFilter(_Fields())
    return handler


def setup_logging(level="info", stream=None):
    stream = stream or sys.stderr
    handler = None
    if under_journald(stream):
        handler = _journal_handler()  # structured fields with python3-systemd
        if handler is None:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(JournalPrefixFormatter("%(name)s: %(message)s"))
    if handler is None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("paho").setLevel(logging.WARNING)
