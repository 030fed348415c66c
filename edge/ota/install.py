"""The install process, the same offline (`lpr-edge model install`) and in the daemon:

    lock -> download (or a local file) -> unpack into the staging, checking signature, sizes and sha256
    -> policy (kind, name, refused serials, same version, downgrade) -> I/O contract on the real backend
    -> golden set on the real recognizer -> engine build (TensorRT only) -> move into models/<slot>

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
from edge.ota.check import build_engine, check_contract, check_golden, load_recognizer
from edge.ota.download import Download, check_space
from edge.ota.package import open_package
from edge.recognize.model import sha256_file

log = logging.getLogger("edge.ota")

Outcome = namedtuple("Outcome", "noop installed recognizer message")
"""noop: True when the package's version is already active; installed: InstalledModel (in models/, not yet
active); recognizer: the candidate, loaded and checked (the daemon swaps it in; others close it)."""

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


def current_model(store, config_model, kind="recognizer"):
    """What serves now: the active installed model, else the config's (serial 0: any package is newer)."""
    active = store.active(kind)
    if active is not None:
        return active.describe()
    from edge.recognize.model import load_model_info

    info = load_model_info(config_model.path, config_model.characters, config_model.name, config_model.version)
    return {"name": info.name, "version": info.version, "serial": 0, "sha256": info.sha256, "kind": kind,
            "slot": None}


class Installer:
    def __init__(self, store, ota_config, recognizer_config, current, report=None, should_stop=None):
        self.store = store
        self.ota = ota_config
        self.recognizer_config = recognizer_config
        self.current = current  # callable -> dict of the serving model (current_model)
        self.report = report or (lambda state, **detail: None)
        self.should_stop = should_stop or (lambda: False)
        self.keys = load_public_keys(ota_config.public_keys)

    @property
    def max_bytes(self):
        return int(self.ota.max_package_mb * (1 << 20))

    def run(self, source, sha256=None, size=None, allow_downgrade=False):
        """Install the package at `source` (a path or an http(s) URL). Holds the update lock throughout."""
        with self.store.update_lock.acquire("a model update"):
            path = self._fetch(source, sha256, size)
            staging = self.store.new_staging()
            try:
                return self._check_and_move(path, staging, allow_downgrade)
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

    def _check_and_move(self, path, staging, allow_downgrade):
        self.report("verifying")
        pkg_dir = os.path.join(staging, "pkg")
        package = open_package(path, self.keys, self.ota.allow_unsigned, self.max_bytes, dest=pkg_dir)
        manifest = package.manifest
        current = self.current()
        self._policy(manifest, current, allow_downgrade)
        if current.get("version") == manifest["version"] and current.get("name") == manifest["name"]:
            return Outcome(True, None, None, "%s %s is already active; nothing to do" % (manifest["name"],
                                                                                      manifest["version"]))
        if manifest["golden"] is None and self.ota.require_golden_set:
            raise OtaError("no_golden_set", "the package has no golden set and ota.require_golden_set is true")
        _test_pause("verified")
        recognizer = load_recognizer(os.path.join(pkg_dir, manifest["model"]),
                                     os.path.join(pkg_dir, manifest["characters"]), manifest["name"],
                                     manifest["version"], manifest.get("plate_format"), self.recognizer_config)
        try:
            check_contract(recognizer, manifest["contract"])
            accuracy = check_golden(recognizer, pkg_dir, manifest["golden"], self.ota.golden_tolerance)
            started = time.monotonic()
            self.report("building", elapsed_s=0.0)
            build_engine(self.recognizer_config, recognizer.model.path,
                         lambda _f: self.report("building", elapsed_s=round(time.monotonic() - started, 1)))
            slot = "%s-%d-%s" % (manifest["name"], manifest["serial"], recognizer.model.sha256[:12])
            with open(os.path.join(pkg_dir, ".sha256"), "w") as f:
                f.write(recognizer.model.sha256 + "\n")
            folder = self.store.commit_folder(pkg_dir, slot)
            _test_pause("moved")
            recognizer.model = recognizer.model._replace(path=os.path.join(folder, manifest["model"]),
                                                         characters_path=os.path.join(folder, manifest["characters"]))
            installed = self.store.installed(slot)
        except BaseException:
            recognizer.close()
            raise
        golden = "golden set %.1f%%" % (100 * accuracy) if accuracy is not None else "no golden set"
        return Outcome(False, installed, recognizer, "%s %s (serial %d, %s, signed by %s) checked and installed"
                       % (installed.name, installed.version, installed.serial, golden, package.signed_by or "nobody"))

    def _policy(self, manifest, current, allow_downgrade):
        if manifest["kind"] != "recognizer":
            raise OtaError("kind_unsupported", "the package holds a %s model; this daemon installs recognizers only"
                           % manifest["kind"])
        name = manifest["name"]
        if current.get("name") not in [name] + list(manifest.get("replaces", [])):
            raise OtaError("wrong_model", "the package holds %r, which does not replace the active model %r (its "
                                          "manifest's replaces: %s)" % (name, current.get("name"),
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
