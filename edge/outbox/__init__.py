"""Outbox stage: events are committed to disk before they are published, and removed on PUBACK."""
from edge.outbox.store import CommitBuffer, Outbox, OutboxRow, OutboxWriteError, path_state

__all__ = ["CommitBuffer", "Outbox", "OutboxRow", "OutboxWriteError", "path_state"]
