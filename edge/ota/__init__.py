"""Over-the-air model updates: signed model packages (package.py, signing.py), downloads with resume
(download.py), the install process on the state directory (store.py, install.py), and the daemon's side:
MQTT commands, hot swap, probation and rollback (manager.py).

Kinds: a package says whether it holds a `recognizer` (LPRNet) or a `detector` (a plate detector, a
later stage); only recognizers are installed today and a detector package is refused by name."""


class OtaError(Exception):
    """An update that cannot go on. `code` is a short machine-readable reason (bad_signature,
    sha256_mismatch, ...) carried on the state topic; the message says what is wrong in words."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


KINDS = ("recognizer", "detector")
