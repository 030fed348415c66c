"""Frame sources named by URI, in jetson-inference's vocabulary:

    file:///path/clip.mp4 or a plain path    video file (played in real time or fast; once or looped)
    dir:///path or a path to a folder         image files in name order
    rtsp://..., http(s)://...                 network streams through OpenCV (FFmpeg or GStreamer)
    v4l2:///dev/video0                        a V4L2 (USB) camera
    csi://0                                   a Jetson CSI camera (nvarguscamerasrc, GStreamer)
    gst://<pipeline ... ! appsink>            any GStreamer pipeline

Each source yields RGB frames with a source timestamp in seconds. `read()` returns None at the end of
a finite source; live sources raise SourceError when they fail and are reopened by the capture thread.
"""
import logging
import os
import time

import cv2

from edge.capture import hwdecode
from edge.dataset import IMAGE_EXTENSIONS, read_image

log = logging.getLogger("edge.capture")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".ts", ".h264", ".h265", ".mjpeg")


class SourceError(RuntimeError):
    pass


def parse_uri(uri):
    """(kind, location) for a source URI; kind is video, folder, stream, v4l2, csi or gst."""
    if uri.startswith("file://"):
        return "video", uri[len("file://"):]
    if uri.startswith("dir://"):
        return "folder", uri[len("dir://"):]
    if uri.startswith("v4l2://"):
        return "v4l2", uri[len("v4l2://"):]
    if uri.startswith("csi://"):
        return "csi", uri[len("csi://"):]
    if uri.startswith("gst://"):
        return "gst", uri[len("gst://"):]
    if uri.split("://", 1)[0] in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
        return "stream", uri
    if "://" in uri:
        raise SourceError("unknown source scheme in %r (known: file, dir, rtsp, http, https, v4l2, csi, gst)" % uri)
    if os.path.isdir(uri):
        return "folder", uri
    return "video", uri


class VideoFileSource:
    """A video file; 'realtime' pacing sleeps to the file's frame rate, 'fast' does not."""

    finite = True

    def __init__(self, path, pacing="realtime", loop=False):
        self.path, self.pacing, self.loop = path, pacing, loop
        self.cap = None
        self.fps = 0.0
        self._offset = 0.0
        self._index = 0
        self._t0 = None

    def open(self):
        if not os.path.isfile(self.path):
            raise SourceError("%s: no such video file" % self.path)
        self.cap = hwdecode.open_capture("video", self.path) or cv2.VideoCapture(self.path)  # NVDEC on a Jetson
        if not self.cap.isOpened():
            raise SourceError("%s: OpenCV cannot open this video (unknown codec or not a video)" % self.path)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 25.0
        self._t0 = time.monotonic()

    def read(self):
        ok, frame = self.cap.read()
        if not ok:
            if not self.loop or self._index == 0:
                return None
            self._offset += self._index / self.fps
            self._index = 0
            self.cap.release()
            self.cap = hwdecode.open_capture("video", self.path) or cv2.VideoCapture(self.path)
            ok, frame = self.cap.read()
            if not ok:
                return None
        ts = self._offset + self._index / self.fps
        self._index += 1
        if self.pacing == "realtime":
            delay = self._t0 + ts - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return ts, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class ImageFolderSource:
    """Image files in name order; an unreadable file is logged by name, counted and skipped."""

    finite = True

    def __init__(self, path, loop=False, fps=0.0):
        self.path, self.loop = path, loop
        self.period = 1.0 / fps if fps else 1.0
        self.files = []
        self._pos = 0
        self._ts = 0.0
        self.unreadable = 0

    def open(self):
        if not os.path.isdir(self.path):
            raise SourceError("%s: no such folder" % self.path)
        self.files = sorted(os.path.join(self.path, n) for n in os.listdir(self.path)
                            if n.lower().endswith(IMAGE_EXTENSIONS))
        if not self.files:
            raise SourceError("%s: no image files (%s)" % (self.path, ", ".join(IMAGE_EXTENSIONS)))

    def read(self):
        while True:
            if self._pos >= len(self.files):
                if not self.loop:
                    return None
                self._pos = 0
            path = self.files[self._pos]
            self._pos += 1
            image = read_image(path)
            if image is None:
                self.unreadable += 1
                log.warning("%s: not a readable image, skipped", path)
                continue
            ts = self._ts
            self._ts += self.period
            return ts, image

    def close(self):
        pass


def gstreamer_pipeline(kind, location):
    """GStreamer pipelines that keep latency bounded (appsink drops, max one buffer)."""
    sink = "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    if kind == "csi":
        sensor = int(location or 0)
        return ("nvarguscamerasrc sensor-id=%d ! video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1 "
                "! nvvidconv ! video/x-raw,format=BGRx ! %s" % (sensor, sink))
    return location


class OpenCVSource:
    """A live source through OpenCV: network stream, V4L2 device, CSI camera or GStreamer pipeline."""

    finite = False

    def __init__(self, kind, location, open_timeout_ms=10000, read_timeout_ms=10000):
        self.kind, self.location = kind, location
        self.open_timeout_ms, self.read_timeout_ms = open_timeout_ms, read_timeout_ms
        self.cap = None
        self._t0 = None

    def open(self):
        if self.kind in ("csi", "gst"):
            self.cap = cv2.VideoCapture(gstreamer_pipeline(self.kind, self.location), cv2.CAP_GSTREAMER)
        elif self.kind == "v4l2":
            self.cap = cv2.VideoCapture(self.location, cv2.CAP_V4L2)
        else:
            self.cap = hwdecode.open_capture(self.kind, self.location)  # rtsp:// through NVDEC on a Jetson
        if self.cap is None:
            params = []
            for name, value in (("CAP_PROP_OPEN_TIMEOUT_MSEC", self.open_timeout_ms),
                                ("CAP_PROP_READ_TIMEOUT_MSEC", self.read_timeout_ms)):
                if hasattr(cv2, name):
                    params += [getattr(cv2, name), value]
            try:
                self.cap = cv2.VideoCapture(self.location, cv2.CAP_ANY, params)
            except TypeError:  # OpenCV < 4.5.2 has no params argument
                self.cap = cv2.VideoCapture(self.location)
        if not self.cap.isOpened():
            self.close()
            raise SourceError("%s: cannot open %s source" % (self.location, self.kind))
        self._t0 = time.time()

    def read(self):
        ok, frame = self.cap.read()
        if not ok or frame is None:
            raise SourceError("%s: read failed (stream ended or camera lost)" % self.location)
        return time.time(), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self):
        if self.cap is not None:
            self.cap.release()  # release before any reopen: reconnect loops leak otherwise
            self.cap = None


def open_source(camera):
    """The source object for a camera config (not yet opened)."""
    kind, location = parse_uri(camera.source)
    if kind == "video":
        return VideoFileSource(location, camera.pacing, camera.loop)
    if kind == "folder":
        return ImageFolderSource(location, camera.loop, camera.fps)
    return OpenCVSource(kind, location)
