"""Sources and the capture stage on real files: video files, image folders, bad URIs; the mailbox's
drop-oldest queues."""
import os
import threading
import time

import cv2
import numpy as np
import pytest

from edge.capture import CaptureThread, FrameCrops, SourceEnded
from edge.capture.sources import ImageFolderSource, SourceError, VideoFileSource, open_source, parse_uri
from edge.config.model import CameraConfig, RoiConfig
from edge.crop import FrameCropper, RoiCropper
from edge.queues import FrameMailbox
from helpers import ROOT, wait_for

SAMPLE = os.path.join(ROOT, "samples", "gate_us.mp4")


def camera(source, **kw):
    base = dict(id="cam", source=source, enabled=True, mode="roi",
                rois=[RoiConfig("lane1", [(255, 229), (385, 224), (387, 291), (257, 294)])],
                pacing="fast", loop=False, fps=0, queue_size=4)
    base.update(kw)
    return CameraConfig(**base)


def test_parse_uri():
    assert parse_uri("file:///a/b.mp4") == ("video", "/a/b.mp4")
    assert parse_uri("rtsp://10.0.0.1/x") == ("stream", "rtsp://10.0.0.1/x")
    assert parse_uri("v4l2:///dev/video0") == ("v4l2", "/dev/video0")
    assert parse_uri("csi://0") == ("csi", "0")
    assert parse_uri(ROOT) == ("folder", ROOT)
    with pytest.raises(SourceError):
        parse_uri("ftp://x/y")


def test_video_file_once_and_loop():
    src = VideoFileSource(SAMPLE, pacing="fast")
    src.open()
    frames = 0
    last = -1.0
    while True:
        item = src.read()
        if item is None:
            break
        ts, frame = item
        assert ts > last and frame.shape == (360, 640, 3)
        last = ts
        frames += 1
    assert frames == 240 and abs(last - 23.9) < 1e-6
    looped = VideoFileSource(SAMPLE, pacing="fast", loop=True)
    looped.open()
    stamps = [looped.read()[0] for _ in range(250)]
    assert stamps == sorted(stamps) and stamps[245] > 24.0  # time keeps going across the loop


def test_realtime_pacing_follows_the_file_frame_rate():
    src = VideoFileSource(SAMPLE, pacing="realtime")
    src.open()
    start = time.monotonic()
    for _ in range(11):
        src.read()
    assert time.monotonic() - start >= 0.95  # 10 fps: frame 11 is due at 1.0 s


def test_missing_and_broken_video(tmp_path):
    with pytest.raises(SourceError) as info:
        VideoFileSource(str(tmp_path / "none.mp4")).open()
    assert "no such video file" in str(info.value)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError) as info:
        VideoFileSource(str(bad)).open()
    assert "cannot open" in str(info.value)


