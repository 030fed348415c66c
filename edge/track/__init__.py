"""Track/dedup stage: per-frame reads -> one event per passing plate."""
from edge.track.known import KnownPlates
from edge.track.tracker import PlateRead, Track, Tracker, edit_distance

__all__ = ["KnownPlates", "PlateRead", "Track", "Tracker", "edit_distance"]
