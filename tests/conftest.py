"""Shared fixtures: a real mosquitto broker on a free loopback port, an MQTT subscriber that collects
messages, a real RTSP camera (GStreamer's RTSP server playing the sample), paths of the repo's files."""
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from helpers import Subscriber, free_port, wait_port  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


class ServerProcess:
    """A server on a loopback port, its output in a log beside the test's files; stop() and start() again
    on the same port are an outage (a broker restart, a camera dropping off the network)."""

    name = "server"
    hint = ""  # what to install when it does not start

    def __init__(self, workdir, port=None):
        self.workdir = str(workdir)
        self.port = port or free_port()
        self.proc = None
        self.log_path = os.path.join(self.workdir, "%s-%d.log" % (self.name, self.port))

    def command(self):
        raise NotImplementedError

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        if not wait_port(self.port, 10):
            self.stop()
            with open(self.log_path) as log:
                pytest.fail("%s did not start on %d%s: %s" % (self.name, self.port, self.hint, log.read()))
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Broker(ServerProcess):
    """A mosquitto process."""

    name = "mosquitto"

    def __init__(self, workdir, port=None, extra_conf="", persistent=False):
        ServerProcess.__init__(self, workdir, port)
        self.extra_conf = extra_conf
        self.persistent = persistent

    def command(self):
        conf = os.path.join(self.workdir, "mosquitto-%d.conf" % self.port)
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\n" % self.port)
            if os.geteuid() == 0:  # else mosquitto drops to its own user, who cannot read pytest's tmp dirs
                f.write("user root\n")
            if self.persistent:  # sessions and queued QoS 1 messages survive a broker restart
                f.write("persistence true\npersistence_location %s/\n" % self.workdir)
            else:
                f.write("persistence false\n")
            f.write(self.extra_conf or "allow_anonymous true\n")
        return [MOSQUITTO, "-c", conf]


SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with the GObject bindings the RTSP server needs


class RtspCamera(ServerProcess):
    """scripts/rtsp_serve.py serving samples/gate_us.mp4 live at `url`."""

    name = "rtsp"
    hint = " (make setup installs python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good)"

    def __init__(self, workdir, path="gate"):
        ServerProcess.__init__(self, workdir)
        self.path = path
        self.url = "rtsp://127.0.0.1:%d/%s" % (self.port, path)

    def command(self):
        return [SYSTEM_PYTHON, os.path.join(ROOT, "scripts", "rtsp_serve.py"),
                os.path.join(ROOT, "samples", "gate_us.mp4"), "--port", str(self.port), "--path", self.path]


@pytest.fixture
def rtsp_camera(tmp_path):
    cam = RtspCamera(tmp_path).start()
    yield cam
    cam.stop()


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed (make setup installs it: apt-get install mosquitto)")
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def make_broker(tmp_path):
    made = []

    def make(**kwargs):
        b = Broker(tmp_path, **kwargs)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def subscriber(broker):
    subs = []

    def make(topic, **kwargs):
        s = Subscriber(broker.port, topic, **kwargs)
        subs.append(s)
        return s

    yield make
    for s in subs:
        s.close()


@pytest.fixture(scope="session")
def us_model():
    path = os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")
    assert os.path.exists(path), "shipped model missing: %s" % path
    return path


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (and, for tests/test_tensorrt_gpu.py, TensorRT and "
                                       "pycuda); skipped elsewhere, run on a GPU machine or a Jetson "
                                       "(`pytest -m gpu tests/test_training.py tests/test_tensorrt_gpu.py`, "
                                       "scripts/jetson-selftest.sh)")


@pytest.fixture(scope="session", autouse=True)
def default_ports_taken():
    """Hold the daemon's default health port (8941) for the whole run, as another lpr-edge on the machine
    would: a test that forgets to take a free port fails here, not on somebody else's machine."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8941))
        holder.listen(1)
    except OSError:  # something already holds it: the same condition
        pass
    yield
    holder.close()
