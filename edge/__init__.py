"""lpr-edge: license-plate recognition appliance (capture -> crop -> LPRNet -> track -> outbox -> MQTT)."""

__version__ = "0.1.0"
