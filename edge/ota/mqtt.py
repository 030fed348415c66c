"""MQTT side of model updates, plugged into the publisher thread (which owns the one paho client):

| topic                                   | payload                                                     | QoS | retained |
|-----------------------------------------|-------------------------------------------------------------|-----|----------|
| <prefix>/<device>/cmd/model             | command JSON {transaction, action: install|rollback|status|offer, url, sha256, size, allow_downgrade} | 1 | never (a retained command is ignored) |
| <prefix>/all/cmd/model                  | the same, for every device (optional `devices`: [ids] it is meant for) | 1 | never |
| <prefix>/<device>/cmd/model/response    | reply JSON {transaction, status: accepted|ok|error, action, error, message, ...} | 1 | no |
| <prefix>/<device>/model/state           | state JSON (configs/schema/model-state.schema.json) of the default model slot, also Home Assistant's update entity | 1 | yes |
| <prefix>/<device>/model/<slot>/state    | the same for another model slot (config models:) | 1 | yes |
| <discovery>/update/lpr_edge_<device>_model[_<slot>]/config | Home Assistant discovery of each slot's update entity (home_assistant.enabled) | 1 | yes |
"""
import collections
import json
import logging
import threading

from edge.ota import OtaError
from edge.ota.daemon import parse_command
from edge.ota.store import DEFAULT_SLOT

log = logging.getLogger("edge.ota")

HA_INSTALL = json.dumps({"action": "install", "transaction": "home-assistant"}, sort_keys=True)


class OtaTopics:
    def __init__(self, prefix, device_id):
        prefix = prefix.rstrip("/")
        base = "%s/%s" % (prefix, device_id)
        self.command = base + "/cmd/model"
        self.fleet_command = prefix + "/all/cmd/model"
        self.response = self.command + "/response"
        self.state = base + "/model/state"
        self.slot_states = base + "/model/+/state"  # the other slots' (what the CLI subscribes to)
        self.base = base
        self.availability = base + "/availability"

    def state_of(self, slot):
        """The default slot keeps the topic it had before slots; the others get one each."""
        return self.state if slot == DEFAULT_SLOT else "%s/model/%s/state" % (self.base, slot)


def install_payload(slot):
    """What Home Assistant's install button publishes: the default slot's as before slots, else with its slot."""
    if slot == DEFAULT_SLOT:
        return HA_INSTALL
    return json.dumps({"action": "install", "transaction": "home-assistant", "slot": slot}, sort_keys=True)


class OtaMqtt:
    """A publisher extension: subscriptions(), on_connect(), on_message(msg) -> handled, outgoing()."""

    def __init__(self, config, manager):
        self.device_id = config.device_id
        self.topics = OtaTopics(config.mqtt.topic_prefix, config.device_id)
        self.ha = config.home_assistant
        self.manager = manager
        self._lock = threading.Lock()
        self._states = collections.OrderedDict()  # slot -> latest state payload, sent once (and after reconnects)
        self._dirty = set()
        self._replies = collections.deque(maxlen=200)
        manager.on_state.append(self._on_state)
        manager.on_reply.append(self._on_reply)

    def _on_state(self, payload):
        with self._lock:
            slot = payload.get("slot", DEFAULT_SLOT)
            self._states[slot] = json.dumps(payload, sort_keys=True)
            self._dirty.add(slot)

    def _on_reply(self, payload):
        with self._lock:
            self._replies.append(json.dumps(payload, sort_keys=True))

    # --- publisher extension interface ------------------------------------------------------------
    def subscriptions(self):
        return [self.topics.command, self.topics.fleet_command]

    def on_connect(self):
        with self._lock:
            self._dirty = set(self._states)

    def on_message(self, msg):
        if msg.topic not in (self.topics.command, self.topics.fleet_command):
            return False
        if msg.retain:
            log.warning("model command on %s is retained: ignored (a retained command would run again on every "
                        "reconnect; publish commands without -r)", msg.topic)
            return True
        try:
            command = parse_command(msg.payload)
        except OtaError as exc:
            self.manager.refuse(None, exc.code, str(exc))
            return True
        devices = command.get("devices")
        if msg.topic == self.topics.fleet_command and devices is not None and self.device_id not in devices:
            log.debug("fleet model command for %s: not for this device", devices)
            return True
        log.info("model command %s (transaction %s) on %s", command.get("action"), command.get("transaction"),
                 msg.topic)
        self.manager.submit(command)
        return True

    def outgoing(self):
        """(topic, payload, retain) to publish now, in order."""
        out = []
        with self._lock:
            while self._replies:
                out.append((self.topics.response, self._replies.popleft(), False))
            for slot, payload in self._states.items():
                if slot in self._dirty:
                    out.append((self.topics.state_of(slot), payload, True))
            self._dirty = set()
        return out

    # --- Home Assistant ---------------------------------------------------------------------------
    def discovery_messages(self, discovery):
        """Each slot's update entity, made like every other entity of the device (edge/publish/homeassistant);
        the default slot's keeps the object id and name it had before slots."""
        keys = ("installed_version", "latest_version", "in_progress", "update_percentage", "release_summary",
                "title")
        out = []
        for slot in self.manager.states:
            default = slot == DEFAULT_SLOT
            out.append(discovery.entity(
                "update", "model" if default else "model_%s" % slot,
                "Plate model" if default else "Plate model %s" % slot, state_topic=self.topics.state_of(slot),
                # only the keys the update entity knows: the state topic carries more for other consumers
                value_template="{{ {%s} | to_json }}" % ", ".join("'%s': value_json.%s" % (k, k) for k in keys),
                command_topic=self.topics.command, payload_install=install_payload(slot), entity_category="config"))
        return out
