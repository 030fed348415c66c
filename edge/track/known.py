"""known_plates: a name per plate list, matched within `match_distance` edits, so an event can say
known: "Alice's car" and a gate controller can act on it without its own matching."""
import re

from edge.track.tracker import edit_distance

_STRIP = re.compile(r"[\s\-.·]")


def normalize(plate):
    return _STRIP.sub("", plate.upper())


class KnownPlates:
    def __init__(self, known, match_distance):
        self.entries = [(name, normalize(p)) for name, plates in sorted(known.items()) for p in plates]
        self.match_distance = match_distance

    def match(self, plate):
        """The name whose plate is closest to `plate` within match_distance (exact wins), else None."""
        best, best_dist = None, self.match_distance + 1
        for name, candidate in self.entries:
            dist = edit_distance(plate, candidate, self.match_distance)
            if dist < best_dist:
                best, best_dist = name, dist
        return best
