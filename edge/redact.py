"""Secrets out of what is shown: credentials inside URLs (rtsp://user:pass@host/...) become
rtsp://***@host/... in every log line, /healthz reason, status payload and check-config output."""
import re

_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def redact(text):
    """`text` with the user-info part of every URL in it replaced by ***."""
    if not text:
        return text
    return _URL_CREDENTIALS.sub(r"\1***@", str(text))
