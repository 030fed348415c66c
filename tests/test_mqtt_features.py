"""MQTT features against a real mosquitto: TLS with a test CA (and client certificates), MQTT 5, the
retained status topic, Home Assistant discovery."""
import json
import threading

from edge.config.model import HomeAssistantConfig, TlsConfig
from edge.outbox import Outbox
from edge.publish.homeassistant import HomeAssistantDiscovery
from edge.publish.mqtt import PAHO2, MqttPublisher
from edge.publish.topics import Topics
from helpers import Subscriber, wait_for
from test_publisher import EVENTS, fill, mqtt_config, received_ids, start_publisher
from tls import make_pki


def tls_broker(make_broker, pki, require_client_cert=False):
    conf = "allow_anonymous true\ncafile %s\ncertfile %s\nkeyfile %s\n" % (pki["ca"], pki["server_cert"], pki["server_key"])
    if require_client_cert:
        conf += "require_certificate true\n"
    return make_broker(extra_conf=conf).start()


def test_tls_with_test_ca_connects_and_delivers(make_broker, tmp_path):
    pki = make_pki(tmp_path)
    broker = tls_broker(make_broker, pki)
    path = str(tmp_path / "o.db")
    fill(path, range(3))
    pub, stop = start_publisher(mqtt_config(broker.port, tls=TlsConfig(ca_certs=pki["ca"])), path)
    try:
        assert wait_for(lambda: Outbox(path).depth()[0] == 0, 10), pub.last_error
        assert pub.last_error is None and pub.published == 3
    finally:
        stop.set()
        pub.join(5)


def test_tls_untrusted_ca_is_a_clear_error_and_events_wait(make_broker, tmp_path):
    pki = make_pki(tmp_path)
    broker = tls_broker(make_broker, pki)
    path = str(tmp_path / "o.db")
    fill(path, range(3))
    pub, stop = start_publisher(mqtt_config(broker.port, tls=TlsConfig(ca_certs=pki["rogue_ca"])), path)
    try:
        assert wait_for(lambda: pub.last_error is not None, 10)
        assert "certificate" in pub.last_error and "TLS" in pub.last_error
        assert pub.is_alive() and Outbox(path).depth()[0] == 3
    finally:
        stop.set()
        pub.join(5)


def test_tls_client_certificate(make_broker, tmp_path):
    pki = make_pki(tmp_path)
    broker = tls_broker(make_broker, pki, require_client_cert=True)
    path = str(tmp_path / "o.db")
    fill(path, range(2))
    # without a client certificate the broker refuses the handshake
    pub, stop = start_publisher(mqtt_config(broker.port, tls=TlsConfig(ca_certs=pki["ca"])), path)
    try:
        assert wait_for(lambda: pub.last_error is not None, 10)
        assert Outbox(path).depth()[0] == 2
    finally:
        stop.set()
        pub.join(5)
    tls = TlsConfig(ca_certs=pki["ca"], certfile=pki["client_cert"], keyfile=pki["client_key"])
    pub, stop = start_publisher(mqtt_config(broker.port, tls=tls, client_id="with-cert"), path)
    try:
        assert wait_for(lambda: Outbox(path).depth()[0] == 0, 10), pub.last_error
    finally:
        stop.set()
        pub.join(5)


def test_mqtt5(broker, subscriber, tmp_path):
    sub = subscriber(EVENTS)
    path = str(tmp_path / "o.db")
    fill(path, range(5))
    pub, stop = start_publisher(mqtt_config(broker.port, protocol="5"), path)
    try:
        assert wait_for(lambda: len(received_ids(sub)) == 5, 10), pub.last_error
        assert received_ids(sub) == ["ev%04d" % i for i in range(5)]
    finally:
        stop.set()
        pub.join(5)


