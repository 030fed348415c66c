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

Model slots (config `model:` = slot default, `models:` the others, cameras[].model picks one): every slot
a camera uses has its own serving recognizer, installed model, rollback, probation and retained state
(<prefix>/<device_id>/model/state for default, as before slots; <prefix>/<device_id>/model/<slot>/state for
the others). A command names its slot (`slot`, else the package manifest's, else default). Still one
update at a time, whatever the slot: updates are rare and a second one waits its turn (`busy`).

App hooks (edge/app.py): OtaService(app) in init (model_config(slot) chooses the model each slot starts
with), attach() once the worker and publisher exist, start(), stop(); health.py asks health_component().
"""
import json
import logging
import os
import queue
import threading
import time

from edge import __version__
from edge.ota import OtaError
from edge.ota.check import check_golden
from edge.ota.install import Installer, _test_pause
from edge.ota.store import DEFAULT_SLOT, ModelStore

log = logging.getLogger("edge.ota")

IN_PROGRESS = ("downloading", "verifying", "building")
POLL_S = 0.5


class ObservedRecognizer:
    """A Recognizer with what probation judges. While `shadow` is set (the old model, during probation)
    every batch is also read by the old model, so the comparison is on the same crops, whatever the
    cameras see meanwhile: of the crops where the old model read a plate, how many the new one reads, and
    the mean scores of both on those. A batch the new model fails on is answered by the old one, so no
    frame goes unread. Everything else is the wrapped recognizer's."""

    def __init__(self, recognizer, installed=None):
        self.inner = recognizer
        self.installed = installed  # store.InstalledModel, or None for the config's model
        self.shadow = None
        self.crops = 0
        self.errors = 0
        self.last_error = None
        self.old_plates = 0  # crops where the shadow (old model) read a plate
        self.kept = 0  # ... and this model read one too
        self.old_score = 0.0  # summed over the kept crops
        self.new_score = 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, crops):
        shadow = self.shadow
        try:
            reads = self.inner.read(crops)
        except Exception as exc:
            self.errors += 1
            self.last_error = "%s: %s" % (type(exc).__name__, exc)
            if shadow is None:
                raise
            log.error("model %s failed on a batch (%s); the previous model reads it", self.inner.model.name,
                      self.last_error)
            return shadow.read(crops)
        self.crops += len(crops)
        if shadow is not None:
            try:
                old_reads = shadow.read(crops)
            except Exception:  # the comparison is what fails, not the serving model: skip this batch's
                log.exception("probation: the previous model failed on a batch")
                return reads
            for old, new in zip(old_reads, reads):
                if old.text:
                    self.old_plates += 1
                    if new.text:
                        self.kept += 1
                        self.old_score += old.score
                        self.new_score += new.score
        return reads

    def stats(self):
        return {"crops": self.crops, "errors": self.errors, "old_plates": self.old_plates, "kept": self.kept,
                "old_mean_score": round(self.old_score / self.kept, 4) if self.kept else None,
                "new_mean_score": round(self.new_score / self.kept, 4) if self.kept else None}

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
        try:
            self.store = ModelStore(self.config.state_dir)
            self.store.daemon_lock.acquire("a daemon")
        except OtaError:
            raise ModelError("another lpr-edge daemon runs on the state directory %s" % self.config.state_dir)
        except OSError as exc:
            raise ModelError("state directory %s: cannot keep installed models there: %s"
                             % (self.config.state_dir, exc.strerror or exc))
        said = self.store.recover()
        if said:
            log.warning("model updates: %s", said)
        self.installed = {}  # slot -> the InstalledModel it starts with (absent: the config's model)
        self.manager = None
        self.mqtt = None

    def config_model(self, slot):
        return self.config.models.get(slot) or self.config.model

    def model_config(self, slot=DEFAULT_SLOT):
        """The model a slot starts with: its active installed one if it is intact, else the config's."""
        from edge.config.model import ModelConfig
        from edge.recognize.model import sha256_file

        active = self.store.active(slot)
        while active is not None:
            files = active.manifest["files"]
            damaged = [member for member in (active.manifest["model"], active.manifest["characters"])
                       if not _exists(os.path.join(active.folder, member)) or
                       sha256_file(os.path.join(active.folder, member)) != files[member]["sha256"]]
            if not damaged:
                break
            self._roll_back_at_start(slot, active, "installed model %s %s is damaged (%s)" % (
                active.name, active.version, ", ".join(damaged)))
            active = self.store.active(slot)
        self.installed[slot] = active
        if active is None:
            return self.config_model(slot)
        log.info("model updates: starting with installed model %s %s (serial %d)%s", active.name, active.version,
                 active.serial, _in_slot(slot))
        return ModelConfig(path=active.model_path, characters=active.characters_path, name=active.name,
                           version=active.version,
                           plate_format=active.manifest.get("plate_format", self.config_model(slot).plate_format))

    def load_recognizer(self, model_config, slot=DEFAULT_SLOT):
        """The Recognizer a slot starts with. An installed model that fails to load (its backend refuses
        it) is rolled back and refused, and the one before it tried: a bad update must never stop the
        daemon from starting. Only the config's own model failing is an error, as without updates."""
        from edge.recognize.model import ModelError
        from edge.recognize.recognizer import Recognizer

        while True:
            try:
                return Recognizer.from_config(model_config, self.config.recognizer)
            except ModelError as exc:
                bad = self.installed.get(slot)
                if bad is None:
                    raise
                self._roll_back_at_start(slot, bad, "installed model %s %s does not load: %s" % (
                    bad.name, bad.version, exc))
                model_config = self.model_config(slot)

    def _roll_back_at_start(self, slot, bad, reason):
        log.error("model updates: %s%s; rolling back", reason, _in_slot(slot))
        self.store.rollback(slot, refuse_reason=reason)
        self.store.record({"state": "rolled_back", "reason": reason, "model": bad.describe()}, slot)

    def attach(self):
        """Wrap each serving recognizer for probation counts; hook the MQTT side into the publisher."""
        app = self.app
        for slot, recognizer in list(app.recognizers.items()):
            observed = ObservedRecognizer(recognizer, self.installed.get(slot))
            app.recognizers[slot] = app.worker.recognizers[slot] = observed
        self.manager = OtaManager(self)
        if self.config.ota.enabled:
            from edge.ota.mqtt import OtaMqtt

            self.mqtt = OtaMqtt(self.config, self.manager)
            app.publisher.extensions.append(self.mqtt)
            if app.publisher.discovery is not None:
                discovery = app.publisher.discovery
                discovery.extra.append(lambda: self.mqtt.discovery_messages(discovery))
        self.manager.publish_state()

    def start(self):
        if self.manager is not None:
            self.manager.start()

    def stop(self):
        if self.manager is not None:
            self.manager.stop_event.set()
            self.manager.join(2.0)
        self.store.daemon_lock.release()

    def status(self, slot=DEFAULT_SLOT):
        if self.manager is None or slot not in self.app.recognizers:
            return None
        return self.manager.state_payload(slot)

    def health_component(self):
        """One line: each slot's model and update state (the default slot's as before slots, first)."""
        from edge.service.health import OK, Component

        parts = []
        for slot in self.app.recognizers:
            state = self.status(slot) or {"state": "idle"}
            model = state.get("model") or {}
            part = "%s %s: %s" % (model.get("name"), model.get("version"), state["state"])
            if state.get("message") and state["state"] in ("failed", "rolled_back", "probation"):
                part += " (%s)" % state["message"]
            parts.append(part if slot == DEFAULT_SLOT else "slot %s: %s" % (slot, part))
        return Component("model", OK, "; ".join(parts))


