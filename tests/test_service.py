"""The daemon under a real NOTIFY_SOCKET (a unix datagram socket standing in for systemd): READY,
STATUS, WATCHDOG pings at half the interval, STOPPING on SIGTERM; pings stop and /healthz turns 503
when a stage wedges; /metrics parses; the unit verifies with systemd-analyze."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.service.notify import Notifier
from helpers import ROOT, VENV_BIN, free_port, wait_for
from onnx_models import make_lprnet_like


class NotifySocket:
    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.address = "@lpr-edge-test-%d-%d" % (os.getpid(), int(time.time() * 1000))
            self.sock.bind("\0" + self.address[1:])
        else:
            self.dir = tempfile.mkdtemp(prefix="n", dir="/tmp")  # sun_path is at most 108 bytes
            self.address = os.path.join(self.dir, "notify")
            self.sock.bind(self.address)
        self.messages = []  # (monotonic time, {key: value})

    def poll(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
        return self.messages

    def times(self, key):
        return [t for t, f in self.messages if key in f]

    def close(self):
        self.sock.close()
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)


def service_config(tmp_path, broker_port, health_port, stage_deadline_s=30):
    model = make_lprnet_like(tmp_path / "us_fake.onnx", force_class=3)
    shutil.copy(os.path.join(ROOT, "models", "us_lp_characters.txt"), str(tmp_path / "us_lp_characters.txt"))
    path = tmp_path / "config.yaml"
    path.write_text("""
device_id: svc
device_profile: cpu
state_dir: {state}
model: {{path: {model}}}
cameras:
  - id: gate
    source: {root}/samples/gate_us.mp4
    loop: true
    pacing: realtime
    rois: [{{id: lane1, points: [[255, 229], [385, 224], [387, 291], [257, 294]]}}]