def test_status_topic_is_retained_and_refreshed(broker, tmp_path):
    calls = []

    def status():
        calls.append(1)
        return {"uptime_s": len(calls), "version": "x"}

    stop = threading.Event()
    pub = MqttPublisher(mqtt_config(broker.port, status_interval_s=1), "dev1", stop, str(tmp_path / "o.db"),
                        (100, 10 ** 6), status_fn=status)
    pub.start()
    try:
        assert wait_for(lambda: len(calls) >= 2, 5)
        late = Subscriber(broker.port, "lpr-edge/dev1/status")
        assert wait_for(lambda: late.messages, 5)
        topic, payload, retain = late.messages[0]
        assert retain and json.loads(payload.decode())["version"] == "x"
        late.close()
    finally:
        stop.set()
        pub.join(5)


def test_home_assistant_discovery_and_last_plate(broker, tmp_path):
    topics = Topics("lpr-edge", "dev1")
    announced = str(tmp_path / "ha_discovery.json")
    config = HomeAssistantConfig(enabled=True)
    discovery = HomeAssistantDiscovery(config, topics, "dev1", [("gate", ["lane1", "lane2"]), ("exit", ["lane1"])],
                                       known_plates=["Alice's car"], snapshot_topic=True, announced_path=announced)
    sub = Subscriber(broker.port, "homeassistant/#")
    state = Subscriber(broker.port, "lpr-edge/dev1/#")
    path = str(tmp_path / "o.db")
    box = Outbox(path)
    box.add("e1", topics.events, json.dumps({"camera": "gate", "plate": "ABC123", "score": 0.9, "known": "Alice's car",
                                              "timestamp": "t", "id": "e1", "roi": "lane2"}).encode())
    stop = threading.Event()
    pub = MqttPublisher(mqtt_config(broker.port), "dev1", stop, path, (100, 10 ** 6), discovery=discovery)
    pub.start()
    try:
        expected = len(discovery.messages())
        assert wait_for(lambda: len(sub.payloads()) >= expected, 5)
        configs = {t: json.loads(p.decode()) for t, p, _ in sub.messages if t.endswith("/config")}
        gate = configs["homeassistant/sensor/lpr_edge_dev1_gate_plate/config"]
        assert gate["state_topic"] == "lpr-edge/dev1/gate/last_plate"
        assert gate["availability_topic"] == "lpr-edge/dev1/availability"
        assert gate["device"]["identifiers"] == ["lpr_edge_dev1"]
        assert gate["default_entity_id"] == "sensor.lpr_edge_dev1_gate_plate" and "object_id" not in gate
        event = configs["homeassistant/event/lpr_edge_dev1_gate_plate_event/config"]
        assert event["event_types"] == ["plate", "known_plate"] and event["state_topic"] == "lpr-edge/dev1/gate/plate"
        assert "homeassistant/event/lpr_edge_dev1_gate_lane2_plate_event/config" in configs  # two ROIs: one each
        assert "homeassistant/event/lpr_edge_dev1_exit_lane1_plate_event/config" not in configs
        image = configs["homeassistant/image/lpr_edge_dev1_gate_plate_image/config"]
        assert image["image_topic"] == "lpr-edge/dev1/gate/snapshot" and image["content_type"] == "image/jpeg"
        known = configs["homeassistant/binary_sensor/lpr_edge_dev1_known_alice_s_car/config"]
        assert known["off_delay"] == 60 and known["payload_on"] == "ON"
        diag = [c for c in configs.values() if c.get("entity_category") == "diagnostic"]
        assert {c["unique_id"] for c in diag} >= {"lpr_edge_dev1_outbox_events", "lpr_edge_dev1_backend",
                                                 "lpr_edge_dev1_model_version", "lpr_edge_dev1_gate_fps"}
        late = Subscriber(broker.port, "homeassistant/sensor/+/config")  # retained: a late subscriber gets them
        assert wait_for(lambda: len(late.messages) == len([t for t in configs if "/sensor/" in t]), 5)
        assert all(r for _, _, r in late.messages)
        late.close()
        # the acknowledged event: retained state, the event entities' messages (not retained), presence ON
        assert wait_for(lambda: len([m for m in state.messages if m[0].endswith("/plate")]) >= 2, 5)
        got = {t: (p, r) for t, p, r in state.messages}
        assert json.loads(got["lpr-edge/dev1/gate/last_plate"][0].decode())["plate"] == "ABC123"
        fired = json.loads(got["lpr-edge/dev1/gate/plate"][0].decode())
        assert fired["event_type"] == "known_plate" and fired["plate"] == "ABC123" and not got["lpr-edge/dev1/gate/plate"][1]
        assert "lpr-edge/dev1/gate/lane2/plate" in got
        assert got["lpr-edge/dev1/known/alice_s_car"][0] == b"ON"
        # Home Assistant restarts and announces itself: discovery is sent again
        before = len(sub.payloads())
        sub.client.publish("homeassistant/status", "online", qos=1)
        assert wait_for(lambda: len(sub.payloads()) >= before + expected, 6)
    finally:
        stop.set()
        pub.join(5)
        sub.close()
        state.close()
    # the exit camera leaves the config: its entities are removed (empty retained payloads) at the next connect
    smaller = HomeAssistantDiscovery(config, topics, "dev1", [("gate", ["lane1", "lane2"])],
                                     known_plates=["Alice's car"], snapshot_topic=True, announced_path=announced)
    removed = Subscriber(broker.port, "homeassistant/+/+/config")
    stop = threading.Event()
    pub = MqttPublisher(mqtt_config(broker.port), "dev1", stop, path, (100, 10 ** 6), discovery=smaller)
    pub.start()
    try:
        assert wait_for(lambda: any(t.endswith("exit_plate/config") and p == b"" for t, p, _ in removed.messages), 5)
        emptied = {t for t, p, _ in removed.messages if p == b""}
        assert emptied and all("_exit_" in t for t in emptied), emptied
    finally:
        stop.set()
        pub.join(5)
        removed.close()


