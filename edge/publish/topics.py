"""MQTT topics of one appliance (<prefix> = mqtt.topic_prefix, <device> = device_id).

| topic                                | payload                                              | QoS | retained |
|--------------------------------------|------------------------------------------------------|-----|----------|
| <prefix>/<device>/events             | plate event JSON (configs/schema/event.schema.json)  | 1   | no: a subscriber must never take an old plate for a new car |
| <prefix>/<device>/availability       | `online` on every connect; `offline` as the last will and on a clean stop | 1 | yes |
| <prefix>/<device>/status             | JSON: version, model, cameras and their state, uptime, outbox depth; on connect and every mqtt.status_interval_s | 1 | yes |
| <prefix>/<device>/<camera>/snapshot  | JPEG bytes of the last event's plate crop (events.snapshot: topic) | 1 | yes |
| <prefix>/<device>/<camera>/last_plate| JSON {plate, score, known, timestamp, id} of the last event (home_assistant.enabled) | 1 | yes: it is a state, not an event |
| <discovery>/sensor/<device>_<camera>_plate/config | Home Assistant discovery for the last-plate sensor (home_assistant.enabled) | 1 | yes |
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

    def last_plate(self, camera_id):
        return "%s/%s/last_plate" % (self.base, camera_id)
