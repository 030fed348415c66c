"""Home Assistant MQTT discovery: one device (the appliance) with a 'last plate' sensor per camera,
tied to the availability topic, so the appliance appears in Home Assistant with no YAML. The sensor
reads a retained per-camera state topic; events themselves stay unretained."""
import json

from edge import __version__
from edge.publish.topics import OFFLINE, ONLINE


class HomeAssistantDiscovery:
    def __init__(self, config, topics, device_id, cameras):
        self.config = config
        self.topics = topics
        self.device_id = device_id
        self.cameras = list(cameras)
        self.status_topic = config.status_topic
        self.extra = []  # callables -> [(topic, payload)] of other entities (edge/ota: the model's update entity)

    def _device(self):
        return {"identifiers": ["lpr_edge_%s" % self.device_id], "name": "lpr-edge %s" % self.device_id,
                "manufacturer": "lpr-edge", "model": "License plate recognition appliance",
                "sw_version": __version__}

    def messages(self):
        """(topic, payload) discovery messages, one per camera, to publish retained."""
        out = []
        for camera in self.cameras:
            object_id = "lpr_edge_%s_%s_plate" % (self.device_id, camera)
            payload = {
                "name": "%s last plate" % camera,
                "unique_id": object_id,
                "object_id": object_id,
                "state_topic": self.topics.last_plate(camera),
                "value_template": "{{ value_json.plate }}",
                "json_attributes_topic": self.topics.last_plate(camera),
                "availability_topic": self.topics.availability,
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "icon": "mdi:car-search",
                "device": self._device(),
                "origin": {"name": "lpr-edge", "sw_version": __version__},
            }
            topic = "%s/sensor/%s_%s_plate/config" % (self.config.discovery_prefix, self.device_id, camera)
            out.append((topic, json.dumps(payload, sort_keys=True)))
        for messages in self.extra:
            out.extend(messages())
        return out

    def last_plate_state(self, event_payload):
        """(topic, payload) of the retained last-plate state for the camera of an event payload."""
        event = json.loads(event_payload.decode("utf-8"))
        state = {k: event.get(k) for k in ("plate", "score", "known", "timestamp", "id", "roi")}
        return self.topics.last_plate(event["camera"]), json.dumps(state, sort_keys=True)