mqtt: {{port: {port}, status_interval_s: 1}}
health: {{port: {health}, stage_deadline_s: {deadline}}}
""".format(state=tmp_path / "state", model=model, root=ROOT, port=broker_port, health=health_port,
           deadline=stage_deadline_s))
    return str(path)


def start(config, notify, watchdog_usec=1000000, **env):
    environ = dict(os.environ, NOTIFY_SOCKET=notify.address, WATCHDOG_USEC=str(watchdog_usec), **env)
    environ.pop("WATCHDOG_PID", None)
    return subprocess.Popen([os.path.join(VENV_BIN, "lpr-edge"), "run", "--config", config], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_status_watchdog_stopping(broker, tmp_path, abstract):
    notify = NotifySocket(abstract)
    hport = free_port()
    proc = start(service_config(tmp_path, broker.port, hport), notify)
    try:
        notify.poll(4.0)
        ready = notify.times("READY")
        assert ready, notify.messages
        pings = [t for t in notify.times("WATCHDOG") if t > ready[0]]
        assert len(pings) >= 4  # 1 s watchdog: a ping every 0.5 s
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert all(0.2 < g < 1.0 for g in gaps), gaps  # half of WatchdogSec=1 s, with room for a loaded CI
        statuses = [f["STATUS"] for _, f in notify.messages if "STATUS" in f]
        assert any("cameras streaming" in s and "mqtt" in s for s in statuses), statuses
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        notify.poll(0.5)
        assert notify.times("STOPPING") and proc.returncode == 0
    finally:
        proc.kill()
        proc.wait()
        notify.close()


def test_wedged_recognizer_stops_pings_and_healthz_names_it(broker, tmp_path):
    notify = NotifySocket()
    hport = free_port()
    proc = start(service_config(tmp_path, broker.port, hport, stage_deadline_s=1.5), notify,
                 LPR_EDGE_TEST_WEDGE="recognizer")
    try:
        notify.poll(2.0)
        assert notify.times("READY")
        code, body = get(hport, "/healthz")
        notify.poll(3.0)
        last_ping = max(notify.times("WATCHDOG") or [0])
        assert time.monotonic() - last_ping > 2.0  # no ping for the last 2 s
        code, body = get(hport, "/healthz")
        report = json.loads(body)
        assert code == 503 and report["status"] == "failed"
        assert report["components"]["recognizer"]["status"] == "failed"
        assert "wedged" in report["components"]["recognizer"]["reason"]
        assert report["components"]["camera:gate"]["status"] == "ok"  # the others are named healthy
    finally:
        proc.kill()
        proc.wait()
        notify.close()


def test_healthz_ok_and_metrics_parse(broker, tmp_path):
    notify = NotifySocket()
    hport = free_port()
    proc = start(service_config(tmp_path, broker.port, hport), notify)
    try:
        assert wait_for(lambda: notify.poll(0.2) and notify.times("READY"), 10)
        assert wait_for(lambda: json.loads(get(hport, "/healthz")[1])["components"]["mqtt"]["status"] == "ok", 10)
        time.sleep(1.0)
        code, body = get(hport, "/healthz")
        assert code == 200 and json.loads(body)["status"] == "ok"
        code, text = get(hport, "/metrics")
        assert code == 200
        families = {f.name: f for f in text_string_to_metric_families(text)}
        frames = [s for s in families["lpr_edge_frames"].samples if s.labels.get("camera") == "gate"]
        assert frames and frames[0].value > 0
        assert "lpr_edge_inference_seconds" in families and "lpr_edge_batch_size" in families
        assert [s.value for s in families["lpr_edge_mqtt_connected"].samples] == [1.0]
        states = {s.labels["state"]: s.value for s in families["lpr_edge_camera_state"].samples}
        assert states["streaming"] == 1.0
        assert "lpr_edge_outbox_events" in families and "lpr_edge_model_load_seconds" in families
        assert {s.labels["result"] for s in families["lpr_edge_reads_plate_format"].samples} == {"refit", "miss"}
        assert {s.labels["reason"] for s in families["lpr_edge_reads_rejected"].samples} == {
            "too_short", "at_edge", "low_confidence", "format", "fragment"}
    finally:
        proc.kill()
        proc.wait()
        notify.close()


def test_broker_down_is_degraded_not_wedged(tmp_path):
    notify = NotifySocket()
    hport = free_port()
    proc = start(service_config(tmp_path, free_port(), hport), notify)  # nothing listens there
    try:
        assert wait_for(lambda: notify.poll(0.2) and notify.times("READY"), 10)
        notify.poll(2.0)
        code, body = get(hport, "/healthz")
        report = json.loads(body)
        assert code == 200 and report["status"] == "degraded"
        assert "refused" in report["components"]["mqtt"]["reason"]
        ready = notify.times("READY")[0]
        assert len([t for t in notify.times("WATCHDOG") if t > ready]) >= 2  # still pinging
    finally:
        proc.kill()
        proc.wait()
        notify.close()


def test_notifier_without_socket_is_a_no_op():
    assert Notifier(environ={}).notify(READY=1) is False
    assert Notifier(environ={"NOTIFY_SOCKET": "relative"}, use_library=False).notify(READY=1) is False
    n = Notifier(environ={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_usec == 0  # meant for another process
    n = Notifier(environ={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_usec == 2000000


def test_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing (Debian package systemd; make setup installs it)"
    unit = open(os.path.join(ROOT, "systemd", "lpr-edge.service")).read()
    unit = unit.replace("/opt/lpr-edge/venv/bin/lpr-edge", os.path.join(VENV_BIN, "lpr-edge"))
    path = tmp_path / "lpr-edge.service"
    path.write_text(unit)
    result = subprocess.run([analyze, "verify", "--man=no", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    lines = [l for l in result.stdout.splitlines() if "lpr-edge.service" in l]
    assert result.returncode == 0 and not lines, result.stdout
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "RestartPreventExitStatus=2",
                "StartLimitBurst=", "LoadCredential=mqtt_password", "SupplementaryGroups=video",
                "ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=lpr-edge"):
        assert key in unit
    directives = [l.strip() for l in unit.splitlines() if not l.lstrip().startswith("#")]
    assert "PrivateDevices=yes" not in directives and "DevicePolicy=closed" not in directives  # hide /dev/nvhost-*


def test_untrusted_broker_certificate_shows_in_health(make_broker, tmp_path):
    from tls import make_pki

    pki = make_pki(tmp_path)
    conf = "allow_anonymous true\ncafile %s\ncertfile %s\nkeyfile %s\n" % (pki["ca"], pki["server_cert"],
                                                                            pki["server_key"])
    broker = make_broker(extra_conf=conf).start()
    notify = NotifySocket()
    hport = free_port()
    config = service_config(tmp_path, broker.port, hport)
    with open(config, "a") as f:
        f.write("mqtt: {port: %d, tls: {ca_certs: %s}}\n" % (broker.port, pki["rogue_ca"]))
    text = open(config).read().replace("mqtt: {port: %d, status_interval_s: 1}\n" % broker.port, "")
    open(config, "w").write(text)
    proc = start(config, notify)
    try:
        assert wait_for(lambda: notify.poll(0.2) and notify.times("READY"), 10)
        assert wait_for(lambda: "certificate" in json.loads(get(hport, "/healthz")[1])["components"]["mqtt"]["reason"], 10)
        report = json.loads(get(hport, "/healthz")[1])
        assert report["status"] == "degraded" and "TLS" in report["components"]["mqtt"]["reason"]
        assert proc.poll() is None  # serving, no crash loop
    finally:
        proc.kill()
        proc.wait()
        notify.close()
