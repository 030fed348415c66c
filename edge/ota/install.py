"""The install process, the same offline (`lpr-edge model install`) and in the daemon:

    lock -> download (or a local file) -> unpack into the staging, checking signature, sizes and sha256
    -> slot (the command's, else the manifest's, else default; one the config has) -> policy (kind, name
    against the slot's model, refused serials, same version, downgrade) -> I/O contract -> golden set ->
    engine build (TensorRT only) -> move into models/<folder>

Where TensorRT serves the slot, the contract and the golden set run on ONNX Runtime (a bad package is
refused before a build that takes minutes on a Jetson), then the engine is built into the engine cache
with `building` and its elapsed seconds reported, and the golden set runs again on the built engine, which
is the recognizer that is switched to; a build that fails is `build_failed` and nothing changes.

and then the caller switches the pointer (ModelStore.activate): offline at once, in the daemon after the
worker has the new recognizer in hand. Every failure raises OtaError with its reason and leaves the active
model as it was; the staging is removed on the way out (and at the next start, after a SIGKILL)."""
import hashlib
import logging
import os
import shutil
import time
from collections import namedtuple

from edge.ota import OtaError, signing
from edge.ota.check import (build_engine, check_contract, check_golden, load_recognizer, recognizer_on,
                            reference_config, tensorrt_usable)
from edge.ota.download import Download, check_space
from edge.ota.package import open_package
from edge.ota.store import DEFAULT_SLOT, folder_name
from edge.recognize.model import sha256_file

log = logging.getLogger("edge.ota")

Outcome = namedtuple("Outcome", "noop installed recognizer message slot")
"""noop: True when the package's version is already active; installed: InstalledModel (in models/, not yet
active); recognizer: the candidate, loaded and checked (the daemon swaps it in; others close it); slot: the
config's model slot it is for."""

# test hook: pause after the named step so a test can SIGKILL the process exactly there
TEST_PAUSE_ENV = "LPR_EDGE_TEST_OTA_PAUSE"


def _test_pause(step):
    wanted = os.environ.get(TEST_PAUSE_ENV, "")
    if wanted == step:
        log.warning("test hook %s=%s: pausing", TEST_PAUSE_ENV, step)
        with open(os.environ.get(TEST_PAUSE_ENV + "_FILE", os.devnull), "a") as f:
            f.write("%s %d\n" % (step, os.getpid()))
        time.sleep(3600)


def load_public_keys(paths):
    return [signing.load_public_key(p) for p in paths]


def is_url(source):
    return source.lower().startswith(("http://", "https://"))


def current_model(store, config_model, slot=DEFAULT_SLOT, kind="recognizer"):
    """What serves a slot now: its active installed model, else the config's (serial 0: any package is
    newer; folder None)."""
    active = store.active(slot, kind)
    if active is not None:
        return active.describe()
    from edge.recognize.model import load_model_info

    info = load_model_info(config_model.path, config_model.characters, config_model.name, config_model.version)
    return {"name": info.name, "version": info.version, "serial": 0, "sha256": info.sha256, "kind": kind,
            "slot": slot, "folder": None}


