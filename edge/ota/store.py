"""Installed models on the state directory, and the one pointer that says which is active.

    <state_dir>/models/
        state.json               which model serves each kind and model slot (active, previous, probation),
                                 refused serials, the last outcome; replaced atomically (temp file, fsync,
                                 rename, fsync dir)
        <name>-<serial>-<sha12>/ an unpacked, checked package: manifest.json, manifest.sig, model.onnx,
                                 characters.txt, golden/ (<slot>-<name>-... for a slot other than default)
        .staging/                packages being checked; emptied at every start
        .downloads/<key>.part    downloads in progress, kept so a later try resumes them
        .lock                    flock held by whoever is updating (one update at a time)
        .daemon                  flock held by a running daemon

A model folder becomes active only by the rename of state.json, so a SIGKILL or power loss at any moment
leaves either the old pointer or the new one, never half of each. `active: null` means the model the
config names for that slot (`model.path`, or `models.<slot>.path`), which an update never deletes.

Pointers are keyed by kind, and by kind@slot for a model slot other than default: a state.json written
before slots existed (key "recognizer") is the default slot's as it stands.
"""
import errno
import fcntl
import io
import json
import logging
import os
import shutil
import tempfile
import time

from edge.ota import OtaError
from edge.ota.package import fsync_dir

log = logging.getLogger("edge.ota")

STATE_FILE = "state.json"
STALE_DOWNLOAD_S = 7 * 24 * 3600
DEFAULT_SLOT = "default"


def pointer_key(kind, slot):
    return kind if slot == DEFAULT_SLOT else "%s@%s" % (kind, slot)


def slot_of_key(key):
    return key.split("@", 1)[1] if "@" in key else DEFAULT_SLOT


def folder_name(manifest, sha256, slot):
    """models/<this>: a slot of its own for each config slot, so one package installed in two slots never
    shares (or, when one is replaced, removes) the other's folder."""
    base = "%s-%d-%s" % (manifest["name"], manifest["serial"], sha256[:12])
    return base if slot == DEFAULT_SLOT else "%s-%s" % (slot, base)


