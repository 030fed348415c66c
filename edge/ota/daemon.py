"""The daemon's side of model updates (the DeepStream pattern: prepare and check the new model off the
streaming thread, swap between batches, keep the old one on any error, say what happened on a topic).

    <prefix>/<device_id>/cmd/model, <prefix>/all/cmd/model   commands (JSON, see COMMANDS)
    <prefix>/<device_id>/cmd/model/response                  every reply, echoing the command's transaction
    <prefix>/<device_id>/model/state                         retained state (also Home Assistant's update entity)

One thread (OtaManager) runs one command at a time; a second update while one runs is answered `busy`.
After a switch the new model is on probation: an error in a batch (that batch is read again by the old
model, so no frame goes unread), a fall in plates per crop or in mean score against the old model, or a
failed golden set at the end rolls it back, refuses its serial and says why. The old recognizer stays
loaded through probation, so a rollback is a swap, not a load that could fail.

App hooks (edge/app.py): OtaService(app) in init (model_config() chooses the model to start with),
attach() once the worker and publisher exist, start(), stop(); health.py asks health_component().
"""
import json
import logging
import queue
import threading
import time

from edge import __version__
from edge.ota import OtaError
from edge.ota.check import check_golden
from edge.ota.install import Installer, current_model
from edge.ota.store import ModelStore

log = logging.getLogger("edge.ota")

ACTIONS = ("install", "rollback", "status", "offer")
IN_PROGRESS = ("downloading", "verifying", "building")
POLL_S = 0.5


class ObservedRecognizer:
    """A Recognizer with counts for probation: crops read, crops that gave a plate, summed plate scores,
    errors. With `fallback` set (the old model, during probation) a batch the new model fails on is read
    by the fallback instead, so the frame is not lost. Everything else is the wrapped recognizer's."""

    def __init__(self, recognizer, installed=None):
        self.inner = recognizer
        self.installed = installed  # store.InstalledModel, or None for the config's model
        self.fallback = None
        self.crops = 0
        self.plates = 0
        self.score_sum = 0.0
        self.errors = 0
        self.last_error = None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, crops):
        try:
            reads = self.inner.read(crops)
        except Exception as exc:
            self.errors += 1
            self.last_error = "%s: %s" % (type(exc).__name__, exc)
            if self.fallback is None:
                raise
            log.error("model %s failed on a batch (%s); the previous model reads it", self.inner.model.name,
                      self.last_error)
            return self.fallback.read(crops)
        self.crops += len(crops)
        for read in reads:
            if read.text:
                self.plates += 1
                self.score_sum += read.score
        return reads

    def stats(self):
        return {"crops": self.crops, "plates": self.plates, "errors": self.errors,
                "plate_rate": round(self.plates / float(self.crops), 4) if self.crops else None,
                "mean_score": round(self.score_sum / self.plates, 4) if self.plates else None}

    def close(self):
        self.inner.close()


def describe(recognizer):
    """name/version/serial/sha256 of what a (wrapped) recognizer serves."""
    info = recognizer.model
    installed = getattr(recognizer, "installed", None)
    return {"name": info.name, "version": info.version, "sha256": info.sha256,
            "serial": installed.serial if installed is not None else 0}


