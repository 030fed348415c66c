"""Outbox stage: events are committed to disk before they are published, and removed on PUBACK."""
from edge.outbox.store import Outbox, OutboxRow

__all__ = ["Outbox", "OutboxRow"]
