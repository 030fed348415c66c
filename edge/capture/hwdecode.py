"""Hardware video decode on a Jetson: an rtsp:// stream or an H.264/H.265 file becomes a GStreamer pipeline
through nvv4l2decoder (NVDEC) where JetPack's OpenCV has GStreamer (a venv with --system-site-packages).
Elsewhere network streams go to an ffmpeg child (edge/capture/sources.py), or OpenCV's FFmpeg backend where
ffmpeg is missing; a Jetson pipeline that does not open falls back to OpenCV's FFmpeg backend.

Pipelines as ../shared/docs/jetson-tensorrt.md gives them; a live stream's appsink keeps one buffer and drops
the rest (bounded latency), a file's waits for the reader (no frame lost).
"""
import functools
import logging
import os
import re

log = logging.getLogger("edge.capture")

NV_DECODE = "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx"
_DEMUX = {".mp4": "qtdemux", ".mov": "qtdemux", ".m4v": "qtdemux", ".mkv": "matroskademux", ".webm": "matroskademux",
          ".ts": "tsdemux", ".h264": None, ".h265": None}
_FOURCC = {"avc1": "h264", "h264": "h264", "x264": "h264", "hev1": "h265", "hvc1": "h265", "hevc": "h265",
           "h265": "h265"}


def _sink(live):
    caps = "videoconvert ! video/x-raw,format=BGR ! appsink"
    return caps + (" drop=true max-buffers=1 sync=false" if live else " drop=false max-buffers=4 sync=false")


def _quote(value):
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def rtsp_pipeline(url, codec="h264", latency_ms=200, decode=NV_DECODE):
    return "rtspsrc location=%s latency=%d protocols=tcp ! rtp%sdepay ! %sparse ! %s ! %s" % (
        _quote(url), latency_ms, codec, codec, decode, _sink(True))


def file_pipeline(path, codec, decode=NV_DECODE):
    """None for a container without a demuxer here."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _DEMUX:
        return None
    demux = "%s ! " % _DEMUX[ext] if _DEMUX[ext] else ""
    return "filesrc location=%s ! %s%sparse ! %s ! %s" % (_quote(path), demux, codec, decode, _sink(False))


def file_codec(path):
    """'h264', 'h265' or None, from the file's FourCC as OpenCV's FFmpeg backend reports it."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        code = int(cap.get(cv2.CAP_PROP_FOURCC)) if cap.isOpened() else 0
    finally:
        cap.release()
    fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).lower()
    return _FOURCC.get(fourcc)


def opencv_has_gstreamer(build_info=None):
    if build_info is None:
        import cv2

        build_info = cv2.getBuildInformation()
    return bool(re.search(r"GStreamer:\s+YES", build_info))


@functools.lru_cache(maxsize=None)
def unavailable_reason(root="/"):
    """Why hardware decode is not used here, or None when it is."""
    from edge.infer.device import detect

    if detect(root).kind != "jetson":
        return "not a Jetson"
    if not opencv_has_gstreamer():
        return ("this OpenCV has no GStreamer (pip's opencv-python; use JetPack's OpenCV through a venv with "
                "--system-site-packages)")
    return None


def pipelines(kind, location, root="/"):
    """GStreamer pipelines to try for a source, best first; [] where hardware decode is not used."""
    if unavailable_reason(root):
        return []
    if kind == "stream" and location.startswith(("rtsp://", "rtsps://")):
        return [rtsp_pipeline(location, "h264"), rtsp_pipeline(location, "h265")]
    if kind == "video":
        codec = file_codec(location)
        pipeline = file_pipeline(location, codec) if codec else None
        return [pipeline] if pipeline else []
    return []


def mask(text):
    """A pipeline or URL with the credentials of any user:password@ taken out (for logs and check-config)."""
    from edge.redact import redact

    return redact(text)


def describe(kind, location, root="/"):
    """How a source will be decoded, for check-config (no password)."""
    found = pipelines(kind, location, root) if kind in ("stream", "video") else []
    if found:
        return "GStreamer, hardware decode: %s" % mask(found[0])
    reason = unavailable_reason(root) if kind in ("stream", "video") else None
    return "OpenCV (FFmpeg)%s" % (" (no hardware decode: %s)" % reason if reason else "")


def open_capture(kind, location):
    """An opened cv2.VideoCapture through nvv4l2decoder, or None (then the caller opens it as before)."""
    import cv2

    for pipeline in pipelines(kind, location):
        cap = cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        if cap.isOpened():
            log.info("%s: hardware decode (nvv4l2decoder)", mask(location))
            return cap
        cap.release()
    return None
