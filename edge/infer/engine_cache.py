"""The TensorRT engine cache: `<state_dir>/engines` (under systemd the unit's cache directory).

A serialized engine is tied to the exact TensorRT version and GPU, so the key holds everything an engine
depends on (KEY_PARTS); a JSON sidecar beside each engine records them, the engine's sha256, the build time
and the TensorRT log's warnings. Engines are executable code: they are loaded only from this directory (mode
0700, owned by this user, regular files, never symlinks), never from a path in a config or a download.

    cache = EngineCache(folder)
    engine, record = cache.get_or_build(parts, build, load)

`build()` -> (plan bytes, [warnings]); `load(plan)` -> the deserialized engine, or raises EngineRejected (an
engine of another TensorRT or GPU deserializes to None). Under one file lock (fcntl) for the folder: a second
process waits for the first's build and reuses it, and a Nano never runs two builds at once. Writes are atomic
(temp file, fsync, rename), so a build killed mid-write leaves no engine behind; a damaged, foreign or
unloadable engine is set aside under rejected/ and rebuilt, never a crash loop. After a build the folder keeps
the newest `keep` engines per model.
"""
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import stat
import time

log = logging.getLogger("edge.infer")

LAYOUT = 1  # bump when the file layout or the key's meaning changes
KEY_PARTS = ("model", "model_sha256", "tensorrt", "gpu", "compute_capability", "jetson_module", "l4t",
             "precision", "batch_profile", "dla_core", "workspace_mb", "layout")
REJECTED_KEEP = 4


class EngineCacheError(RuntimeError):
    """The cache folder cannot be trusted or written; the message names it and why."""


class EngineRejected(Exception):
    """An engine file that does not load here (raised by the `load` callback)."""


