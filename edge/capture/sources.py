"""Frame sources named by URI, in jetson-inference's vocabulary:

    file:///path/clip.mp4 or a plain path    video file (played in real time or fast; once or looped)
    dir:///path or a path to a folder         image files in name order
    rtsp://..., http(s)://...                 network streams through OpenCV (FFmpeg or GStreamer)
    v4l2:///dev/video0                        a V4L2 (USB) camera
    csi://0                                   a Jetson CSI camera (nvarguscamerasrc, GStreamer)
    gst://<pipeline ... ! appsink>            any GStreamer pipeline

Each source yields RGB frames with a source timestamp in seconds. `read()` returns None at the end of
a finite source; live sources raise SourceError when they fail and are reopened by the capture thread.

Network streams are decoded by an `ffmpeg` child process per camera (as Frigate does) where ffmpeg is
installed, not inside this process: OpenCV's FFmpeg backend holds one process-wide lock while a stream
opens, so one camera whose open hangs would freeze every other camera's open. A child can be killed, and
its pipe is read with timeouts, so a hanging open or a stalled stream costs only that camera.
"""
import logging
import os
import select
import shutil
import subprocess
import threading
import time
from collections import deque

import cv2
import numpy as np

from edge.capture import hwdecode
from edge.dataset import IMAGE_EXTENSIONS, read_image
from edge.redact import redact

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
        raise SourceError("unknown source scheme %r (known: file, dir, rtsp, rtsps, http, https, rtmp, udp, tcp, "
                          "v4l2, csi, gst)" % uri.split("://", 1)[0])
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
        self.frame_count = 0
        self.truncated = None  # the warning, once a file ended before its header's frame count
        self._pending = None  # the first frame, decoded by open() to prove the file is a video

    def open(self):
        if not os.path.isfile(self.path):
            raise SourceError("%s: no such video file" % self.path)
        self.cap = hwdecode.open_capture("video", self.path) or cv2.VideoCapture(self.path)  # NVDEC on a Jetson
        if not self.cap.isOpened():
            raise SourceError("%s: OpenCV cannot open this video (unknown codec or not a video)" % self.path)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 25.0
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if 0 < count < 1e9 else 0
        ok, self._pending = self.cap.read()  # a file OpenCV opens but cannot decode (random bytes, codec)
        if not ok:
            self.close()
            raise SourceError("%s: OpenCV opens this file but cannot decode a frame of it" % self.path)
        self._t0 = time.monotonic()

    def read(self):
        if self._pending is not None:
            ok, frame, self._pending = True, self._pending, None
        else:
            ok, frame = self.cap.read()
        if not ok:
            self._check_complete()
            if not self.loop or self._index == 0:
                return None
            self._offset += self._index / self.fps
            self._index = 0
            ok, frame = self._rewind()
        ts = self._offset + self._index / self.fps
        self._index += 1
        if self.pacing == "realtime":
            delay = self._t0 + ts - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return ts, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _check_complete(self):
        """A file that ends well before the frame count its header gives is damaged: say so, once."""
        if self.frame_count and self._index < self.frame_count - 2 and not self.truncated:
            self.truncated = "%s: the video ended at frame %d of %d (damaged or truncated file?)" % (
                self.path, self._index, self.frame_count)
            log.warning(self.truncated)

    def _rewind(self):
        """Back to the first frame for a loop: a seek, not a reopen (an open takes OpenCV's FFmpeg lock,
        which a hanging stream open elsewhere may hold); a reopen only if the seek fails."""
        if self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            ok, frame = self.cap.read()
            if ok:
                return ok, frame
        self.cap.release()
        self.cap = hwdecode.open_capture("video", self.path) or cv2.VideoCapture(self.path)
        ok, frame = self.cap.read() if self.cap.isOpened() else (False, None)
        if not ok:  # a looping source that cannot start again is an error to retry, never an end
            raise SourceError("%s: cannot read the video again from its start" % self.path)
        return ok, frame

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

    def __init__(self, kind, location, open_timeout_ms=10000, read_timeout_ms=10000, url_fn=None):
        self.kind, self.location = kind, location
        self.url_fn = url_fn  # the URL with credentials, made at each open
        self.open_timeout_ms, self.read_timeout_ms = open_timeout_ms, read_timeout_ms
        self.cap = None
        self._t0 = None

    def open(self):
        location = self.url_fn() if self.url_fn else self.location
        if self.kind in ("csi", "gst"):
            self.cap = cv2.VideoCapture(gstreamer_pipeline(self.kind, self.location), cv2.CAP_GSTREAMER)
        elif self.kind == "v4l2":
            self.cap = cv2.VideoCapture(self.location, cv2.CAP_V4L2)
        else:
            self.cap = hwdecode.open_capture(self.kind, location)  # rtsp:// through NVDEC on a Jetson
        if self.cap is None:
            params = []
            for name, value in (("CAP_PROP_OPEN_TIMEOUT_MSEC", self.open_timeout_ms),
                                ("CAP_PROP_READ_TIMEOUT_MSEC", self.read_timeout_ms)):
                if hasattr(cv2, name):
                    params += [getattr(cv2, name), value]
            try:
                self.cap = cv2.VideoCapture(location, cv2.CAP_ANY, params)
            except TypeError:  # OpenCV < 4.5.2 has no params argument
                self.cap = cv2.VideoCapture(location)
        if not self.cap.isOpened():
            self.close()
            raise SourceError("%s: cannot open %s source" % (redact(self.location), self.kind))
        self._t0 = time.time()

    def read(self):
        ok, frame = self.cap.read()
        if not ok or frame is None:
            raise SourceError("%s: read failed (stream ended or camera lost)" % redact(self.location))
        return time.time(), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self):
        if self.cap is not None:
            self.cap.release()  # release before any reopen: reconnect loops leak otherwise
            self.cap = None


