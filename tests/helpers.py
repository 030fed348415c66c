"""Test helpers shared by several test files (real sockets and a real MQTT client)."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import paho.mqtt.client as paho

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)


_RANDOM = __import__("random").Random(os.getpid())
_HANDED_OUT = set()  # never the same port twice in one run: two servers may be given ports before either binds


def free_port():
    """A loopback port free now, below the kernel's ephemeral range (32768-60999 on Linux): a port the kernel
    hands out itself (bind to 0) is the kind it next gives a client socket, so between this call and the
    server's bind some outgoing connection could take it (it did: "health.port ... in use")."""
    for _ in range(200):
        port = _RANDOM.randrange(20000, 32000)
        if port in _HANDED_OUT:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _HANDED_OUT.add(port)
        return port
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Subscriber:
    """A real paho client subscribed to `topic` (QoS 1) that records (topic, payload, retain)."""

    def __init__(self, port, topic, host="127.0.0.1", persistent=False):
        self.messages = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.topic = topic
        # persistent: a session the broker keeps (and queues QoS 1 messages for) while we are away
        kwargs = {"client_id": "test-sub-%d-%d" % (port, int(time.time() * 1e6)), "clean_session": not persistent}
        if hasattr(paho, "CallbackAPIVersion"):
            self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, **kwargs)
        else:
            self.client = paho.Client(**kwargs)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(host, port, 30)
        self.client.loop_start()
        assert self.ready.wait(10), "subscription not acknowledged"

    def _on_connect(self, client, *args):
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def payloads(self, topic=None):
        with self.lock:
            return [p for t, p, _ in self.messages if topic is None or t == topic]

    def events(self, topic=None):
        return [json.loads(p.decode("utf-8")) for p in self.payloads(topic)]

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def write_config(path, text):
    with open(str(path), "w") as f:
        f.write(text)
    return str(path)


def run_cli(*args, **kwargs):
    env = dict(os.environ, **kwargs.pop("env", {}))
    return subprocess.run([os.path.join(VENV_BIN, "lpr-edge")] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=env, timeout=kwargs.pop("timeout", 120),
                          **kwargs)
