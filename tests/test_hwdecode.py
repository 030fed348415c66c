"""Hardware decode on a Jetson: the nvv4l2decoder pipelines for rtsp:// and H.264/H.265 files, chosen only on a
Jetson whose OpenCV has GStreamer, passwords kept out of what check-config prints. The pipelines run for real
through this machine's GStreamer with its software H.264 decoder in nvv4l2decoder's place (no NVDEC here):
everything around the decoder (rtspsrc, depay, parse, demux, caps, appsink) is the pipeline the Jetson runs."""
import json
import os
import subprocess

import pytest

from edge.capture import hwdecode
from helpers import ROOT, run_cli, write_config
from test_device import MODULES, write_tree

SAMPLE = os.path.join(ROOT, "samples", "gate_us.mp4")
SYSTEM_PYTHON = "/usr/bin/python3"
SOFTWARE_DECODE = "openh264dec ! videoconvert ! video/x-raw,format=BGRx"

PULL = r"""
import sys
import gi
gi.require_version("Gst", "1.0")
from gi.repository import Gst
Gst.init(None)
pipeline = Gst.parse_launch(sys.argv[1].replace("appsink", "appsink name=sink", 1))
sink = pipeline.get_by_name("sink")
pipeline.set_state(Gst.State.PLAYING)
frames = []
for _ in range(int(sys.argv[2])):
    sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
    if sample is None:
        break
    s = sample.get_caps().get_structure(0)
    frames.append((s.get_value("format"), s.get_value("width"), s.get_value("height")))
pipeline.set_state(Gst.State.NULL)
print(frames)
"""


@pytest.fixture
def jetson(tmp_path, monkeypatch):
    root = write_tree(tmp_path / "root", *MODULES[0][:3])  # a Nano
    monkeypatch.setattr(hwdecode, "opencv_has_gstreamer", lambda build_info=None: True)
    hwdecode.unavailable_reason.cache_clear()
    yield root
    hwdecode.unavailable_reason.cache_clear()


def test_pipelines_on_a_jetson(jetson):
    rtsp = hwdecode.pipelines("stream", "rtsp://cam:s3cret@10.0.0.20:554/stream1", jetson)
    assert [p.split(" ! ")[1:3] for p in rtsp] == [["rtph264depay", "h264parse"], ["rtph265depay", "h265parse"]]
    assert all("nvv4l2decoder ! nvvidconv" in p and p.endswith("appsink drop=true max-buffers=1 sync=false")
               for p in rtsp)
    video = hwdecode.pipelines("video", SAMPLE, jetson)
    assert video == ['filesrc location="%s" ! qtdemux ! h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,'
                     'format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=false max-buffers=4 '
                     'sync=false' % SAMPLE]
    assert hwdecode.pipelines("v4l2", "/dev/video0", jetson) == []
    described = hwdecode.describe("stream", "rtsp://cam:s3cret@10.0.0.20:554/stream1", jetson)
    assert "nvv4l2decoder" in described and "s3cret" not in described and "rtsp://***@10.0.0.20" in described


def test_no_hardware_decode_off_a_jetson_or_without_gstreamer(tmp_path, monkeypatch):
    hwdecode.unavailable_reason.cache_clear()
    root = write_tree(tmp_path / "x86")
    assert hwdecode.pipelines("stream", "rtsp://10.0.0.20/s", root) == []
    assert hwdecode.describe("video", SAMPLE, root) == "OpenCV (FFmpeg) (no hardware decode: not a Jetson)"
    nano = write_tree(tmp_path / "nano", *MODULES[0][:3])
    monkeypatch.setattr(hwdecode, "opencv_has_gstreamer", lambda build_info=None: False)
    hwdecode.unavailable_reason.cache_clear()
    assert "--system-site-packages" in hwdecode.unavailable_reason(nano)
    assert hwdecode.pipelines("video", SAMPLE, nano) == []
    hwdecode.unavailable_reason.cache_clear()


def test_gstreamer_build_info_and_codecs():
    assert hwdecode.opencv_has_gstreamer("  Video I/O:\n    GStreamer:                   YES (1.16.3)\n")
    assert not hwdecode.opencv_has_gstreamer("    GStreamer:                   NO\n")
    assert hwdecode.file_codec(SAMPLE) == "h264"
    assert hwdecode.file_pipeline("/x/clip.avi", "h264") is None
    assert " ! matroskademux ! h265parse ! " in hwdecode.file_pipeline("/x/clip.mkv", "h265")
    assert hwdecode.file_pipeline("/x/raw.h264", "h264").startswith('filesrc location="/x/raw.h264" ! h264parse !')


def _pull(pipeline, n):
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.fail("needs Debian's python3 with python3-gi and GStreamer (make setup installs them)")
    out = subprocess.run([SYSTEM_PYTHON, "-c", PULL, pipeline, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout)  # a list of tuples printed by PULL


def test_file_pipeline_runs_in_gstreamer():
    frames = _pull(hwdecode.file_pipeline(SAMPLE, "h264", decode=SOFTWARE_DECODE), 30)
    assert len(frames) == 30 and set(frames) == {("BGR", 640, 360)}  # every frame: the file's appsink never drops


def test_rtsp_pipeline_runs_against_a_real_rtsp_camera(rtsp_camera):
    frames = _pull(hwdecode.rtsp_pipeline(rtsp_camera.url, "h264", decode=SOFTWARE_DECODE), 10)
    assert len(frames) == 10 and set(frames) == {("BGR", 640, 360)}


def test_check_config_prints_how_each_camera_is_decoded(tmp_path):
    config = write_config(tmp_path / "c.yaml", """
device_id: t
device_profile: cpu
model: {path: %s/models/us_lprnet_baseline10_mid.onnx}
cameras:
  - {id: gate, source: %s, mode: crop}
health: {port: 0}
""" % (ROOT, SAMPLE))
    result = run_cli("check-config", config, "--skip-model")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[:result.stdout.rindex("}") + 1])
    assert summary["cameras"][0]["decode"].startswith("OpenCV (FFmpeg)")