def test_image_folder_skips_unreadable_files(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((48, 96, 3), np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(tmp_path / "c.png"), np.full((48, 96, 3), 255, np.uint8))
    src = ImageFolderSource(str(tmp_path))
    src.open()
    items = [src.read(), src.read(), src.read()]
    assert items[2] is None and src.unreadable == 1
    assert items[1][1].mean() == 255


def test_roi_crop_is_96x48_and_frame_mode():
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[229:294, 255:387] = 200
    crops = RoiCropper("cam", camera(SAMPLE).rois).crops(frame)
    assert len(crops) == 1 and crops[0].image.shape == (48, 96, 3) and crops[0].image.mean() > 150
    assert crops[0].box == [255, 224, 132, 70]
    whole = FrameCropper().crops(frame)
    assert whole[0].image.shape == (48, 96, 3) and whole[0].roi_id == "frame"


def test_capture_thread_ends_with_marker():
    mailbox = FrameMailbox()
    mailbox.add_camera("cam", 1000)
    stop = threading.Event()
    thread = CaptureThread(camera(SAMPLE, queue_size=1000), mailbox, stop)
    thread.start()
    thread.join(60)
    items = mailbox.take(1000, 0.1)
    assert thread.state == "ended"
    assert sum(isinstance(i, FrameCrops) for i in items) == 240 and isinstance(items[-1], SourceEnded)


def test_capture_of_missing_file_fails_clearly(tmp_path):
    mailbox = FrameMailbox()
    mailbox.add_camera("cam", 4)
    thread = CaptureThread(camera(str(tmp_path / "gone.mp4")), mailbox, threading.Event())
    thread.start()
    thread.join(10)
    assert thread.state == "failed" and "no such video file" in thread.error


def test_live_source_that_fails_reconnects_with_backoff():
    stop = threading.Event()
    mailbox = FrameMailbox()
    mailbox.add_camera("cam", 4)
    cam = camera("rtsp://127.0.0.1:1/none")
    thread = CaptureThread(cam, mailbox, stop, source=open_source(cam))
    thread.start()
    time.sleep(2.5)
    stop.set()
    thread.join(15)
    assert thread.reconnects >= 1 and thread.state == "reconnecting" and "cannot open" in thread.error


def test_mailbox_drops_oldest_and_counts():
    box = FrameMailbox()
    box.add_camera("a", 3)
    box.add_camera("b", 3)
    for i in range(5):
        box.put("a", i)
    box.put("b", "x")
    assert box.dropped["a"] == 2
    assert box.take(10, 0) == [2, "x", 3, 4]  # round-robin across cameras


def test_rtsp_camera_streams_live_and_comes_back_after_dropping_off(rtsp_camera):
    """A real RTSP stream (GStreamer's RTSP server): frames arrive at the camera's pace; when the camera
    drops off, the thread says so and reconnects on its own once the camera is back."""
    stop = threading.Event()
    mailbox = FrameMailbox()
    mailbox.add_camera("cam", 1000)
    cam = camera(rtsp_camera.url, queue_size=1000)
    thread = CaptureThread(cam, mailbox, stop, source=open_source(cam))
    thread.start()
    got = []
    try:
        assert wait_for(lambda: got.extend(mailbox.take(100, 0.05)) or len(got) >= 45, 40), thread.error
        assert thread.state == "streaming"
        frames = [g for g in got if isinstance(g, FrameCrops)]
        assert [c.roi_id for c in frames[0].crops] == ["lane1"] and frames[0].crops[0].image.shape == (48, 96, 3)
        stamps = [f.timestamp for f in frames]
        # live at the camera's 10 fps once FFmpeg's probe burst (about 2 s of stream at open) is through
        assert stamps == sorted(stamps) and stamps[-1] - stamps[-20] > 1.0
        rtsp_camera.stop()
        assert wait_for(lambda: thread.state == "reconnecting", 20), thread.state
        assert thread.error and not any(isinstance(i, SourceEnded) for i in mailbox.take(1000, 0.05))
        rtsp_camera.start()
        before = thread.reconnects
        assert wait_for(lambda: thread.state == "streaming", 30), thread.error
        more = []
        assert wait_for(lambda: more.extend(mailbox.take(100, 0.05)) or len(more) >= 5, 20)
        assert thread.reconnects >= before >= 1
    finally:
        stop.set()
        thread.join(20)


def test_rtsp_path_the_camera_does_not_serve_is_named(rtsp_camera):
    stop = threading.Event()
    mailbox = FrameMailbox()
    mailbox.add_camera("cam", 4)
    wrong = rtsp_camera.url.rsplit("/", 1)[0] + "/no-such-stream"
    cam = camera(wrong)
    thread = CaptureThread(cam, mailbox, stop, source=open_source(cam))
    thread.start()
    try:
        assert wait_for(lambda: thread.reconnects >= 1, 20), thread.state
        assert thread.state == "reconnecting" and wrong in thread.error and "cannot open" in thread.error
    finally:
        stop.set()
        thread.join(20)
