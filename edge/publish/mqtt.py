"""The publisher thread: owns the paho-mqtt client and the outbox's publishing side.

It runs paho's network loop itself (client.loop) instead of loop_start, so connection errors (refused,
TLS, bad password) are caught with their reason for health and logs, and reconnects back off with
jitter (1 s doubling to reconnect_max_s, +/-25%) so a fleet does not reconnect in step. Events go out
in outbox order, QoS 1, never retained, at most `max_inflight` unacknowledged; an event leaves the
outbox only on its PUBACK. Works with paho-mqtt 1.6 and 2.x, MQTT 3.1.1 and 5.
"""
import json
import logging
import random
import ssl
import sys
import threading
import time

import paho.mqtt.client as paho

from edge.outbox import Outbox, OutboxWriteError
from edge.publish.topics import OFFLINE, ONLINE, Topics

log = logging.getLogger("edge.publish")

PAHO2 = hasattr(paho, "CallbackAPIVersion")
LOOP_TIMEOUT_S = 0.05


def _rc_value(rc):
    """An int from paho's reason code (int in 1.6 for MQTT 3, ReasonCode objects otherwise)."""
    if hasattr(rc, "value"):
        return rc.value
    try:
        return int(rc)
    except (TypeError, ValueError):
        return -1


def _rc_text(rc):
    value = _rc_value(rc)
    if hasattr(rc, "getName"):
        return "%s (%d)" % (rc.getName(), value)
    return "%s (%d)" % (paho.connack_string(value), value)


# Python 3.7+ names certificate failures apart; on 3.6 they are plain SSLErrors
_CERT_ERROR = getattr(ssl, "SSLCertVerificationError", ssl.SSLError)


def describe_connect_error(exc):
    if isinstance(exc, _CERT_ERROR) and "CERTIFICATE_VERIFY_FAILED" in str(exc).upper():
        return "TLS: broker certificate not trusted (%s)" % (getattr(exc, "verify_message", None) or exc)
    if isinstance(exc, ssl.SSLError):
        return "TLS: %s" % exc
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (no broker listening)"
    return "%s: %s" % (type(exc).__name__, exc)