class FileLock:
    """An exclusive flock on a file; the kernel drops it when the holder dies (SIGKILL included)."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self, what="an update"):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                holder = _read_text(self.path).strip() or "another process"
                raise OtaError("busy", "%s is already in progress (%s)" % (what, holder))
            raise
        os.ftruncate(fd, 0)
        os.write(fd, ("pid %d\n" % os.getpid()).encode("ascii"))
        self.fd = fd
        return self

    def held_by_other(self):
        """True when another process holds the lock (a daemon running on this state dir)."""
        try:
            self.acquire()
        except OtaError:
            return True
        self.release()
        return False

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        if self.fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _read_text(path):
    try:
        with io.open(path, encoding="utf-8") as f:
            return f.read()
    except (IOError, OSError):
        return ""


def write_json_atomic(path, data):
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class InstalledModel:
    """An installed model folder, described by its manifest (what events and the state topic say)."""

    def __init__(self, folder, manifest, sha256, slot=DEFAULT_SLOT):
        self.folder = folder
        self.manifest = manifest
        self.sha256 = sha256
        self.slot = slot  # the config's model slot it serves

    @property
    def folder_name(self):
        return os.path.basename(self.folder)

    @property
    def name(self):
        return self.manifest["name"]

    @property
    def version(self):
        return self.manifest["version"]

    @property
    def serial(self):
        return self.manifest["serial"]

    @property
    def model_path(self):
        return os.path.join(self.folder, *self.manifest["model"].split("/"))

    @property
    def characters_path(self):
        return os.path.join(self.folder, *self.manifest["characters"].split("/"))

    def describe(self):
        return {"name": self.name, "version": self.version, "serial": self.serial, "sha256": self.sha256,
                "kind": self.manifest["kind"], "slot": self.slot, "folder": self.folder_name}


class ModelStore:
    def __init__(self, state_dir):
        self.root = os.path.join(state_dir, "models")
        self.staging_root = os.path.join(self.root, ".staging")
        self.downloads = os.path.join(self.root, ".downloads")
        for folder in (self.root, self.staging_root, self.downloads):
            os.makedirs(folder, exist_ok=True)
        self.update_lock = FileLock(os.path.join(self.root, ".lock"))
        self.daemon_lock = FileLock(os.path.join(self.root, ".daemon"))

    # --- the pointer ---------------------------------------------------------------------------
    @property
    def state_path(self):
        return os.path.join(self.root, STATE_FILE)

    def read_state(self):
        text = _read_text(self.state_path)
        if not text:
            return {"schema": 1, "slots": {}, "refused": [], "last": None}
        try:
            state = json.loads(text)
        except ValueError:
            # cannot happen with the atomic write; if the disk gave us garbage, serve the config's model
            log.error("%s is not JSON; serving the config's model", self.state_path)
            return {"schema": 1, "slots": {}, "refused": [], "last": None}
        state.setdefault("slots", {})
        state.setdefault("refused", [])
        state.setdefault("last", None)
        return state

    def write_state(self, state):
        write_json_atomic(self.state_path, state)

    def pointer(self, state, slot=DEFAULT_SLOT, kind="recognizer"):
        """The slot's entry in state.json: active, previous, probation (folder names; null: the config's)."""
        return state["slots"].setdefault(pointer_key(kind, slot), {"active": None, "previous": None,
                                                                   "probation": None})

    def installed(self, name, slot=DEFAULT_SLOT):
        """The InstalledModel in models/<name>, or None (for null, or a folder that is gone)."""
        if not name:
            return None
        folder = os.path.join(self.root, name)
        text = _read_text(os.path.join(folder, "manifest.json"))
        if not text:
            log.error("installed model %s is missing; using the config's model instead", folder)
            return None
        manifest = json.loads(text)
        from edge.recognize.model import sha256_file

        return InstalledModel(folder, manifest, _read_text(os.path.join(folder, ".sha256")).strip() or
                              sha256_file(os.path.join(folder, *manifest["model"].split("/"))), slot)

    def active(self, slot=DEFAULT_SLOT, kind="recognizer"):
        return self.installed(self.pointer(self.read_state(), slot, kind)["active"], slot)

    def previous(self, slot=DEFAULT_SLOT, kind="recognizer"):
        return self.installed(self.pointer(self.read_state(), slot, kind)["previous"], slot)

    def is_refused(self, state, name, serial):
        return any(r["name"] == name and r["serial"] == serial for r in state["refused"])

    # --- changes (each one state.json rename) ---------------------------------------------------
    def activate(self, folder, slot=DEFAULT_SLOT, kind="recognizer", probation_s=None):
        state = self.read_state()
        pointer = self.pointer(state, slot, kind)
        pointer["previous"], pointer["active"] = pointer["active"], folder
        pointer["probation"] = {"since": time.time(), "seconds": probation_s} if probation_s else None
        self.write_state(state)
        self.prune(state)
        return state

    def commit(self, slot=DEFAULT_SLOT, kind="recognizer"):
        state = self.read_state()
        self.pointer(state, slot, kind)["probation"] = None
        self.write_state(state)
        return state

    def rollback(self, slot=DEFAULT_SLOT, kind="recognizer", refuse_reason=None):
        """Make the slot's previous model active again; with `refuse_reason` the rolled-back serial is
        refused from then on (in every slot: a model that failed once is not tried again under its name).
        Returns (state, the InstalledModel rolled back from)."""
        state = self.read_state()
        pointer = self.pointer(state, slot, kind)
        if pointer["active"] is None:
            raise OtaError("nothing_to_roll_back", "the config's own model is active in slot %s; there is nothing "
                                                   "to roll back to" % slot)
        bad = self.installed(pointer["active"], slot)
        # a refused model is no rollback target: previous becomes the config's model (and its folder goes)
        pointer["active"], pointer["previous"] = pointer["previous"], None if refuse_reason else pointer["active"]
        pointer["probation"] = None
        if refuse_reason and bad is not None and not self.is_refused(state, bad.name, bad.serial):
            state["refused"].append({"name": bad.name, "serial": bad.serial, "version": bad.version,
                                     "reason": refuse_reason, "at": time.time(), "slot": slot})
        self.write_state(state)
        self.prune(state)
        return state, bad

    def record(self, outcome, slot=DEFAULT_SLOT):
        """The slot's last outcome (failed/rolled_back/active with its reason), for the state topic after
        restarts. The default slot's stays at the top level, where state.json kept it before slots."""
        state = self.read_state()
        outcome = dict(outcome, at=time.time())
        if slot == DEFAULT_SLOT:
            state["last"] = outcome
        else:
            self.pointer(state, slot)["last"] = outcome
        self.write_state(state)

    def last(self, state, slot=DEFAULT_SLOT):
        return state["last"] if slot == DEFAULT_SLOT else self.pointer(state, slot).get("last")

    # --- housekeeping ----------------------------------------------------------------------------
    def new_staging(self):
        return tempfile.mkdtemp(prefix="pkg-", dir=self.staging_root)

    def commit_folder(self, staging_pkg, name):
        """Move a checked package folder into models/<name> (a rename on the same filesystem)."""
        target = os.path.join(self.root, name)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(staging_pkg, target)
        fsync_dir(self.root)
        return target

    def recover(self):
        """At start: empty the staging, roll back a probation a restart interrupted (in any slot), drop
        folders no pointer names, forget downloads older than a week. Returns a line saying what was done,
        or None."""
        said = []
        for name in os.listdir(self.staging_root):
            shutil.rmtree(os.path.join(self.staging_root, name), ignore_errors=True)
            said.append("removed staging %s" % name)
        state = self.read_state()
        for key in sorted(state["slots"]):
            if not state["slots"][key].get("probation"):
                continue
            kind, slot = key.split("@", 1)[0], slot_of_key(key)
            _, bad = self.rollback(slot, kind)
            reason = "the daemon stopped during probation of %s %s" % (bad.name, bad.version) if bad else \
                "the daemon stopped during probation"
            self.record({"state": "rolled_back", "reason": reason, "model": bad.describe() if bad else None}, slot)
            said.append("rolled back%s: %s" % ("" if slot == DEFAULT_SLOT else " slot %s" % slot, reason))
        self.prune(self.read_state())
        now = time.time()
        for name in os.listdir(self.downloads):
            path = os.path.join(self.downloads, name)
            try:
                if now - os.path.getmtime(path) > STALE_DOWNLOAD_S:
                    os.unlink(path)
            except OSError:
                pass
        return "; ".join(said) or None

    def prune(self, state):
        keep = set()
        for slot in state["slots"].values():
            keep.update(s for s in (slot.get("active"), slot.get("previous")) if s)
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if name.startswith(".") or not os.path.isdir(path) or name in keep:
                continue
            shutil.rmtree(path, ignore_errors=True)
