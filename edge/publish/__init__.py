"""Publish stage: the outbox's events go to the MQTT broker; see topics.py for the topic layout."""