def make_client(cfg, client_id):
    """A paho client for the broker `cfg` (an MqttConfig) names: protocol, credentials and TLS, with paho 1.6's
    and 2.x's constructors; callbacks are the caller's."""
    protocol = paho.MQTTv5 if cfg.protocol == "5" else paho.MQTTv311
    kwargs = {"client_id": client_id, "protocol": protocol}
    if protocol != paho.MQTTv5:
        kwargs["clean_session"] = True
    if PAHO2:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, **kwargs)
    else:
        client = paho.Client(**kwargs)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password())
    if cfg.tls is not None:
        client.tls_set(ca_certs=cfg.tls.ca_certs, certfile=cfg.tls.certfile, keyfile=cfg.tls.keyfile,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(cfg.tls.insecure)
    return client


class MqttPublisher(threading.Thread):
    def __init__(self, config, device_id, stop_event, outbox_path, outbox_limits, print_events=False, out=None,
                 status_fn=None, discovery=None, retention_s=0.0):
        threading.Thread.__init__(self, name="mqtt", daemon=True)
        self.config = config
        self.stop_event = stop_event
        self.topics = Topics(config.topic_prefix, device_id)
        self.outbox_path = outbox_path
        self.outbox_limits = outbox_limits
        self.print_events = print_events
        self.out = out or sys.stdout
        self.connected = False
        self.state = "starting"  # starting, connecting, connected, disconnected, refused, error
        self.last_error = None
        self.published = 0  # events acknowledged (not counting snapshots or state messages)
        self.rejected = 0  # events the broker refused in its PUBACK (MQTT 5), e.g. not authorised
        self.status_fn = status_fn  # -> dict for the retained status topic
        self.discovery = discovery  # HomeAssistantDiscovery or None
        # plug-ins sharing this client (edge/ota): subscriptions(), on_connect(), on_message(msg) -> handled,
        # outgoing() -> [(topic, payload, retain)] published from this thread
        self.extensions = []
        self._next_status = 0.0
        self._discovery_due = None
        self.wedge = False  # test hook (LPR_EDGE_TEST_WEDGE=mqtt): the loop stops making progress
        self.last_progress = time.monotonic()
        self.outbox_depth = None  # (events, bytes) once this thread has read the outbox
        self.outbox_snapshots = 0  # snapshot rows waiting (retained state, not events)
        self._depth_read = 0.0
        self.ack_error = None  # a full disk keeps acknowledged rows from being deleted: retried, said in health
        self.retention_s = retention_s  # events.retention_h: unpublished plate data older than this is deleted
        self.expired = 0
        self._retention_checked = 0.0
        self._inflight = {}  # mid -> (seq, payload, topic, monotonic time sent)
        self._state_inflight = {}
        self.ack_stalled_s = 0.0  # how long the oldest event has waited for its PUBACK, while over ack_timeout_s
        self._acked = []  # seqs acknowledged inside client.loop, deleted from the outbox after it
        self._fed_seq = 0
        self._refused = False
        self._drain_until = None
        self.client = self._make_client()
        self._used = False

    # --- client set-up -----------------------------------------------------------------------
    def _make_client(self):
        cfg = self.config
        client = make_client(cfg, cfg.client_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.max_inflight_messages_set(cfg.max_inflight)
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        return client

    # --- paho callbacks (run inside client.loop, in this thread) --------------------------------
    def _on_connect(self, client, userdata, flags, rc, *rest):
        if _rc_value(rc) != 0:
            self._refused = True
            self.state, self.last_error = "refused", "broker refused the connection: %s" % _rc_text(rc)
            log.error("mqtt: %s", self.last_error)
            return
        self.connected, self.state, self.last_error = True, "connected", None
        self.ack_stalled_s = 0.0
        log.info("mqtt: connected to %s:%d as %s", self.config.host, self.config.port, self.config.client_id)
        self._publish_state(self.topics.availability, ONLINE)
        self._next_status = 0.0  # status now
        if self.discovery is not None:
            client.subscribe(self.discovery.status_topic, qos=1)
            self._discovery_due = time.monotonic()
        for extension in self.extensions:
            for topic in extension.subscriptions():
                client.subscribe(topic, qos=1)
            extension.on_connect()

    def _on_message(self, client, userdata, msg):
        if any(extension.on_message(msg) for extension in self.extensions):
            return
        if self.discovery is not None and msg.topic == self.discovery.status_topic and msg.payload == b"online":
            # Home Assistant restarted: send discovery again after a random delay, as its docs ask
            self._discovery_due = time.monotonic() + random.uniform(0.0, 2.0)

    def _on_disconnect(self, client, userdata, *args):
        was = self.connected
        self.connected = False
        if was and self.state != "stopping":
            self.state = "disconnected"
            log.warning("mqtt: disconnected from %s:%d", self.config.host, self.config.port)

    def _on_publish(self, client, userdata, mid, *rest):
        entry = self._inflight.pop(mid, None)
        if entry is None:
            self._state_inflight.pop(mid, None)
            return  # availability, status and state messages
        seq, payload, topic = entry[:3]
        self._acked.append(seq)
        if rest and _rc_value(rest[0]) >= 0x80:  # MQTT 5 PUBACK with a failure reason
            # resending cannot help and would block every later event: count it, say it, health degrades
            log.error("mqtt: broker refused outbox row %d on %s: %s; removed from the outbox", seq, topic,
                      _rc_text(rest[0]))
            if topic == self.topics.events:
                self.rejected += 1
            return
        if topic != self.topics.events:
            return
        self.published += 1
        if self.print_events:
            self.out.write(payload.decode("utf-8") + "\n")
            self.out.flush()
        if self.discovery is not None:
            for topic, state, retain in self.discovery.on_event(payload):
                client.publish(topic, state, qos=1, retain=retain)

    # --- thread ----------------------------------------------------------------------------
    def run(self):
        self.outbox = None
        delay = self.config.reconnect_min_s
        try:
            self._open_outbox()
            while not self._should_exit():
                self.last_progress = time.monotonic()
                if not self._connect():
                    self._wait(delay)
                    delay = min(delay * 2, self.config.reconnect_max_s)
                    continue
                if self._serve():
                    delay = self.config.reconnect_min_s
                if not self._should_exit():
                    self._wait(delay)
                    delay = min(delay * 2, self.config.reconnect_max_s)
        except Exception as exc:
            log.exception("mqtt: publisher failed")
            self.state, self.last_error = "error", str(exc)
        finally:
            self._shutdown()

    def _open_outbox(self):
        """Open the outbox, waiting out a disk too full to open it (health shows the error meanwhile)."""
        while self.outbox is None:
            try:
                self.outbox = Outbox(self.outbox_path, *self.outbox_limits)
            except OutboxWriteError as exc:
                if self.last_error != str(exc):
                    log.error("mqtt: %s; retrying", exc)
                self.state, self.last_error = "error", str(exc)
                if self.stop_event.wait(1.0):
                    return
                self.last_progress = time.monotonic()
        self._refresh_depth(force=True)

    def _refresh_depth(self, force=False):
        """The true depth at all times, connected or not (a count, at most every 0.5 s)."""
        now = time.monotonic()
        if self.outbox is None or (not force and now - self._depth_read < 0.5):
            return
        self._depth_read = now
        if self.retention_s and now - self._retention_checked > 60.0:
            self._retention_checked = now
            self._expire_old()
        events, snapshots, size = self.outbox.depth_detail()
        self.outbox_depth, self.outbox_snapshots = (events, size), snapshots

    def _expire_old(self):
        try:
            gone = self.outbox.expire(self.retention_s)
        except OutboxWriteError as exc:
            log.error("outbox: cannot delete rows past events.retention_h: %s", exc)
            return
        if gone:
            self.expired += gone
            log.warning("outbox: deleted %d unpublished rows older than events.retention_h (%.1f h)", gone,
                        self.retention_s / 3600.0)

    def _apply_acks(self):
        if not self._acked:
            return
        try:
            self.outbox.ack(self._acked)
        except OutboxWriteError as exc:  # kept and deleted later; at worst resent after a restart
            if self.ack_error is None:
                log.error("mqtt: cannot delete %d acknowledged rows from the outbox: %s; retrying",
                          len(self._acked), exc)
            self.ack_error = str(exc)
            return
        if self.ack_error is not None:
            log.warning("mqtt: outbox writable again; acknowledged rows deleted")
        self.ack_error = None
        self._acked = []

    def _should_exit(self):
        if not self.stop_event.is_set():
            return False
        if self._drain_until is None:
            return True
        # stopping: keep publishing what is left until the outbox is empty or the drain time is up
        empty = self.outbox_depth is not None and self.outbox_depth[0] == 0 and not self.outbox_snapshots
        return time.monotonic() > self._drain_until or (empty and not self._inflight)

    def drain_then_stop(self, seconds):
        """Ask the thread to publish what is in the outbox for up to `seconds` after stop is set."""
        self._drain_until = time.monotonic() + seconds

    def _wait(self, delay):
        jittered = delay * random.uniform(0.75, 1.25)
        end = time.monotonic() + jittered
        while time.monotonic() < end and not self._should_exit():
            self.last_progress = time.monotonic()
            self._refresh_depth()
            time.sleep(min(0.1, jittered))

    def _new_link(self):
        """A fresh paho client for every connection attempt. What was in flight on the last link is sent again
        from the outbox (rows leave it only on a PUBACK), so no paho version's own resend rules matter and a
        link dropped for a stalled broker loses nothing."""
        if self._used:
            old, self.client = self.client, self._make_client()
            sock = old.socket()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self._used = True
        self._inflight = {}
        self._state_inflight = {}  # mid -> monotonic time sent, for status and availability messages
        self._fed_seq = 0

    def _connect(self):
        self._new_link()
        self.state = "connecting"
        self._refused = False
        try:
            self.client.connect(self.config.host, self.config.port, self.config.keepalive_s)
            return True
        except (OSError, ssl.SSLError, ValueError) as exc:
            error = describe_connect_error(exc)
            if error != self.last_error:
                log.error("mqtt: cannot connect to %s:%d: %s", self.config.host, self.config.port, error)
            self.state, self.last_error = "error", error
            return False

    def _serve(self):
        """Run the network loop until the link drops; True if it was ever up (resets the backoff)."""
        was_up = False
        started = time.monotonic()
        while not self._should_exit():
            self.last_progress = time.monotonic()
            while self.wedge and not self._should_exit():
                time.sleep(0.05)
            rc = self.client.loop(LOOP_TIMEOUT_S)
            self._apply_acks()
            if self._refused:
                self.client.disconnect()
                return False
            if rc != paho.MQTT_ERR_SUCCESS:
                self.connected = False
                if self.state == "connected":
                    self.state = "disconnected"
                if not was_up:  # closed before CONNACK: e.g. TLS 1.3 refusing our client certificate
                    self._set_error("broker closed the connection before accepting it (%s; a TLS client "
                                    "certificate or the protocol version refused?)" % paho.error_string(rc))
                return was_up
            if self.connected:
                was_up = True
                self._feed()
                self._periodic()
                if self._ack_stalled():
                    return True
            elif not was_up and time.monotonic() - started > self.config.connect_timeout_s:
                # TCP is up but no CONNACK: a frozen or overloaded broker, not TLS or the protocol version
                self._set_error("broker %s:%d accepted the TCP connection but did not answer CONNECT within "
                                "%.0f s" % (self.config.host, self.config.port, self.config.connect_timeout_s))
                self._drop_link()
                return False
            self._refresh_depth()
        return was_up

    def _set_error(self, error):
        if error != self.last_error:
            log.error("mqtt: %s", error)
        self.state, self.last_error = "error", error

    def _ack_stalled(self):
        """True (and the link dropped) when the oldest event in flight waited ack_timeout_s for its PUBACK:
        the broker took our packets and stopped answering, which the keepalive notices only much later."""
        waited = self.oldest_unacked_s()
        if waited <= self.config.ack_timeout_s:
            self.ack_stalled_s = 0.0
            return False
        self.ack_stalled_s = waited
        self.connected = False
        self.state = "stalled"
        self.last_error = "no PUBACK for %d message(s) in %.0f s: the broker stopped answering; reconnecting" % (
            len(self._inflight) + len(self._state_inflight), waited)
        log.warning("mqtt: %s:%d: %s", self.config.host, self.config.port, self.last_error)
        self._drop_link()
        return True

    def _publish_state(self, topic, payload):
        """A retained state message; its PUBACK is waited for like an event's, so a broker that freezes while
        no plate passes is found too (within status_interval_s + ack_timeout_s)."""
        info = self.client.publish(topic, payload, qos=1, retain=True)
        self._state_inflight[info.mid] = time.monotonic()

    def oldest_unacked_s(self):
        sent = [e[3] for e in list(self._inflight.values())] + list(self._state_inflight.values())
        return time.monotonic() - min(sent) if sent else 0.0

    def _drop_link(self):
        """Leave a broker that does not answer: the next _connect closes this client's socket and starts a new
        one (a polite DISCONNECT would wait on the same stalled broker)."""
        self.connected = False

    def _periodic(self):
        now = time.monotonic()
        if self.status_fn is not None and now >= self._next_status:
            self._next_status = now + self.config.status_interval_s
            self._publish_state(self.topics.status, json.dumps(self.status_fn(), sort_keys=True))
        if self._discovery_due is not None and now >= self._discovery_due:
            self._discovery_due = None
            messages = self.discovery.messages()
            for topic, payload in self.discovery.removals([t for t, _ in messages]) + messages:
                self.client.publish(topic, payload, qos=1, retain=True)
            log.info("mqtt: Home Assistant discovery sent for %d camera(s)", len(self.discovery.cameras))
        for extension in self.extensions:
            for topic, payload, retain in extension.outgoing():
                self.client.publish(topic, payload, qos=1, retain=retain)

    def _feed(self):
        room = self.config.max_inflight - len(self._inflight)
        if room <= 0:
            return
        acked = set(self._acked)  # delivered, waiting for a disk with room to be deleted: never resent
        for row in self.outbox.pending(self._fed_seq, room):
            if row.seq in acked:
                self._fed_seq = row.seq
                continue
            # events are never retained; only rows committed as state (snapshots) are
            info = self.client.publish(row.topic, row.payload, qos=1, retain=row.retain and row.topic != self.topics.events)
            self._inflight[info.mid] = (row.seq, row.payload, row.topic, time.monotonic())
            self._fed_seq = row.seq

    def _shutdown(self):
        try:
            if self.connected:
                self.state = "stopping"
                infos = []
                if self.status_fn is not None:  # the last word a late subscriber sees: stopped, with totals
                    infos.append(self.client.publish(self.topics.status, json.dumps(self.status_fn(), sort_keys=True),
                                                     qos=1, retain=True))
                infos.append(self.client.publish(self.topics.availability, OFFLINE, qos=1, retain=True))
                deadline = time.monotonic() + 1.0
                while not all(i.is_published() for i in infos) and time.monotonic() < deadline:
                    self.client.loop(LOOP_TIMEOUT_S)
                self._apply_acks()
                self.client.disconnect()
                self.client.loop(LOOP_TIMEOUT_S)
        except Exception:
            log.exception("mqtt: error during shutdown")
        finally:
            self.connected = False
            self.state = "stopped"
            if self.outbox is not None:
                self._refresh_depth(force=True)
                self.outbox.close()

    def status(self):
        depth = self.outbox_depth or (0, 0)
        return {"state": self.state, "connected": self.connected, "error": self.last_error,
                "published": self.published, "outbox_events": depth[0], "outbox_bytes": depth[1]}

