"""MQTT topics of one appliance (<prefix> = mqtt.topic_prefix, <device> = device_id).

| topic                                | payload                                              | QoS | retained |
|--------------------------------------|------------------------------------------------------|-----|----------|
| <prefix>/<device>/events             | plate event JSON (configs/schema/event.schema.json)  | 1   | no: a subscriber must never take an old plate for a new car |
| <prefix>/<device>/availability       | `online` on every connect; `offline` as the last will and on a clean stop | 1 | yes |
| <prefix>/<device>/status             | JSON: version, model, cameras and their state, uptime, outbox depth; on connect and every mqtt.status_interval_s | 1 | yes |
| <prefix>/<device>/<camera>/snapshot  | JPEG bytes of the last event's plate crop (events.snapshot: topic) | 1 | yes |
| <prefix>/<device>/<camera>/frame     | JPEG bytes of the camera's frame at the last event, at most 640 px wide (events.frame_snapshot) | 1 | yes |
| <prefix>/<device>/<camera>/last_plate| JSON {plate, score, known, timestamp, id} of the last event (home_assistant.enabled) | 1 | yes: it is a state, not an event |
| <prefix>/<device>/<camera>/plate, <prefix>/<device>/<camera>/<roi>/plate | JSON {event_type: plate or known_plate, plate, score, known, roi, id, timestamp} once the event is acknowledged: Home Assistant event entities (home_assistant.enabled; per ROI where a camera has several) | 1 | no |
| <prefix>/<device>/known/<name>       | `ON` when a known plate is read: a presence binary_sensor that turns off after home_assistant.presence_s | 1 | no |
| <discovery>/<component>/lpr_edge_<device>_<key>/config | Home Assistant discovery: last-plate sensor, event, image, presence and diagnostic entities (home_assistant.enabled); an empty payload removes one that left the config | 1 | yes |
| <prefix>/<device>/cmd/model, <prefix>/all/cmd/model, .../cmd/model/response, <prefix>/<device>/model/state | model updates: see edge/ota/mqtt.py | 1 | state only |
"""

ONLINE, OFFLINE = "online", "offline"


class Topics:
    def __init__(self, prefix, device_id):
        self.base = "%s/%s" % (prefix.rstrip("/"), device_id)
        self.events = self.base + "/events"
        self.availability = self.base + "/availability"
        self.status = self.base + "/status"

    def snapshot(self, camera_id):
        return "%s/%s/snapshot" % (self.base, camera_id)

    def frame(self, camera_id):
        return "%s/%s/frame" % (self.base, camera_id)

    def last_plate(self, camera_id):
        return "%s/%s/last_plate" % (self.base, camera_id)

    def plate_event(self, camera_id, roi_id=None):
        """What a Home Assistant event entity fires on (not retained)."""
        if roi_id is None:
            return "%s/%s/plate" % (self.base, camera_id)
        return "%s/%s/%s/plate" % (self.base, camera_id, roi_id)

    def known_plate(self, name_slug):
        """ON while a known plate is present (a binary_sensor with off_delay)."""
        return "%s/known/%s" % (self.base, name_slug)
