"""Over-the-air model updates (README: 'Model updates').

    package.py   the package format: writing, and reading it defensively (names, links, sizes, sha256)
    signing.py   Ed25519 keys and the manifest signature
    pack.py      `lpr-edge model pack`: measure contract and golden set, sign, write
    check.py     what a device checks before it serves a model (contract, golden set, engine-build seam)
    download.py  HTTP(S) download with a size cap, timeouts and Range/If-Range resume
    store.py     installed models on the state dir and the atomic pointer (state.json)
    install.py   the install process, shared by the CLI and the daemon
    daemon.py    the daemon's side: commands, hot swap, probation, rollback (OtaService, OtaManager)
    mqtt.py      its topics, as an extension of the publisher's client; Home Assistant's update entity
    remote.py    the CLI talking to a running daemon over MQTT
    cli.py       `lpr-edge model keygen|pack|verify|install|list|rollback`

Kinds: a package says whether it holds a `recognizer` (LPRNet) or a `detector` (a plate detector, a
later stage); only recognizers are installed today and a detector package is refused by name."""


class OtaError(Exception):
    """An update that cannot go on. `code` is a short machine-readable reason (bad_signature,
    sha256_mismatch, ...) carried on the state topic; the message says what is wrong in words."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code


KINDS = ("recognizer", "detector")
