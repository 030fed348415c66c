"""Home Assistant MQTT discovery: one device (the appliance) with, per camera, a 'last plate' sensor, an
`event` entity that fires on each plate event (and one per ROI where a camera has several), `image`
entities with the last plate crop (events.snapshot: topic) and the frame (events.frame_snapshot) and a frames-per-second diagnostic; per known plate
a `binary_sensor` that is on while that car is there; device diagnostics from the status topic (outbox,
backend, model version). Every entity is tied to the availability topic. Entities whose camera, ROI or
known plate left the config are removed (an empty retained discovery payload), from the list of what was
announced last time, kept in the state dir.

Events themselves stay unretained; the per-camera last-plate state is retained; the messages the event and
binary_sensor entities read are sent, unretained, once the broker acknowledged the event (Home Assistant
drops replayed retained event messages anyway)."""
import io
import json
import logging
import os
import re

from edge import __version__
from edge.publish.topics import OFFLINE, ONLINE

log = logging.getLogger("edge.publish")


def slug(text):
    """An id Home Assistant accepts in topics and entity ids: [a-z0-9_]."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


class HomeAssistantDiscovery:
    def __init__(self, config, topics, device_id, cameras, known_plates=None, snapshot_topic=False,
                 announced_path=None, frame_topic=False):
        """`cameras`: camera ids, or (id, [roi ids]) pairs; `known_plates`: names from tracking.known_plates."""
        self.config = config
        self.topics = topics
        self.device_id = device_id
        self.cameras = [c if isinstance(c, tuple) else (c, []) for c in cameras]
        self.known = list(known_plates or [])
        self.snapshot_topic = snapshot_topic
        self.frame_topic = frame_topic  # events.frame_snapshot: a 'last frame' image entity per camera
        self.announced_path = announced_path  # JSON list of the discovery topics sent last time
        self.status_topic = config.status_topic
        self.presence_s = getattr(config, "presence_s", 60)
        self.extra = []  # callables -> [(topic, payload)] of other entities (edge/ota: the model's update entity)
        self.node = slug("lpr_edge_%s" % device_id)

    # --- discovery ---------------------------------------------------------------------------
    def _device(self):
        return {"identifiers": ["lpr_edge_%s" % self.device_id], "name": "lpr-edge %s" % self.device_id,
                "manufacturer": "lpr-edge", "model": "License plate recognition appliance",
                "sw_version": __version__}

    def entity(self, component, key, name, **fields):
        """(config topic, payload): the keys every entity shares, and `default_entity_id` (HA 2025.10+;
        `object_id` is gone since 2026.4)."""
        unique_id = "%s_%s" % (self.node, slug(key))
        payload = {"name": name, "unique_id": unique_id, "default_entity_id": "%s.%s" % (component, unique_id),
                   "availability_topic": self.topics.availability, "payload_available": ONLINE,
                   "payload_not_available": OFFLINE, "device": self._device(),
                   "origin": {"name": "lpr-edge", "sw_version": __version__}}
        payload.update(fields)
        topic = "%s/%s/%s/config" % (self.config.discovery_prefix, component, unique_id)
        return topic, json.dumps(payload, sort_keys=True)

    def messages(self):
        """(topic, payload) discovery messages to publish retained."""
        out = []
        for camera, rois in self.cameras:
            out.append(self.entity("sensor", "%s_plate" % camera, "%s last plate" % camera,
                                    state_topic=self.topics.last_plate(camera),
                                    value_template="{{ value_json.plate }}",
                                    json_attributes_topic=self.topics.last_plate(camera), icon="mdi:car-search"))
            out.append(self._event_entity(camera, None))
            if len(rois) > 1:
                out.extend(self._event_entity(camera, roi) for roi in rois)
            if self.snapshot_topic:
                out.append(self.entity("image", "%s_plate_image" % camera, "%s last plate image" % camera,
                                        image_topic=self.topics.snapshot(camera), content_type="image/jpeg"))
            if self.frame_topic:
                out.append(self.entity("image", "%s_frame_image" % camera, "%s last frame" % camera,
                                       image_topic=self.topics.frame(camera), content_type="image/jpeg"))
            out.append(self._diagnostic("%s_fps" % camera, "%s frames per second" % camera,
                                        "{%% for c in value_json.cameras %%}{%% if c.id == '%s' %%}{{ c.fps }}"
                                        "{%% endif %%}{%% endfor %%}" % camera, unit_of_measurement="fps",
                                        state_class="measurement"))
        for name in self.known:
            out.append(self.entity("binary_sensor", "known_%s" % name, "%s present" % name,
                                    state_topic=self.topics.known_plate(slug(name)), payload_on="ON",
                                    off_delay=self.presence_s, device_class="presence", icon="mdi:car"))
        out.append(self._diagnostic("outbox_events", "outbox events waiting", "{{ value_json.outbox_events }}",
                                    state_class="measurement"))
        out.append(self._diagnostic("backend", "inference backend", "{{ value_json.backend }}"))
        out.append(self._diagnostic("model_version", "recognizer model version", "{{ value_json.model.version }}"))
        for messages in self.extra:
            out.extend(messages())
        return out

    def _event_entity(self, camera, roi):
        key = "%s_plate_event" % camera if roi is None else "%s_%s_plate_event" % (camera, roi)
        name = "%s plate" % camera if roi is None else "%s %s plate" % (camera, roi)
        return self.entity("event", key, name, state_topic=self.topics.plate_event(camera, roi),
                            event_types=["plate", "known_plate"], icon="mdi:car-search")

    def _diagnostic(self, key, name, template, **fields):
        return self.entity("sensor", key, name, state_topic=self.topics.status, value_template=template,
                            entity_category="diagnostic", **fields)

    def removals(self, topics):
        """Empty retained payloads for what was announced last time and is not now; records `topics` as
        announced. An unreadable record is no reason to stop: nothing is removed then."""
        before = []
        if self.announced_path and os.path.exists(self.announced_path):
            try:
                with io.open(self.announced_path, encoding="utf-8") as f:
                    before = json.load(f)
            except (OSError, ValueError) as exc:
                log.warning("home assistant: %s is unreadable (%s); no stale entity removed", self.announced_path, exc)
        now = set(topics)
        stale = [(t, "") for t in before if t not in now]
        if self.announced_path:
            tmp = self.announced_path + ".part"
            try:
                with io.open(tmp, "w", encoding="utf-8") as f:
                    json.dump(sorted(now), f)
                os.replace(tmp, self.announced_path)
            except OSError as exc:
                log.warning("home assistant: cannot record the announced entities in %s: %s", self.announced_path, exc)
        return stale

    # --- per event -----------------------------------------------------------------------------
    def on_event(self, event_payload):
        """(topic, payload, retain) to send once an event is acknowledged: the retained last-plate state, the
        unretained messages the event entities fire on, and ON for a known plate's presence sensor."""
        event = json.loads(event_payload.decode("utf-8"))
        known = event.get("known", event.get("name"))
        camera = event["camera"]
        state = {"plate": event.get("plate"), "score": event.get("score"), "known": known,
                 "timestamp": event.get("timestamp"), "id": event.get("id"), "roi": event.get("roi")}
        out = [(self.topics.last_plate(camera), json.dumps(state, sort_keys=True), True)]
        fired = dict(state, event_type="known_plate" if known else "plate")
        out.append((self.topics.plate_event(camera, None), json.dumps(fired, sort_keys=True), False))
        rois = dict(self.cameras).get(camera, [])
        if len(rois) > 1 and event.get("roi") in rois:
            out.append((self.topics.plate_event(camera, event["roi"]), json.dumps(fired, sort_keys=True), False))
        if known and known in self.known:
            out.append((self.topics.known_plate(slug(known)), "ON", False))
        return out

    def last_plate_state(self, event_payload):
        """(topic, payload) of the retained last-plate state for the camera of an event payload."""
        topic, payload, _ = self.on_event(event_payload)[0]
        return topic, payload