class OtaService:
    """What the App holds: the store, the MQTT side and the manager thread."""

    def __init__(self, app):
        from edge.recognize.model import ModelError

        self.app = app
        self.config = app.config
        self.store = ModelStore(self.config.state_dir)
        try:
            self.store.daemon_lock.acquire("a daemon")
        except OtaError:
            raise ModelError("another lpr-edge daemon runs on the state directory %s" % self.config.state_dir)
        said = self.store.recover()
        if said:
            log.warning("model updates: %s", said)
        self.installed = None
        self.manager = None
        self.mqtt = None

    def model_config(self):
        """The model to start with: the active installed one if it is intact, else the config's."""
        from edge.config.model import ModelConfig
        from edge.recognize.model import sha256_file

        active = self.store.active()
        while active is not None:
            digest = sha256_file(active.model_path) if _exists(active.model_path) else None
            if digest == active.manifest["files"][active.manifest["model"]]["sha256"]:
                break
            reason = "installed model %s %s is damaged (sha256 %s)" % (active.name, active.version, digest)
            log.error("model updates: %s; rolling back", reason)
            self.store.rollback(refuse_reason=reason)
            self.store.record({"state": "rolled_back", "reason": reason, "model": active.describe()})
            active = self.store.active()
        self.installed = active
        if active is None:
            return self.config.model
        log.info("model updates: starting with installed model %s %s (serial %d)", active.name, active.version,
                 active.serial)
        return ModelConfig(path=active.model_path, characters=active.characters_path, name=active.name,
                           version=active.version,
                           plate_format=active.manifest.get("plate_format", self.config.model.plate_format))

    def attach(self):
        """Wrap the serving recognizer for probation counts; hook the MQTT side into the publisher."""
        app = self.app
        observed = ObservedRecognizer(app.recognizer, self.installed)
        app.recognizer = app.worker.recognizer = observed
        self.manager = OtaManager(self)
        if self.config.ota.enabled:
            from edge.ota.mqtt import OtaMqtt

            self.mqtt = OtaMqtt(self.config, self.manager)
            app.publisher.extensions.append(self.mqtt)
            if app.publisher.discovery is not None:
                app.publisher.discovery.extra.append(self.mqtt.discovery_messages)
        self.manager.publish_state()

    def start(self):
        if self.manager is not None:
            self.manager.start()

    def stop(self):
        if self.manager is not None:
            self.manager.stop_event.set()
            self.manager.join(2.0)
        self.store.daemon_lock.release()

    def status(self):
        return self.manager.state_payload() if self.manager is not None else None

    def health_component(self):
        from edge.service.health import OK, Component

        state = self.status() or {"state": "idle"}
        model = state.get("model") or {}
        reason = "%s %s: %s" % (model.get("name"), model.get("version"), state["state"])
        if state.get("message") and state["state"] in ("failed", "rolled_back", "probation"):
            reason += " (%s)" % state["message"]
        return Component("model", OK, reason)


def _exists(path):
    import os

    return os.path.isfile(path)


