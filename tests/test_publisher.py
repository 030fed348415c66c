"""The publisher against a real mosquitto: outbox order, QoS 1, never retained, availability with a
retained last will, broker outages, refused credentials, paho-mqtt 1.6 as well as 2.x."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

from edge.config.model import MqttConfig
from edge.outbox import Outbox
from edge.publish.mqtt import MqttPublisher
from helpers import ROOT, Subscriber, wait_for

EVENTS = "lpr-edge/dev1/events"
AVAIL = "lpr-edge/dev1/availability"


def mqtt_config(port, **kw):
    base = dict(host="127.0.0.1", port=port, topic_prefix="lpr-edge", protocol="3.1.1", keepalive_s=10,
                reconnect_min_s=0.2, reconnect_max_s=1.0, max_inflight=5, client_id="pub-test")
    base.update(kw)
    return MqttConfig(**base)


def start_publisher(cfg, outbox_path):
    stop = threading.Event()
    pub = MqttPublisher(cfg, "dev1", stop, outbox_path, (1000, 10 ** 7))
    pub.start()
    return pub, stop


def fill(outbox_path, ids):
    box = Outbox(outbox_path)
    for i in ids:
        box.add("ev%04d" % i, EVENTS, json.dumps({"id": "ev%04d" % i}).encode())
    box.close()


def received_ids(sub):
    return [e["id"] for e in sub.events(EVENTS)]


def test_events_in_order_not_retained_and_acked_out_of_outbox(broker, subscriber, tmp_path):
    sub = subscriber("lpr-edge/#")
    path = str(tmp_path / "o.db")
    fill(path, range(30))
    pub, stop = start_publisher(mqtt_config(broker.port), path)
    try:
        assert wait_for(lambda: len(received_ids(sub)) >= 30, 15)
        assert received_ids(sub) == ["ev%04d" % i for i in range(30)]
        assert not any(retain for t, _, retain in sub.messages if t == EVENTS)
        assert wait_for(lambda: Outbox(path).depth()[0] == 0, 5)
        assert b"online" in sub.payloads(AVAIL)
    finally:
        stop.set()
        pub.join(5)
    # clean stop publishes offline, retained: a new subscriber sees it
    late = Subscriber(broker.port, AVAIL)
    assert wait_for(lambda: late.payloads(AVAIL)[-1:] == [b"offline"], 5)
    late.close()


def test_broker_outage_every_event_arrives_in_order(make_broker, tmp_path):
    broker = make_broker(persistent=True).start()
    sub = Subscriber(broker.port, EVENTS, persistent=True)
    path = str(tmp_path / "o.db")
    pub, stop = start_publisher(mqtt_config(broker.port), path)
    try:
        fill(path, range(0, 10))
        assert wait_for(lambda: len(received_ids(sub)) >= 10, 15)
        broker.stop()
        assert wait_for(lambda: not pub.connected, 10)
        fill(path, range(10, 40))  # events made while the broker is down wait in the outbox
        time.sleep(1.0)
        assert Outbox(path).depth()[0] >= 30
        assert pub.state in ("error", "disconnected", "connecting")
        broker.start()
        assert wait_for(lambda: len(set(received_ids(sub))) >= 40, 30), received_ids(sub)
        ids = received_ids(sub)
        assert sorted(set(ids)) == ["ev%04d" % i for i in range(40)]
        # in order: the first arrival of each id follows outbox order
        first = []
        for i in ids:
            if i not in first:
                first.append(i)
        assert first == ["ev%04d" % i for i in range(40)]
        assert wait_for(lambda: Outbox(path).depth()[0] == 0, 10)
    finally:
        stop.set()
        pub.join(5)
        sub.close()


def test_last_will_offline_when_publisher_dies(broker, tmp_path):
    script = (
        "import sys, threading, time\n"
        "sys.path.insert(0, %r)\n"
        "from test_publisher import mqtt_config, start_publisher\n"
        "pub, stop = start_publisher(mqtt_config(%d, keepalive_s=5, client_id='will-test'), %r)\n"
        "while not pub.connected: time.sleep(0.05)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n" % (os.path.join(ROOT, "tests"), broker.port, str(tmp_path / "w.db")))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests")))
    try:
        assert proc.stdout.readline().strip() == b"up"
        sub = Subscriber(broker.port, AVAIL)
        assert wait_for(lambda: sub.payloads(AVAIL)[-1:] == [b"online"], 5)
        proc.send_signal(signal.SIGKILL)
        assert wait_for(lambda: sub.payloads(AVAIL)[-1:] == [b"offline"], 15), sub.payloads(AVAIL)
        sub.close()
    finally:
        proc.kill()
        proc.wait()


def test_refused_password_is_reported_and_events_wait(make_broker, tmp_path):
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    subprocess.check_call(["mosquitto_passwd", "-b", str(pwfile), "lpr", "right-password"])
    broker = make_broker(extra_conf="allow_anonymous false\npassword_file %s\n" % pwfile).start()
    path = str(tmp_path / "o.db")
    fill(path, range(3))
    os.environ["LPR_TEST_PW"] = "wrong-password"
    pub, stop = start_publisher(mqtt_config(broker.port, username="lpr", password_env="LPR_TEST_PW"), path)
    try:
        assert wait_for(lambda: pub.state == "refused" or "refused" in (pub.last_error or ""), 10)
        assert "not authori" in pub.last_error.lower() or "bad user" in pub.last_error.lower()
        time.sleep(1.0)
        assert pub.is_alive()  # keeps retrying with backoff, no crash loop
        assert Outbox(path).depth()[0] == 3
    finally:
        stop.set()
        pub.join(5)
    os.environ["LPR_TEST_PW"] = "right-password"
    pub, stop = start_publisher(mqtt_config(broker.port, username="lpr", password_env="LPR_TEST_PW"), path)
    try:
        assert wait_for(lambda: Outbox(path).depth()[0] == 0, 10)
        assert pub.last_error is None
    finally:
        stop.set()
        pub.join(5)


def test_connection_refused_is_reported(tmp_path):
    from helpers import free_port

    pub, stop = start_publisher(mqtt_config(free_port()), str(tmp_path / "o.db"))
    try:
        assert wait_for(lambda: pub.last_error is not None, 5)
        assert "refused" in pub.last_error
    finally:
        stop.set()
        pub.join(5)


def test_paho_1_6_api(broker, subscriber, tmp_path):
    """The same publisher with paho-mqtt 1.6 (JetPack 4.6's Python 3.6 cannot have 2.x)."""
    paho16 = os.path.join(ROOT, ".venv", "paho16")
    assert os.path.isdir(paho16), "make setup-train installs paho-mqtt 1.6 into .venv/paho16"
    sub = subscriber(EVENTS)
    path = str(tmp_path / "o.db")
    fill(path, range(5))
    script = (
        "import threading, time, paho.mqtt.client as paho\n"
        "assert not hasattr(paho, 'CallbackAPIVersion'), paho.__file__\n"
        "from test_publisher import mqtt_config, start_publisher\n"
        "from edge.outbox import Outbox\n"
        "pub, stop = start_publisher(mqtt_config(%d, client_id='paho16'), %r)\n"
        "deadline = time.time() + 15\n"
        "while Outbox(%r).depth()[0] and time.time() < deadline: time.sleep(0.05)\n"
        "stop.set(); pub.join(5)\n"
        "print('left', Outbox(%r).depth()[0])\n" % (broker.port, path, path, path))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([paho16, ROOT, os.path.join(ROOT, "tests")]))
    out = subprocess.run([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, timeout=60, universal_newlines=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "left 0"
    assert wait_for(lambda: len(received_ids(sub)) >= 5, 5)
    assert received_ids(sub) == ["ev%04d" % i for i in range(5)]


def test_sent_but_unacknowledged_events_survive_sigkill(broker, tmp_path):
    """Freeze the broker (SIGSTOP): the link stays up, events go out, no PUBACK comes back. Killing the
    publisher then must leave every one of them in the outbox, to be sent again after a restart."""
    path = str(tmp_path / "o.db")
    Outbox(path).close()
    script = (
        "import sys, time\n"
        "from test_publisher import mqtt_config, start_publisher\n"
        "pub, stop = start_publisher(mqtt_config(%d, keepalive_s=60, client_id='inflight'), %r)\n"
        "while not pub.connected: time.sleep(0.05)\n"
        "print('up', flush=True)\n"
        "while len(pub._inflight) < 5: time.sleep(0.05)\n"
        "print('inflight', flush=True)\n"
        "time.sleep(60)\n" % (broker.port, path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests")))
    try:
        assert proc.stdout.readline().strip() == b"up"
        broker.proc.send_signal(signal.SIGSTOP)
        fill(path, range(5))
        assert proc.stdout.readline().strip() == b"inflight"  # all five published, none acknowledged
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        broker.proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()
    assert [r.event_id for r in Outbox(path).pending()] == ["ev%04d" % i for i in range(5)]