def _exists(path):
    return os.path.isfile(path)


def _in_slot(slot):
    return "" if slot == DEFAULT_SLOT else " in slot %s" % slot


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
        self.offers = {}  # slot -> the update last offered (Home Assistant's latest_version)
        stored = self.store.read_state()
        self.states = {}  # slot -> its state: state, reason, message, transaction, and the step's details
        for slot in self.app.recognizers:
            last = self.store.last(stored, slot) or {}
            self.states[slot] = {"state": last.get("state") or "idle", "message": last.get("reason"),
                                 "reason": None, "transaction": None}
        self.probation = None
        self.update_slot = DEFAULT_SLOT  # the slot the running update is for (its states go there)

    @property
    def state(self):
        """The default slot's state (else the first slot's): what single-slot callers mean."""
        return self.states.get(DEFAULT_SLOT) or next(iter(self.states.values()))

    # --- commands (any thread) ---------------------------------------------------------------------
    def slot_problem(self, slot):
        """(code, message) when `slot` cannot take an update in this daemon, else None."""
        if slot not in self.config.models:
            return "unknown_slot", "the config has no model slot %r (slots: %s)" % (
                slot, ", ".join(sorted(self.config.models)))
        if slot not in self.app.recognizers:
            return "slot_unused", ("no camera reads with model slot %r, so the daemon has no model there to replace "
                                   "or judge on probation (set cameras[].model: %s, or install it offline)"
                                   % (slot, slot))
        return None

    def submit(self, command):
        """Validate a parsed command; queue it or answer at once (status, offer, busy, bad commands)."""
        transaction = command.get("transaction") if isinstance(command, dict) else None
        problem = command_problem(command)
        if problem:
            return self.refuse(transaction if isinstance(transaction, (str, int)) else None, "bad_command", problem)
        action = command["action"]
        slot = command.get("slot")
        if slot is not None and self.slot_problem(slot):
            code, message = self.slot_problem(slot)
            return self.refuse(transaction, code, message)
        if action == "status":
            data = self.state_payload(slot or DEFAULT_SLOT) if (slot or DEFAULT_SLOT) in self.states else \
                dict(self.state_payload(next(iter(self.states))))
            data["slots"] = dict((s, self.state_payload(s)) for s in self.states)
            return self.reply(transaction, "ok", action, data=data)
        offer_slot = slot or DEFAULT_SLOT
        if action in ("install", "offer") and not command.get("url"):
            offer = self.offers.get(offer_slot)
            if action == "offer" or offer is None:
                return self.refuse(transaction, "bad_command", "%s needs a url%s" % (
                    action, " (or an earlier offer)" if action == "install" else ""), slot)
            command = dict(offer, action="install", transaction=transaction or offer.get("transaction"))
        if action == "offer":
            self.offers[offer_slot] = dict((k, v) for k, v in command.items() if k not in ("action", "devices"))
            self.reply(transaction, "ok", "offer", slot=offer_slot)
            return self.publish_state(offer_slot)
        if not self.busy.acquire(False):
            return self.reply(transaction, "error", action, error="busy",
                              message="another model update is in progress (%s%s)" % (
                                  self.states[self.update_slot]["state"], _in_slot(self.update_slot)))
        self.reply(transaction, "accepted", action)
        self.commands.put(command)

    def refuse(self, transaction, code, message, slot=None):
        log.warning("model command refused: %s", message)
        self.reply(transaction, "error", None, error=code, message=message)
        slot = slot if slot in self.states else DEFAULT_SLOT if DEFAULT_SLOT in self.states else None
        if slot is not None and not self.busy.locked():  # during an update the state topic keeps saying what
            self.set_state(slot, "failed", reason=code, message=message, transaction=transaction)  # it does

    def reply(self, transaction, status, action, **detail):
        payload = dict(transaction=transaction, status=status, action=action, device_id=self.config.device_id,
                       timestamp=time.time())
        payload.update(detail)
        for fn in self.on_reply:
            fn(payload)

    # --- state -----------------------------------------------------------------------------------------
    def set_state(self, slot, state, **detail):
        before = self.states.get(slot, {})
        self.states[slot] = dict(state=state, reason=detail.pop("reason", None), message=detail.pop("message", None),
                                 transaction=detail.pop("transaction", before.get("transaction")), **detail)
        self.publish_state(slot)

    def state_payload(self, slot=DEFAULT_SLOT):
        serving = describe(self.app.recognizers[slot])
        state = self.states[slot]
        payload = dict(state)
        payload.update(model=serving, device_id=self.config.device_id, daemon_version=__version__,
                       timestamp=time.time(), slot=slot)
        previous = self.store.previous(slot)
        payload["previous"] = previous.describe() if previous else None
        if self.probation is not None and self.probation["slot"] == slot:
            payload["probation_left_s"] = round(max(0.0, self.probation["until"] - time.monotonic()), 1)
        # Home Assistant's update entity reads these (its state JSON)
        offer = self.offers.get(slot)
        latest = offer.get("version") if offer else None
        payload.update(title=serving["name"], installed_version=serving["version"],
                       latest_version=latest or serving["version"], in_progress=state["state"] in IN_PROGRESS,
                       update_percentage=state.get("percent") if state["state"] == "downloading" else None,
                       release_summary=(offer or {}).get("release_summary") or state.get("message"))
        return payload

    def publish_state(self, slot=None):
        """Publish one slot's state, or (None) every slot's."""
        for s in ([slot] if slot is not None else list(self.states)):
            payload = self.state_payload(s)
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
                self.set_state(self.update_slot, "failed", reason="internal", message=str(exc),
                               transaction=command.get("transaction"))
                self.reply(command.get("transaction"), "error", command["action"], error="internal", message=str(exc))
            finally:
                self.probation = None
                self.busy.release()

    def execute(self, command):
        transaction = command.get("transaction")
        asked = command.get("slot")
        self.update_slot = asked or DEFAULT_SLOT  # until the manifest names another
        if command["action"] == "rollback":
            return self.rollback_by_command(transaction, self.update_slot)
        self._before_update = dict(self.states[self.update_slot])
        self.set_state(self.update_slot, "downloading" if command["url"].startswith(("http://", "https://"))
                       else "verifying", percent=0.0, transaction=transaction)
        installer = Installer(self.store, self.ota, self.config.recognizer,
                              lambda slot: dict(describe(self.app.recognizers[slot]),
                                                name=self.app.recognizers[slot].model.name),
                              report=self._report, should_stop=self.stop_event.is_set,
                              slots=list(self.app.recognizers),
                              tensorrt_serves=lambda slot: self.app.recognizers[slot].backend.name == "tensorrt")
        installer.slot_problem = self.slot_problem
        installer.on_slot = self._on_slot
        try:
            outcome = installer.run(command["url"], sha256=command.get("sha256"), size=command.get("size"),
                                    allow_downgrade=bool(command.get("allow_downgrade")), slot=asked)
        except OtaError as exc:
            log.error("model update refused: %s", exc)
            self.set_state(self.update_slot, "failed", reason=exc.code, message=str(exc), transaction=transaction)
            self.store.record({"state": "failed", "reason": str(exc)}, self.update_slot)
            return self.reply(transaction, "error", "install", error=exc.code, message=str(exc),
                              slot=self.update_slot)
        if outcome.noop:
            self.set_state(outcome.slot, "active", message=outcome.message, transaction=transaction)
            return self.reply(transaction, "ok", "install", message=outcome.message, noop=True, slot=outcome.slot)
        log.info("model update: %s", outcome.message)
        self.switch(outcome, transaction)

    def _on_slot(self, slot):
        """The manifest named the slot (the command did not): its states go there from now on, and the
        default slot's topic says again what it said before this update."""
        if slot == self.update_slot:
            return
        moved = self.states[self.update_slot]
        self.states[self.update_slot] = self._before_update
        self.publish_state(self.update_slot)
        self.update_slot = slot
        self._before_update = dict(self.states[slot])
        self.set_state(slot, moved["state"], transaction=moved.get("transaction"))

    def _report(self, state, **detail):
        self.set_state(self.update_slot, state, **detail)

    def switch(self, outcome, transaction):
        """Point state.json at the new model (probation pending), then hand it to the worker."""
        slot = outcome.slot
        probation_s = self.ota.probation_s
        new = ObservedRecognizer(outcome.recognizer, outcome.installed)
        old = self.app.recognizers[slot]
        self.store.activate(outcome.installed.folder_name, slot, probation_s=probation_s or None)
        _test_pause("activated")
        self._swap_to(slot, new)
        if not probation_s:
            return self.commit(slot, new, old, transaction)
        new.shadow = old.inner if isinstance(old, ObservedRecognizer) else old
        self.probation = {"until": time.monotonic() + probation_s, "slot": slot}
        self.set_state(slot, "probation", message="%s; on probation for %.0f s" % (outcome.message, probation_s),
                       transaction=transaction)
        self.reply(transaction, "ok", "install", state="probation", model=describe(new), slot=slot)
        self.watch_probation(slot, new, old, transaction)

    def _swap_to(self, slot, recognizer):
        def on_swap(old, new):
            self.app.recognizers[slot] = new  # events emitted from here on carry the new model

        worker = self.app.worker
        done = worker.swap_recognizer(slot, recognizer, on_swap)
        if not done.wait(30.0) and worker.is_alive():
            raise RuntimeError("the recognizer worker did not take the new model within 30 s")
        if not done.is_set():  # worker gone (stopping): nothing reads frames anyway
            self.app.recognizers[slot] = worker.recognizers[slot] = recognizer
        log.info("model %s %s serves now%s (sha256 %s)", recognizer.model.name, recognizer.model.version,
                 _in_slot(slot), recognizer.model.sha256[:12])

    def _between_batches(self, slot):
        """Wait until the worker is between two batches (a swap to the recognizer it already has)."""
        self.app.worker.swap_recognizer(slot, self.app.recognizers[slot]).wait(30.0)

    def watch_probation(self, slot, new, old, transaction):
        while not self.stop_event.is_set():
            problem = self.probation_problem(new, final=False)
            if problem is None and time.monotonic() >= self.probation["until"]:
                problem = self.probation_problem(new, final=True)
                if problem is None:
                    return self.commit(slot, new, old, transaction)
            if problem:
                return self.roll_back(slot, new, old, transaction, problem)
            self.publish_state(slot)
            self.stop_event.wait(POLL_S)
        # stopping during probation: state.json still says probation, so the next start rolls back

    def probation_problem(self, new, final):
        if new.errors:
            return "the new model failed on %d batch(es): %s" % (new.errors, new.last_error)
        now = new.stats()
        if now["crops"] >= self.ota.probation_min_crops and now["old_plates"]:
            share = now["kept"] / float(now["old_plates"])
            if share < 1.0 - self.ota.probation_max_read_drop:
                return ("the new model reads a plate on %d of the %d crops (%.0f%%) where the old one read one; "
                        "at least %.0f%% required" % (now["kept"], now["old_plates"], 100 * share,
                                                       100 * (1.0 - self.ota.probation_max_read_drop)))
            if final and now["kept"] and now["new_mean_score"] < now["old_mean_score"] - \
                    self.ota.probation_max_score_drop:
                return "on the same crops the new model's mean plate score is %.2f, the old one's %.2f" % (
                    now["new_mean_score"], now["old_mean_score"])
        if final and new.installed is not None:
            try:
                check_golden(new.inner, new.installed.folder, new.installed.manifest["golden"],
                             self.ota.golden_tolerance)
            except OtaError as exc:
                return "golden set again at the end of probation: %s" % exc
        return None

    def commit(self, slot, new, old, transaction):
        new.shadow = None
        log.info("model update: probation passed: %s", new.stats())
        self.store.commit(slot)
        self._between_batches(slot)  # a batch still using the old model as shadow ends before it closes
        old.close()
        message = "%s %s is active (serial %d)%s" % (new.model.name, new.model.version, new.installed.serial,
                                                     _in_slot(slot))
        self.store.record({"state": "active", "reason": message, "model": new.installed.describe()}, slot)
        log.info("model update: %s", message)
        self.set_state(slot, "active", message=message, transaction=transaction)
        self.reply(transaction, "ok", "install", state="active", model=describe(new), message=message, slot=slot)

    def roll_back(self, slot, new, old, transaction, problem):
        log.error("model update: probation failed%s: %s; rolling back", _in_slot(slot), problem)
        self.store.rollback(slot, refuse_reason=problem)
        self._swap_to(slot, old)
        new.shadow = None
        new.close()
        message = "rolled back to %s %s: %s" % (old.model.name, old.model.version, problem)
        self.store.record({"state": "rolled_back", "reason": message, "model": new.installed.describe()}, slot)
        self.set_state(slot, "rolled_back", reason="probation_failed", message=message, transaction=transaction)
        self.reply(transaction, "error", "install", error="probation_failed", message=message, slot=slot)

    def rollback_by_command(self, transaction, slot):
        """Back to the slot's previous model (loaded fresh: outside probation the old one is not kept)."""
        from edge.ota.check import load_recognizer

        pointer = self.store.pointer(self.store.read_state(), slot)
        if pointer["active"] is None:
            message = "the config's own model is active%s; there is nothing to roll back to" % _in_slot(slot)
            self.set_state(slot, "failed", reason="nothing_to_roll_back", message=message, transaction=transaction)
            return self.reply(transaction, "error", "rollback", error="nothing_to_roll_back", message=message,
                              slot=slot)
        previous = self.store.previous(slot)
        try:
            if previous is not None:
                recognizer = load_recognizer(previous.model_path, previous.characters_path, previous.name,
                                             previous.version, previous.manifest.get("plate_format"),
                                             self.config.recognizer)
            else:
                m = self.service.config_model(slot)
                recognizer = load_recognizer(m.path, m.characters, m.name, m.version, m.plate_format,
                                             self.config.recognizer)
        except OtaError as exc:
            self.set_state(slot, "failed", reason=exc.code, message="rollback: %s" % exc, transaction=transaction)
            return self.reply(transaction, "error", "rollback", error=exc.code, message=str(exc), slot=slot)
        _, bad = self.store.rollback(slot)
        old = self.app.recognizers[slot]
        self._swap_to(slot, ObservedRecognizer(recognizer, previous))
        self._between_batches(slot)
        old.close()
        message = "rolled back by command from %s %s%s" % (bad.name, bad.version, _in_slot(slot)) if bad else \
            "rolled back"
        self.store.record({"state": "rolled_back", "reason": message, "model": bad.describe() if bad else None}, slot)
        self.set_state(slot, "rolled_back", reason="command", message=message, transaction=transaction)
        self.reply(transaction, "ok", "rollback", model=describe(self.app.recognizers[slot]), message=message,
                   slot=slot)


_COMMAND_SCHEMA = []


def command_problem(command):
    """One line naming what breaks configs/schema/model-command.schema.json, or None."""
    import jsonschema

    from edge import resources

    if not _COMMAND_SCHEMA:
        with open(resources.find_data("configs/schema/model-command.schema.json")) as f:
            _COMMAND_SCHEMA.append(json.load(f))
    errors = sorted(jsonschema.Draft7Validator(_COMMAND_SCHEMA[0]).iter_errors(command),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    where = ".".join(str(p) for p in errors[0].absolute_path) or "(top level)"
    return "%s: %s" % (where, errors[0].message)


def parse_command(payload):
    """bytes -> dict, or OtaError('bad_command') naming the problem."""
    try:
        command = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtaError("bad_command", "the command is not JSON: %s" % exc)
    if not isinstance(command, dict):
        raise OtaError("bad_command", "the command must be a JSON object")
    return command