def cache_key(parts):
    missing = [k for k in KEY_PARTS if k not in parts]
    if missing:
        raise ValueError("engine key lacks %s" % ", ".join(missing))
    text = json.dumps({k: parts[k] for k in KEY_PARTS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def atomic_write(path, data, mode=0o600):
    """Write `data` to `path` so that a reader sees the old file or the whole new one, never a part."""
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, ".%s.tmp-%d" % (base, os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data)
            for start in range(0, len(view), 1 << 22):
                f.write(view[start:start + (1 << 22)])
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    dirfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dirfd)  # the rename itself survives a power cut
    finally:
        os.close(dirfd)


def _remove(path):
    try:
        os.remove(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


class EngineCache:
    def __init__(self, folder, keep=2):
        self.folder = os.path.abspath(folder)
        self.keep = max(1, int(keep))

    # --- the folder ---------------------------------------------------------------------------------
    def ensure_folder(self):
        """Create the folder 0700; refuse one another user owns (it could hand us engines to run)."""
        try:
            os.makedirs(self.folder, 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise EngineCacheError("engine cache %s: cannot create it: %s" % (self.folder, exc.strerror))
        st = os.lstat(self.folder)
        if not stat.S_ISDIR(st.st_mode):
            raise EngineCacheError("engine cache %s: not a folder (a symlink or a file)" % self.folder)
        if st.st_uid != os.geteuid():
            raise EngineCacheError("engine cache %s: owned by uid %d, not this user (uid %d); engines are "
                                   "executable code, so they load only from a folder of our own"
                                   % (self.folder, st.st_uid, os.geteuid()))
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.folder, 0o700)
        return self.folder

    def paths(self, parts):
        stem = "%s-%s" % (_safe(parts["model"]), cache_key(parts))
        return os.path.join(self.folder, stem + ".engine"), os.path.join(self.folder, stem + ".json")

    # --- get or build -------------------------------------------------------------------------------
    def get_or_build(self, parts, build, load, on_wait=None):
        """(engine, record): the cached engine for `parts`, or a new one from `build()`. record['built'] says
        which; record['build_seconds'] how long a build took."""
        self.ensure_folder()
        with _FolderLock(os.path.join(self.folder, "cache.lock"), on_wait):
            self._clear_stale_temps()
            engine_path, sidecar_path = self.paths(parts)
            plan, record = self._read_valid(parts, engine_path, sidecar_path)
            if plan is not None:
                try:
                    engine = load(plan)
                    record["built"] = False
                    return engine, record
                except EngineRejected as exc:
                    self.set_aside(engine_path, sidecar_path, "it does not load here: %s" % exc)
            start = time.monotonic()
            plan, warnings = build()
            plan = bytes(plan)
            seconds = round(time.monotonic() - start, 2)
            record = {"key": cache_key(parts), "parts": {k: parts[k] for k in KEY_PARTS},
                      "engine_sha256": sha256_bytes(plan), "engine_bytes": len(plan),
                      "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "build_seconds": seconds,
                      "warnings": list(warnings or [])}
            try:
                atomic_write(engine_path, plan)
                atomic_write(sidecar_path, json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
            except (IOError, OSError) as exc:
                _remove(engine_path)
                raise EngineCacheError("engine cache %s: cannot write %s: %s"
                                       % (self.folder, os.path.basename(engine_path), exc.strerror or exc))
            engine = load(plan)
            record["built"] = True
            self.prune(self.keep, model=parts["model"])
            return engine, record

    def _read_valid(self, parts, engine_path, sidecar_path):
        """(plan, record) of a trustworthy cached engine, else (None, None); anything suspect is set aside."""
        if not os.path.lexists(engine_path):
            if os.path.lexists(sidecar_path):
                _remove(sidecar_path)
            return None, None
        st = os.lstat(engine_path)
        if not stat.S_ISREG(st.st_mode):
            self.set_aside(engine_path, sidecar_path, "not a regular file (a symlink?)")
            return None, None
        try:
            with io.open(sidecar_path, "rb") as f:
                record = json.loads(f.read().decode("utf-8"))
        except (IOError, OSError, ValueError) as exc:
            self.set_aside(engine_path, sidecar_path, "its sidecar %s is missing or unreadable (%s)"
                           % (os.path.basename(sidecar_path), exc))
            return None, None
        theirs = record.get("parts") or {}
        differ = [k for k in KEY_PARTS if theirs.get(k) != parts[k]]
        if differ:
            self.set_aside(engine_path, sidecar_path, "built for something else (%s)" % ", ".join(
                "%s %s, here %s" % (k, json.dumps(theirs.get(k)), json.dumps(parts[k])) for k in differ))
            return None, None
        fd = os.open(engine_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            plan = f.read()
        if sha256_bytes(plan) != record.get("engine_sha256"):
            self.set_aside(engine_path, sidecar_path, "damaged (sha256 differs from its sidecar's)")
            return None, None
        return plan, record

    def set_aside(self, engine_path, sidecar_path, reason):
        """Move a suspect engine (and its sidecar) to rejected/, keeping a few for a post-mortem."""
        rejected = os.path.join(self.folder, "rejected")
        if not os.path.isdir(rejected):
            os.mkdir(rejected, 0o700)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        for path in (engine_path, sidecar_path):
            if os.path.lexists(path):
                os.rename(path, os.path.join(rejected, "%s.%s" % (os.path.basename(path), stamp)))
        log.warning("engine %s set aside (%s): %s; building a new one", engine_path, rejected, reason)
        old = sorted(os.listdir(rejected), key=lambda n: os.lstat(os.path.join(rejected, n)).st_mtime)
        for name in old[:-2 * REJECTED_KEEP]:
            _remove(os.path.join(rejected, name))

    def _clear_stale_temps(self):
        """Temp files of a build that was killed mid-write (we hold the lock: nobody is writing them)."""
        for name in os.listdir(self.folder):
            if name.startswith(".") and ".tmp-" in name:
                _remove(os.path.join(self.folder, name))

    # --- list / prune -------------------------------------------------------------------------------
    def records(self):
        """Every engine in the folder with its sidecar: dicts with path, size, age_s and the sidecar's keys."""
        out = []
        if not os.path.isdir(self.folder):
            return out
        for name in sorted(os.listdir(self.folder)):
            if not name.endswith(".engine"):
                continue
            path = os.path.join(self.folder, name)
            try:
                with io.open(path[:-len(".engine")] + ".json", "rb") as f:
                    record = json.loads(f.read().decode("utf-8"))
            except (IOError, OSError, ValueError):
                record = {"parts": {}, "warnings": [], "problem": "no readable sidecar"}
            st = os.lstat(path)
            record.update(path=path, size=st.st_size, age_s=round(time.time() - st.st_mtime, 1), mtime=st.st_mtime)
            out.append(record)
        return out

    def prune(self, keep, model=None):
        """Keep the newest `keep` engines per model (all models, or one); return the paths removed."""
        by_model = {}
        for record in self.records():
            name = record["parts"].get("model") or os.path.basename(record["path"]).rsplit("-", 1)[0]
            if model is None or name == model:
                by_model.setdefault(name, []).append(record)
        removed = []
        for records in by_model.values():
            records.sort(key=lambda r: r["mtime"], reverse=True)
            for record in records[max(1, keep):]:
                _remove(record["path"])
                _remove(record["path"][:-len(".engine")] + ".json")
                removed.append(record["path"])
        if removed:
            log.info("engine cache %s: pruned %d old engine(s), keeping the newest %d per model",
                     self.folder, len(removed), keep)
        return removed

    # --- timing cache -------------------------------------------------------------------------------
    def timing_cache_path(self, device_parts):
        """One timing cache per TensorRT version and GPU (it holds kernel timings, valid across models)."""
        text = json.dumps(device_parts, sort_keys=True)
        return os.path.join(self.folder, "timing-%s.cache" % hashlib.sha256(text.encode("utf-8")).hexdigest()[:12])

    def read_timing_cache(self, device_parts):
        path = self.timing_cache_path(device_parts)
        try:
            with io.open(path, "rb") as f:
                return f.read()
        except (IOError, OSError):
            return b""

    def write_timing_cache(self, device_parts, data):
        if data:
            atomic_write(self.timing_cache_path(device_parts), bytes(data))


def _safe(name):
    return "".join(c if c.isalnum() or c in "._" else "_" for c in str(name))[:64] or "model"


class _FolderLock:
    """An exclusive flock on the cache folder's lock file; `on_wait()` runs once if another holds it."""

    def __init__(self, path, on_wait=None):
        self.path, self.on_wait = path, on_wait
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            log.info("engine cache: another process is building an engine; waiting for it (%s)", self.path)
            if self.on_wait is not None:
                self.on_wait()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        return False