class OtaManager(threading.Thread):
    def __init__(self, service):
        threading.Thread.__init__(self, name="ota", daemon=True)
        self.service = service
        self.app = service.app
        self.config = service.config
        self.ota = service.config.ota
        self.store = service.store
        self.stop_event = threading.Event()
        self.commands = queue.Queue()
        self.busy = threading.Lock()  # held from an install's acceptance to the end of its probation
        self.on_state = []  # callables(payload dict): the MQTT side publishes it
        self.on_reply = []  # callables(reply dict)
        self.offer = None  # the update last offered (Home Assistant's latest_version)
        last = self.store.read_state().get("last") or {}
        self.state = {"state": last.get("state") or "idle", "message": last.get("reason"), "reason": None,
                      "transaction": None}
        self.probation = None

    # --- commands (any thread) ---------------------------------------------------------------------
    def submit(self, command):
        """Validate a parsed command; queue it or answer at once (status, busy, bad commands)."""
        transaction = command.get("transaction") if isinstance(command, dict) else None
        if not isinstance(command, dict) or command.get("action") not in ACTIONS:
            action = command.get("action") if isinstance(command, dict) else None
            return self.refuse(transaction, "bad_command", "unknown action %r (known: %s)" % (action, ", ".join(ACTIONS)))
        action = command["action"]
        if action == "status":
            return self.reply(transaction, "ok", action, data=self.state_payload())
        if action == "offer":
            return self._offer(command, transaction)
        if action == "install" and not command.get("url"):
            if self.offer is None:
                return self.refuse(transaction, "bad_command", "install needs a url (or an earlier offer)")
            command = dict(self.offer, action="install", transaction=transaction or self.offer.get("transaction"))
        problem = _command_problem(command)
        if problem:
            return self.refuse(transaction, "bad_command", problem)
        if not self.busy.acquire(False):
            return self.reply(transaction, "error", action, error="busy",
                              message="another model update is in progress (%s)" % self.state["state"])
        self.reply(transaction, "accepted", action)
        self.commands.put(command)

    def _offer(self, command, transaction):
        problem = _command_problem(dict(command, action="install"))
        if problem:
            return self.refuse(transaction, "bad_command", problem)
        self.offer = dict((k, command[k]) for k in ("url", "sha256", "size", "version", "release_summary",
                                                    "allow_downgrade", "transaction") if k in command)
        self.reply(transaction, "ok", "offer")
        self.publish_state()

    def refuse(self, transaction, code, message):
        log.warning("model command refused: %s", message)
        self.reply(transaction, "error", None, error=code, message=message)
        if not self.busy.locked():  # during an update the state topic keeps saying what the update does
            self.set_state("failed", reason=code, message=message, transaction=transaction)

    def reply(self, transaction, status, action, **detail):
        payload = dict(transaction=transaction, status=status, action=action, device_id=self.config.device_id,
                       timestamp=time.time())
        payload.update(detail)
        for fn in self.on_reply:
            fn(payload)

    # --- state -----------------------------------------------------------------------------------------
    def set_state(self, state, **detail):
        self.state = dict(state=state, reason=detail.pop("reason", None), message=detail.pop("message", None),
                          transaction=detail.pop("transaction", self.state.get("transaction")), **detail)
        self.publish_state()

    def state_payload(self):
        serving = describe(self.app.recognizer)
        payload = dict(self.state)
        payload.update(model=serving, device_id=self.config.device_id, daemon_version=__version__,
                       timestamp=time.time())
        slot = self.store.slot(self.store.read_state())
        previous = self.store.installed(slot.get("previous"))
        payload["previous"] = previous.describe() if previous else None
        if self.probation is not None:
            payload["probation_left_s"] = round(max(0.0, self.probation["until"] - time.monotonic()), 1)
        # Home Assistant's update entity reads these (its state JSON)
        latest = self.offer.get("version") if self.offer else None
        payload.update(title=serving["name"], installed_version=serving["version"],
                       latest_version=latest or serving["version"], in_progress=self.state["state"] in IN_PROGRESS,
                       update_percentage=self.state.get("percent") if self.state["state"] == "downloading" else None,
                       release_summary=(self.offer or {}).get("release_summary") or self.state.get("message"))
        return payload

    def publish_state(self):
        payload = self.state_payload()
        for fn in self.on_state:
            fn(payload)

    # --- the thread ------------------------------------------------------------------------------------
    def run(self):
        while not self.stop_event.is_set():
            try:
                command = self.commands.get(timeout=POLL_S)
            except queue.Empty:
                continue
            try:
                self.execute(command)
            except Exception as exc:  # a bug must not take the daemon down: the old model keeps serving
                log.exception("model update failed")
                self.set_state("failed", reason="internal", message=str(exc), transaction=command.get("transaction"))
                self.reply(command.get("transaction"), "error", command["action"], error="internal", message=str(exc))
            finally:
                self.probation = None
                self.busy.release()

    def execute(self, command):
        transaction = command.get("transaction")
        if command["action"] == "rollback":
            return self.rollback_by_command(transaction)
        self.set_state("downloading" if command["url"].startswith(("http://", "https://")) else "verifying",
                       percent=0.0, transaction=transaction)
        installer = Installer(self.store, self.ota, self.config.recognizer,
                              lambda: dict(describe(self.app.recognizer), name=self.app.recognizer.model.name),
                              report=self._report, should_stop=self.stop_event.is_set)
        try:
            outcome = installer.run(command["url"], sha256=command.get("sha256"), size=command.get("size"),
                                    allow_downgrade=bool(command.get("allow_downgrade")))
        except OtaError as exc:
            log.error("model update refused: %s", exc)
            self.set_state("failed", reason=exc.code, message=str(exc), transaction=transaction)
            self.store.record({"state": "failed", "reason": str(exc)})
            return self.reply(transaction, "error", "install", error=exc.code, message=str(exc))
        if outcome.noop:
            self.set_state("active", message=outcome.message, transaction=transaction)
            return self.reply(transaction, "ok", "install", message=outcome.message, noop=True)
        log.info("model update: %s", outcome.message)
        self.switch(outcome, transaction)

    def _report(self, state, **detail):
        self.set_state(state, **detail)

    def switch(self, outcome, transaction):
        """Point state.json at the new model (probation pending), then hand it to the worker."""
        probation_s = self.ota.probation_s
        new = ObservedRecognizer(outcome.recognizer, outcome.installed)
        old = self.app.recognizer
        baseline = old.stats() if isinstance(old, ObservedRecognizer) else {}
        self.store.activate(outcome.installed.slot, probation_s=probation_s or None)
        self._swap_to(new)
        if not probation_s:
            return self.commit(new, old, transaction)
        new.fallback = old
        self.probation = {"until": time.monotonic() + probation_s, "baseline": baseline}
        self.set_state("probation", message="%s; on probation for %.0f s" % (outcome.message, probation_s),
                       transaction=transaction)
        self.reply(transaction, "ok", "install", state="probation", model=describe(new))
        self.watch_probation(new, old, transaction)

    def _swap_to(self, recognizer):
        def on_swap(old, new):
            self.app.recognizer = new  # events emitted from here on carry the new model

        done = self.app.worker.swap_recognizer(recognizer, on_swap)
        if not done.wait(30.0) and self.app.worker.is_alive():
            raise RuntimeError("the recognizer worker did not take the new model within 30 s")
        if not done.is_set():  # worker gone (stopping): nothing reads frames anyway
            self.app.recognizer = self.app.worker.recognizer = recognizer
        log.info("model %s %s serves now (sha256 %s)", recognizer.model.name, recognizer.model.version,
                 recognizer.model.sha256[:12])

    def watch_probation(self, new, old, transaction):
        while not self.stop_event.is_set():
            problem = self.probation_problem(new, final=False)
            if problem is None and time.monotonic() >= self.probation["until"]:
                problem = self.probation_problem(new, final=True)
                if problem is None:
                    return self.commit(new, old, transaction)
            if problem:
                return self.roll_back(new, old, transaction, problem)
            self.publish_state()
            self.stop_event.wait(POLL_S)
        # stopping during probation: state.json still says probation, so the next start rolls back

    def probation_problem(self, new, final):
        if new.errors:
            return "the new model failed on %d batch(es): %s" % (new.errors, new.last_error)
        base = self.probation["baseline"]
        now = new.stats()
        enough = now["crops"] >= self.ota.probation_min_crops and (base.get("crops") or 0) >= self.ota.probation_min_crops
        if enough and base.get("plate_rate") is not None:
            floor = base["plate_rate"] * (1.0 - self.ota.probation_max_read_drop)
            if now["plate_rate"] < floor:
                return ("the new model gives a plate on %.0f%% of %d crops; the old one did on %.0f%% (at least "
                        "%.0f%% required)" % (100 * now["plate_rate"], now["crops"], 100 * base["plate_rate"],
                                              100 * floor))
            if final and base.get("mean_score") is not None and now["mean_score"] is not None and \
                    now["mean_score"] < base["mean_score"] - self.ota.probation_max_score_drop:
                return "the new model's mean plate score is %.2f; the old one's %.2f" % (now["mean_score"],
                                                                                        base["mean_score"])
        if final and new.installed is not None:
            try:
                check_golden(new.inner, new.installed.folder, new.installed.manifest["golden"],
                             self.ota.golden_tolerance)
            except OtaError as exc:
                return "golden set again at the end of probation: %s" % exc
        return None

    def commit(self, new, old, transaction):
        new.fallback = None
        self.store.commit()
        old.close()
        message = "%s %s is active (serial %d)" % (new.model.name, new.model.version, new.installed.serial)
        self.store.record({"state": "active", "reason": message, "model": new.installed.describe()})
        log.info("model update: %s", message)
        self.set_state("active", message=message, transaction=transaction)
        self.reply(transaction, "ok", "install", state="active", model=describe(new))

    def roll_back(self, new, old, transaction, problem):
        log.error("model update: probation failed: %s; rolling back", problem)
        self.store.rollback(refuse_reason=problem)
        self._swap_to(old)
        new.close()
        message = "rolled back to %s %s: %s" % (old.model.name, old.model.version, problem)
        self.store.record({"state": "rolled_back", "reason": message, "model": new.installed.describe()})
        self.set_state("rolled_back", reason="probation_failed", message=message, transaction=transaction)
        self.reply(transaction, "error", "install", error="probation_failed", message=message)

    def rollback_by_command(self, transaction):
        """Back to the previous model (loaded fresh: outside probation the old one is not kept)."""
        from edge.ota.check import load_recognizer

        state = self.store.read_state()
        slot = self.store.slot(state)
        if slot["active"] is None:
            message = "the config's own model is active; there is nothing to roll back to"
            self.set_state("failed", reason="nothing_to_roll_back", message=message, transaction=transaction)
            return self.reply(transaction, "error", "rollback", error="nothing_to_roll_back", message=message)
        previous = self.store.installed(slot["previous"])
        try:
            if previous is not None:
                recognizer = load_recognizer(previous.model_path, previous.characters_path, previous.name,
                                             previous.version, previous.manifest.get("plate_format"),
                                             self.config.recognizer)
            else:
                m = self.config.model
                recognizer = load_recognizer(m.path, m.characters, m.name, m.version, m.plate_format,
                                             self.config.recognizer)
        except OtaError as exc:
            self.set_state("failed", reason=exc.code, message="rollback: %s" % exc, transaction=transaction)
            return self.reply(transaction, "error", "rollback", error=exc.code, message=str(exc))
        _, bad = self.store.rollback()
        old = self.app.recognizer
        self._swap_to(ObservedRecognizer(recognizer, previous))
        old.close()
        message = "rolled back by command from %s %s" % (bad.name, bad.version) if bad else "rolled back"
        self.store.record({"state": "rolled_back", "reason": message, "model": bad.describe() if bad else None})
        self.set_state("rolled_back", reason="command", message=message, transaction=transaction)
        self.reply(transaction, "ok", "rollback", model=describe(self.app.recognizer))


def _command_problem(command):
    """One line saying what is wrong with an install or rollback command, or None."""
    if command["action"] == "rollback":
        return None
    url = command.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "file://", "/")):
        return "url must be an http(s) URL (or a file:// path on the device), not %r" % (url,)
    sha = command.get("sha256")
    if sha is not None and (not isinstance(sha, str) or len(sha) != 64 or
                            any(c not in "0123456789abcdefABCDEF" for c in sha)):
        return "sha256 must be 64 hex digits"
    size = command.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        return "size must be a positive number of bytes"
    if "allow_downgrade" in command and not isinstance(command["allow_downgrade"], bool):
        return "allow_downgrade must be true or false"
    return None


def parse_command(payload):
    """bytes -> dict, or OtaError('bad_command') naming the problem."""
    try:
        command = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtaError("bad_command", "the command is not JSON: %s" % exc)
    if not isinstance(command, dict):
        raise OtaError("bad_command", "the command must be a JSON object")
    return command