def test_tls_and_password_together(make_broker, tmp_path):
    import os
    import subprocess

    pki = make_pki(tmp_path)
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    subprocess.check_call(["mosquitto_passwd", "-b", str(pwfile), "lpr", "tls-secret"])
    conf = "allow_anonymous false\npassword_file %s\ncafile %s\ncertfile %s\nkeyfile %s\n" % (
        pwfile, pki["ca"], pki["server_cert"], pki["server_key"])
    broker = make_broker(extra_conf=conf).start()
    (tmp_path / "pw").write_text("tls-secret\n")
    path = str(tmp_path / "o.db")
    fill(path, range(2))
    cfg = mqtt_config(broker.port, tls=TlsConfig(ca_certs=pki["ca"]), username="lpr", password_file=str(tmp_path / "pw"))
    pub, stop = start_publisher(cfg, path)
    try:
        assert wait_for(lambda: Outbox(path).depth()[0] == 0, 10), pub.last_error
    finally:
        stop.set()
        pub.join(5)


def test_mqtt5_refused_publish_is_counted_not_published(make_broker, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic read lpr-edge/#\n")  # anonymous clients may not publish events
    broker = make_broker(extra_conf="allow_anonymous true\nacl_file %s\n" % acl).start()
    path = str(tmp_path / "o.db")
    fill(path, range(3))
    pub, stop = start_publisher(mqtt_config(broker.port, protocol="5"), path)
    try:
        assert wait_for(lambda: Outbox(path).depth()[0] == 0, 10), pub.last_error  # nothing blocks later events
        if PAHO2:
            assert wait_for(lambda: pub.rejected == 3, 5) and pub.published == 0
        else:  # paho 1.x does not hand the PUBACK reason code to on_publish: the refusal is invisible
            assert pub.rejected == 0 and pub.published == 3
    finally:
        stop.set()
        pub.join(5)