class FFmpegStreamSource:
    """A network stream decoded by an `ffmpeg` child process into YUV4MPEG frames on a pipe.

    open() waits at most `open_timeout_s` for the stream's header, read() at most `stall_timeout_s` for
    the next frame; either timing out, or ffmpeg exiting, is a SourceError naming what ffmpeg said, and
    the child is killed. Nothing here blocks without a bound, so the capture thread keeps turning."""

    finite = False
    CHUNK = 1 << 20

    def __init__(self, url, open_timeout_s=10.0, stall_timeout_s=5.0, ffmpeg=None, url_fn=None):
        """`url_fn`: gives the URL with credentials at each open (a password file is read again then)."""
        self.url = url
        self.url_fn = url_fn
        self.shown = redact(url)
        self.open_timeout_s, self.stall_timeout_s = open_timeout_s, stall_timeout_s
        self.ffmpeg = ffmpeg or shutil.which("ffmpeg") or "ffmpeg"
        self.proc = None
        self.width = self.height = 0
        self.fps = 0.0
        self._buf = bytearray()
        self._stderr = deque(maxlen=5)

    def command(self):
        cmd = [self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
        if self.url.startswith(("rtsp://", "rtsps://")):
            cmd += ["-rtsp_transport", "tcp"]  # UDP loses packets (grey smears) on busy links
        url = self.url_fn() if self.url_fn else self.url
        return cmd + ["-i", url, "-an", "-sn", "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", "-"]

    def open(self):
        self.close()
        self._buf = bytearray()
        self._stderr.clear()
        try:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except OSError as exc:
            raise SourceError("%s: cannot start ffmpeg (%s): %s" % (self.shown, self.ffmpeg, exc))
        threading.Thread(target=self._drain_stderr, args=(self.proc,), name="ffmpeg-stderr", daemon=True).start()
        header = self._read_line(time.monotonic() + self.open_timeout_s, "cannot open stream")
        self._parse_header(header)

    def _parse_header(self, header):
        fields = header.decode("ascii", "replace").split()
        if not fields or fields[0] != "YUV4MPEG2":
            self.close()
            raise SourceError("%s: ffmpeg gave no YUV4MPEG2 stream (%r)" % (self.shown, header[:40]))
        for f in fields[1:]:
            if f[0] == "W":
                self.width = int(f[1:])
            elif f[0] == "H":
                self.height = int(f[1:])
            elif f[0] == "F" and ":" in f:
                num, den = f[1:].split(":", 1)
                self.fps = float(num) / float(den) if float(den) else 0.0
        if self.width <= 0 or self.height <= 0:
            self.close()
            raise SourceError("%s: ffmpeg's stream header has no frame size (%r)" % (self.shown, header[:60]))

    def read(self):
        deadline = time.monotonic() + self.stall_timeout_s
        self._read_line(deadline, "stalled")  # "FRAME" and its optional parameters
        size = self.width * self.height * 3 // 2
        data = self._read_exact(size, deadline, "stalled")
        yuv = np.frombuffer(data, np.uint8).reshape(self.height * 3 // 2, self.width)
        return time.time(), cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)

    # --- the pipe, read with deadlines -------------------------------------------------------
    def _fill(self, deadline, what):
        remaining = deadline - time.monotonic()
        fd = self.proc.stdout.fileno()
        ready = select.select([fd], [], [], max(0.0, remaining))[0] if remaining > 0 else []
        if not ready:
            timeout = self.open_timeout_s if what != "stalled" else self.stall_timeout_s
            self._fail("%s: no frame for %.1f s" % (what, timeout) if what == "stalled" else
                       "%s: no video within %.1f s" % (what, timeout))
        chunk = os.read(fd, self.CHUNK)
        if not chunk:
            self.proc.wait(2)
            self._fail("%s: ffmpeg exited (code %s)" % ("stream ended" if what == "stalled" else what,
                                                       self.proc.returncode))
        self._buf += chunk

    def _read_line(self, deadline, what):
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                return line
            self._fill(deadline, what)

    def _read_exact(self, size, deadline, what):
        while len(self._buf) < size:
            self._fill(deadline, what)
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def _fail(self, message):
        time.sleep(0.05)  # let the stderr thread take ffmpeg's last words
        said = "; ".join(self._stderr)
        self.close()
        raise SourceError("%s: %s%s" % (self.shown, message, " (ffmpeg: %s)" % said if said else ""))

    def _drain_stderr(self, proc):
        for line in iter(proc.stderr.readline, b""):
            text = redact(line.decode("utf-8", "replace").strip())
            if text:
                self._stderr.append(text[:200])
        proc.stderr.close()

    def close(self):
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()  # a child stuck in a network call would ignore a polite SIGTERM for seconds
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            log.error("ffmpeg for %s did not exit after SIGKILL (pid %d)", self.shown, proc.pid)
        proc.stdout.close()


def ffmpeg_available():
    return shutil.which("ffmpeg") is not None


def _use_ffmpeg(decoder, kind, location):
    """'auto': NVDEC through OpenCV's GStreamer on a Jetson that has it (GStreamer opens do not share
    FFmpeg's process-wide lock), else an ffmpeg child where ffmpeg is installed, else OpenCV."""
    if decoder != "auto":
        return decoder == "ffmpeg"
    return not hwdecode.pipelines(kind, location) and ffmpeg_available()


def describe_decode(camera):
    """How capture will decode a camera's source, for check-config (no credentials)."""
    try:
        kind, location = parse_uri(camera.source)
    except SourceError as exc:
        return str(exc)
    if kind == "stream" and _use_ffmpeg(camera.decoder, kind, location):
        return "an ffmpeg child process (open timeout %g s, stall timeout %g s)" % (camera.open_timeout_s,
                                                                                   camera.stall_timeout_s)
    if kind == "stream" and camera.decoder == "auto" and not ffmpeg_available() and not hwdecode.pipelines(kind, location):
        return hwdecode.describe(kind, location) + "; ffmpeg is not installed (apt-get install ffmpeg) so one " \
            "hanging stream open can delay the other cameras' opens"
    return hwdecode.describe(kind, location)


def open_source(camera):
    """The source object for a camera config (not yet opened)."""
    kind, location = parse_uri(camera.source)
    url_fn = camera.source_url if kind == "stream" and getattr(camera, "username", None) else None
    if kind == "video":
        return VideoFileSource(location, camera.pacing, camera.loop)
    if kind == "folder":
        return ImageFolderSource(location, camera.loop, camera.fps)
    if kind == "stream" and _use_ffmpeg(camera.decoder, kind, location):
        return FFmpegStreamSource(location, camera.open_timeout_s, camera.stall_timeout_s, url_fn=url_fn)
    return OpenCVSource(kind, location, int(camera.open_timeout_s * 1000), int(camera.stall_timeout_s * 1000),
                        url_fn=url_fn)