class Installer:
    def __init__(self, store, ota_config, recognizer_config, current, report=None, should_stop=None,
                 slots=(DEFAULT_SLOT,), tensorrt_serves=None):
        self.store = store
        self.ota = ota_config
        self.recognizer_config = recognizer_config
        self.current = current  # callable(slot) -> dict of the model serving that slot (current_model)
        self.report = report or (lambda state, **detail: None)
        self.should_stop = should_stop or (lambda: False)
        self.slots = list(slots)  # the config's model slots: an install names one of them
        # callable(slot) -> True where the slot's model runs on TensorRT, so the candidate's engine is built
        # before the switch. Default: the config asks for TensorRT and it imports here (offline installs).
        self.tensorrt_serves = tensorrt_serves or (lambda slot: tensorrt_usable(recognizer_config))
        self.keys = load_public_keys(ota_config.public_keys)
        self.slot_problem = None  # callable(slot) -> (code, message) or None: the daemon's own slot rules
        self.on_slot = None  # callable(slot) once the target slot is known (the daemon's state goes there)

    @property
    def max_bytes(self):
        return int(self.ota.max_package_mb * (1 << 20))

    def check_slot(self, slot):
        """An install into a slot the config does not have is refused (before anything is downloaded)."""
        if self.slot_problem is not None:
            problem = self.slot_problem(slot)
            if problem:
                raise OtaError(*problem)
        elif slot not in self.slots:
            raise OtaError("unknown_slot", "the config has no model slot %r (slots: %s)"
                           % (slot, ", ".join(self.slots)))

    def run(self, source, sha256=None, size=None, allow_downgrade=False, slot=None):
        """Install the package at `source` (a path or an http(s) URL) into `slot` (None: the one its
        manifest names, else default). Holds the update lock throughout."""
        if slot is not None:
            self.check_slot(slot)
        with self.store.update_lock.acquire("a model update"):
            path = self._fetch(source, sha256, size)
            staging = self.store.new_staging()
            try:
                return self._check_and_move(path, staging, allow_downgrade, slot)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                if is_url(source) and os.path.exists(path):
                    os.unlink(path)

    def _fetch(self, source, sha256, size):
        if not is_url(source):
            path = source[len("file://"):] if source.startswith("file://") else source
            if not os.path.isfile(path):
                raise OtaError("no_package", "%s: no such file" % path)
            if size is not None and os.path.getsize(path) != size:
                raise OtaError("size_mismatch", "%s is %d bytes; the command said %d" % (path, os.path.getsize(path),
                                                                                        size))
            digest = sha256_file(path) if sha256 is not None else None
            if digest is not None and digest != sha256.lower():
                raise OtaError("sha256_mismatch", "%s has sha256 %s; the command said %s" % (path, digest, sha256))
            check_space(self.store.root, os.path.getsize(path))
            return path
        key = (sha256 or hashlib.sha256(source.encode("utf-8")).hexdigest())[:32]
        dest = os.path.join(self.store.downloads, key + ".tar")
        self.report("downloading", percent=0.0)

        def progress(done, total):
            self.report("downloading", percent=round(100.0 * done / total, 1) if total else None)

        download = Download(source, dest, size=size, sha256=sha256, max_bytes=self.max_bytes,
                            timeout_s=self.ota.download_timeout_s, retries=self.ota.download_retries,
                            progress=progress, should_stop=self.should_stop)
        path = download.run()
        log.info("downloaded %s (%d bytes%s)", source, os.path.getsize(path),
                 ", resumed at %s" % download.resumed_from if download.resumed_from else "")
        _test_pause("downloaded")
        return path

    def _target_slot(self, asked, manifest):
        """The command's slot, else the one the manifest is meant for, else default; the two must agree."""
        meant = manifest.get("slot")
        if asked is not None and meant is not None and asked != meant:
            raise OtaError("wrong_slot", "the package is meant for model slot %r, not %r (its manifest's slot)"
                           % (meant, asked))
        slot = asked or meant or DEFAULT_SLOT
        self.check_slot(slot)
        if self.on_slot is not None:
            self.on_slot(slot)
        return slot

    def _check_and_move(self, path, staging, allow_downgrade, asked_slot):
        self.report("verifying")
        pkg_dir = os.path.join(staging, "pkg")
        package = open_package(path, self.keys, self.ota.allow_unsigned, self.max_bytes, dest=pkg_dir)
        manifest = package.manifest
        slot = self._target_slot(asked_slot, manifest)
        current = self.current(slot)
        self._policy(manifest, current, allow_downgrade, slot)
        if current.get("version") == manifest["version"] and current.get("name") == manifest["name"]:
            return Outcome(True, None, None, "%s %s is already active%s; nothing to do" % (
                manifest["name"], manifest["version"], _in_slot(slot)), slot)
        if manifest["golden"] is None and self.ota.require_golden_set:
            raise OtaError("no_golden_set", "the package has no golden set and ota.require_golden_set is true")
        _test_pause("verified")
        tensorrt = self.recognizer_config.backend == "tensorrt" and self.tensorrt_serves(slot)
        recognizer = load_recognizer(os.path.join(pkg_dir, manifest["model"]),
                                     os.path.join(pkg_dir, manifest["characters"]), manifest["name"],
                                     manifest["version"], manifest.get("plate_format"),
                                     reference_config(self.recognizer_config) if tensorrt else self.recognizer_config)
        try:
            check_contract(recognizer, manifest["contract"])
            accuracy = check_golden(recognizer, pkg_dir, manifest["golden"], self.ota.golden_tolerance)
            if tensorrt:  # _build closes the checked one whatever happens, and its own on a failure
                checked, recognizer = recognizer, None
                recognizer = self._build(checked, pkg_dir, manifest)
            name = folder_name(manifest, recognizer.model.sha256, slot)
            with open(os.path.join(pkg_dir, ".sha256"), "w") as f:
                f.write(recognizer.model.sha256 + "\n")
            folder = self.store.commit_folder(pkg_dir, name)
            _test_pause("moved")
            recognizer.model = recognizer.model._replace(path=os.path.join(folder, manifest["model"]),
                                                         characters_path=os.path.join(folder, manifest["characters"]))
            installed = self.store.installed(name, slot)
        except BaseException:
            if recognizer is not None:
                recognizer.close()
            raise
        golden = "golden set %.1f%%" % (100 * accuracy) if accuracy is not None else "no golden set"
        return Outcome(False, installed, recognizer, "%s %s (serial %d, %s, signed by %s) checked and installed%s"
                       % (installed.name, installed.version, installed.serial, golden, package.signed_by or "nobody",
                          _in_slot(slot)), slot)

    def _build(self, checked, pkg_dir, manifest):
        """The TensorRT engine of a checked candidate, built into the engine cache while `building` says
        how long it has taken; then the golden set on the engine itself (FP16 may move a crop: the
        tolerance applies). Returns the candidate on TensorRT; closes the ONNX Runtime one it was checked on."""
        started = time.monotonic()
        self.report("building", elapsed_s=0.0)
        try:
            session = build_engine(self.recognizer_config, checked.model.path,
                                   lambda elapsed: self.report("building", elapsed_s=round(elapsed, 1)))
        finally:
            checked.close()
        recognizer = recognizer_on(session, checked)
        try:
            check_golden(recognizer, pkg_dir, manifest["golden"], self.ota.golden_tolerance)
        except BaseException:
            recognizer.close()
            raise
        log.info("TensorRT engine for %s %s built in %.1f s", manifest["name"], manifest["version"],
                 time.monotonic() - started)
        return recognizer

    def _policy(self, manifest, current, allow_downgrade, slot=DEFAULT_SLOT):
        if manifest["kind"] != "recognizer":
            raise OtaError("kind_unsupported", "the package holds a %s model; this daemon installs recognizers only"
                           % manifest["kind"])
        name = manifest["name"]
        if current.get("name") not in [name] + list(manifest.get("replaces", [])):
            raise OtaError("wrong_model", "the package holds %r, which does not replace the active model %r%s (its "
                                          "manifest's replaces: %s)" % (name, current.get("name"), _in_slot(slot),
                                                                        manifest.get("replaces") or "none"))
        state = self.store.read_state()
        if self.store.is_refused(state, name, manifest["serial"]):
            raise OtaError("refused_serial", "%s serial %d was refused before (it failed its probation)"
                           % (name, manifest["serial"]))
        if manifest["version"] == current.get("version"):
            return
        serial = current.get("serial") or 0
        if manifest["serial"] <= serial and not allow_downgrade:
            raise OtaError("downgrade", "the package's serial %d is not above the active model's %d; send "
                                        "allow_downgrade to install it anyway" % (manifest["serial"], serial))


def _in_slot(slot):
    """' in slot X' for messages, nothing for the default slot (as before slots existed)."""
    return "" if slot == DEFAULT_SLOT else " in slot %s" % slot
