"""Talk to the running daemon of this machine over its MQTT command topic (what `lpr-edge model install|
list|rollback` do while a daemon holds the state dir): publish one command with a fresh transaction, print
the state changes, return the final reply. Uses the config's broker settings (credentials and TLS too)."""
import json
import os
import ssl
import sys
import threading
import time
import uuid

from edge.ota import OtaError
from edge.ota.mqtt import OtaTopics


def _client(mqtt):
    from edge.publish.mqtt import make_client

    return make_client(mqtt, "lpr-edge-cli-%s" % uuid.uuid4().hex[:8])


def send(config, command, timeout_s=900.0, out=None, until_settled=True):
    """Send `command` to the daemon; returns its final reply. With until_settled an install that went into
    probation is followed until it is committed or rolled back."""
    out = out or sys.stderr
    topics = OtaTopics(config.mqtt.topic_prefix, config.device_id)
    transaction = "cli-%s" % uuid.uuid4().hex[:12]
    command = dict(command, transaction=transaction)
    replies, states = [], []
    subscribed = threading.Event()
    client = _client(config.mqtt)

    def on_connect(c, *args):
        c.subscribe([(topics.response, 1), (topics.state, 1), (topics.slot_states, 1)])

    def on_message(c, userdata, msg):
        try:
            payload = json.loads(msg.payload.decode("utf-8"))
        except ValueError:
            return
        if msg.topic == topics.response and payload.get("transaction") == transaction:
            replies.append(payload)
        elif msg.topic.endswith("/state") and payload.get("transaction") == transaction:
            states.append(payload)

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    try:
        client.connect(config.mqtt.host, config.mqtt.port, 30)
    except (OSError, ssl.SSLError) as exc:
        raise OtaError("unreachable", "cannot reach the broker %s:%d to talk to the daemon: %s"
                       % (config.mqtt.host, config.mqtt.port, exc))
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise OtaError("unreachable", "the broker did not confirm the subscription")
        client.publish(topics.command, json.dumps(command), qos=1)
        deadline = time.monotonic() + timeout_s
        shown = None
        while time.monotonic() < deadline:
            if states and states[-1]["state"] != shown:
                shown = states[-1]["state"]
                detail = states[-1].get({"downloading": "percent", "building": "elapsed_s"}.get(shown, "message"))
                out.write("%s%s\n" % (shown, " %s" % detail if detail not in (None, "") else ""))
                out.flush()
            final = [r for r in replies if r["status"] != "accepted"]
            if final:
                last = final[-1]
                if not (until_settled and last.get("state") == "probation"):
                    return last
            if not replies and time.monotonic() > deadline - timeout_s + 15:
                raise OtaError("no_daemon", "the daemon did not answer on %s within 15 s (is ota.enabled on?)"
                               % topics.command)
            time.sleep(0.1)
        raise OtaError("timeout", "no final answer from the daemon within %.0f s" % timeout_s)
    finally:
        client.loop_stop()
        client.disconnect()


def install_command(source, sha256=None, size=None, allow_downgrade=False, slot=None):
    """The install command for a URL or a local file (sent as file:///..., checked by size and sha256)."""
    if source.lower().startswith(("http://", "https://")):
        command = {"action": "install", "url": source}
    else:
        path = os.path.abspath(source[len("file://"):] if source.startswith("file://") else source)
        if not os.path.isfile(path):
            raise OtaError("no_package", "%s: no such file" % path)
        from edge.recognize.model import sha256_file

        command = {"action": "install", "url": "file://" + path}
        sha256 = sha256 or sha256_file(path)
        size = size or os.path.getsize(path)
    if sha256:
        command["sha256"] = sha256
    if size:
        command["size"] = size
    if allow_downgrade:
        command["allow_downgrade"] = True
    if slot:
        command["slot"] = slot
    return command
