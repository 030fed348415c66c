"""Model packages: one uncompressed tar file (schema: configs/schema/model-package.schema.json).

    manifest.json          name, kind, version, serial, I/O contract, golden-set accuracy, min daemon
                           version, optionally the model slot it is meant for, and the size and sha256
                           of every other member
    manifest.sig           Ed25519 signature over manifest.json's exact bytes (signing.py)
    model.onnx             the model (engines never travel: a device builds its own)
    characters.txt         its characters list
    golden/image/<id>.png  labelled crops the device reads before it switches (TAO layout)
    golden/label/<id>.txt

Reading is defensive: only regular files with plain relative names (no '..', no absolute paths, no links,
devices or duplicates), a cap on the package size, the member count and the manifest size; the signature
is checked before anything else is read, and every member must be listed in the signed manifest with its
size and sha256. Nothing is extracted outside the destination folder.
"""
import hashlib
import io
import json
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
import time

from edge import __version__
from edge.ota import KINDS, OtaError, signing
from edge.recognize.model import sha256_file

log = logging.getLogger("edge.ota")

FORMAT = "lpr-edge-model-package/1"
SCHEMA_FILE = "configs/schema/model-package.schema.json"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
MODEL_MEMBER, CHARACTERS_MEMBER, GOLDEN_DIR = "model.onnx", "characters.txt", "golden"
MAX_MEMBERS = 5000
MAX_MANIFEST_BYTES = 4 << 20
CHUNK = 1 << 20


def version_tuple(text):
    return tuple(int(p) for p in str(text).split(".") if p.isdigit())


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- writing -----------------------------------------------------------------------------------
def golden_members(golden_dir):
    """(member name, source path) of a golden set in the TAO layout: every image with a label file."""
    from edge.dataset import IMAGE_EXTENSIONS, resolve_dirs

    image_dir, label_dir = resolve_dirs(golden_dir)
    out = []
    for name in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(name)
        label = os.path.join(label_dir, stem + ".txt")
        if ext.lower() in IMAGE_EXTENSIONS and os.path.isfile(label):
            out.append(("%s/image/%s" % (GOLDEN_DIR, name), os.path.join(image_dir, name)))
            out.append(("%s/label/%s.txt" % (GOLDEN_DIR, stem), label))
    if not out:
        raise OtaError("golden", "%s: no labelled crops (image/<id>.png with label/<id>.txt)" % golden_dir)
    return out


def build_manifest(name, version, serial, contract, files, kind="recognizer", golden=None,
                   min_daemon_version=None, replaces=None, plate_format=None, release_summary=None, slot=None):
    manifest = {
        "format": FORMAT,
        "name": name,
        "kind": kind,
        "version": str(version),
        "serial": int(serial),
        "min_daemon_version": min_daemon_version or __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": MODEL_MEMBER,
        "characters": CHARACTERS_MEMBER,
        "contract": contract,
        "golden": golden,
        "files": files,
    }
    for key, value in (("replaces", replaces), ("plate_format", plate_format), ("release_summary", release_summary),
                       ("slot", slot)):  # optional keys: a package without them stays as it was
        if value:
            manifest[key] = value
    return manifest


def write_package(out_path, manifest, sources, private_key=None):
    """Write the tar atomically (temp file, fsync, rename). `sources`: member name -> path; the manifest's
    `files` must already describe them (see describe_files)."""
    manifest_bytes = (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    folder = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(out_path), suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add_bytes(tar, MANIFEST, manifest_bytes)
                if private_key is not None:
                    _add_bytes(tar, SIGNATURE, signing.sign(manifest_bytes, private_key))
                for member in sorted(sources):
                    info = tar.gettarinfo(sources[member], arcname=member)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    with open(sources[member], "rb") as f:
                        tar.addfile(info, f)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
        fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out_path


def _add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def describe_files(sources):
    return dict((member, {"size": os.path.getsize(path), "sha256": sha256_file(path)})
                for member, path in sources.items())


# --- reading -----------------------------------------------------------------------------------
def _check_member_name(name):
    """A plain relative POSIX path inside the package, or OtaError('unsafe_member')."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise OtaError("unsafe_member", "package member %r has an absolute or odd path" % name)
    parts = name.split("/")
    if any(p in ("..",) for p in parts) or posixpath.normpath(name) != name.rstrip("/"):
        raise OtaError("unsafe_member", "package member %r leaves the package folder or is not a plain path" % name)
    if len(name) > 255:
        raise OtaError("unsafe_member", "package member name is %d characters long" % len(name))


def load_manifest_schema():
    from edge import resources

    with io.open(resources.find_data(SCHEMA_FILE), encoding="utf-8") as f:
        return json.load(f)


def check_manifest(manifest):
    """Schema, format, kind and daemon version of a parsed manifest; OtaError('bad_manifest') otherwise."""
    import jsonschema

    if not isinstance(manifest, dict):
        raise OtaError("bad_manifest", "manifest.json does not hold an object")
    errors = sorted(jsonschema.Draft7Validator(load_manifest_schema()).iter_errors(manifest),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise OtaError("bad_manifest", "manifest.json: %s: %s" % (where, err.message))
    if manifest["kind"] not in KINDS:
        raise OtaError("bad_manifest", "manifest.json: unknown kind %r" % manifest["kind"])
    if version_tuple(manifest["min_daemon_version"]) > version_tuple(__version__):
        raise OtaError("daemon_too_old", "the package needs lpr-edge %s or newer; this is %s"
                       % (manifest["min_daemon_version"], __version__))
    for key in ("model", "characters"):
        if manifest[key] not in manifest["files"]:
            raise OtaError("bad_manifest", "manifest.json: %s %r is not listed under files" % (key, manifest[key]))


class Package:
    """A package file opened for checking: `manifest` (dict), `manifest_bytes`, `signed_by` (key id or None)."""

    def __init__(self, path, manifest, manifest_bytes, signed_by):
        self.path = path
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.signed_by = signed_by


def open_package(path, public_keys, allow_unsigned=False, max_bytes=None, dest=None):
    """Check a package file and, with `dest`, extract its members there (a folder that must not exist yet).

    Order: size cap, tar headers (types, names, count), signature over manifest.json, the manifest's schema,
    then every member against its listed size and sha256 while it is read. Raises OtaError naming the
    problem; returns a Package."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise OtaError("no_package", "%s: %s" % (path, exc.strerror or exc))
    if max_bytes is not None and size > max_bytes:
        raise OtaError("too_large", "%s is %d bytes, more than the %d allowed (ota.max_package_mb)"
                       % (path, size, max_bytes))
    try:
        tar = tarfile.open(path, mode="r:")
    except (tarfile.TarError, EOFError) as exc:
        raise OtaError("not_a_package", "%s is not a model package (an uncompressed tar file): %s" % (path, exc))
    with tar:
        members = _safe_members(tar, path)
        if MANIFEST not in members:
            raise OtaError("not_a_package", "%s has no manifest.json" % path)
        if members[MANIFEST].size > MAX_MANIFEST_BYTES:
            raise OtaError("bad_manifest", "manifest.json is %d bytes; more than %d" % (members[MANIFEST].size,
                                                                                      MAX_MANIFEST_BYTES))
        manifest_bytes = tar.extractfile(members[MANIFEST]).read()
        signed_by = None
        if SIGNATURE in members:
            if members[SIGNATURE].size > 4096:
                raise OtaError("bad_signature_file", "manifest.sig is %d bytes; a signature is under 1 KB"
                               % members[SIGNATURE].size)
            signed_by = signing.verify(manifest_bytes, tar.extractfile(members[SIGNATURE]).read(), public_keys)
        elif not allow_unsigned:
            raise OtaError("unsigned", "%s is not signed (no manifest.sig) and ota.allow_unsigned is false" % path)
        try:
            manifest = json.loads(manifest_bytes.decode("utf-8"))
        except ValueError as exc:
            raise OtaError("bad_manifest", "manifest.json is not JSON: %s" % exc)
        check_manifest(manifest)
        listed = manifest["files"]
        present = set(n for n, m in members.items() if m.isreg()) - {MANIFEST, SIGNATURE}
        for name in sorted(present - set(listed)):
            raise OtaError("unlisted_member", "package member %r is not listed in the manifest" % name)
        for name in sorted(set(listed) - present):
            raise OtaError("missing_member", "the manifest lists %r but the package does not hold it" % name)
        for name in listed:
            _check_member_name(name)
        if dest is not None:
            os.makedirs(dest)
            _write_file(os.path.join(dest, MANIFEST), manifest_bytes)
            if SIGNATURE in members:
                _write_file(os.path.join(dest, SIGNATURE), tar.extractfile(members[SIGNATURE]).read())
        for name in sorted(listed):
            _read_member(tar, members[name], listed[name], dest)
    return Package(path, manifest, manifest_bytes, signed_by)


def _safe_members(tar, path):
    members = {}
    count = 0
    for member in tar:  # reads headers one by one: a huge member list stops at the cap
        count += 1
        if count > MAX_MEMBERS:
            raise OtaError("too_many_members", "%s has more than %d members" % (path, MAX_MEMBERS))
        name = member.name
        _check_member_name(name)
        if member.isdir():
            continue
        if not member.isreg():
            kind = "a link" if (member.issym() or member.islnk()) else "not a regular file"
            raise OtaError("unsafe_member", "package member %r is %s" % (name, kind))
        if name in members:
            raise OtaError("unsafe_member", "package member %r appears twice" % name)
        members[name] = member
    return members


def _write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _read_member(tar, member, expected, dest):
    if member.size != expected["size"]:
        raise OtaError("size_mismatch", "package member %r is %d bytes; the manifest says %d"
                       % (member.name, member.size, expected["size"]))
    digest = hashlib.sha256()
    out = None
    if dest is not None:
        target = os.path.join(dest, *member.name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        out = open(target, "wb")
    try:
        src = tar.extractfile(member)
        remaining = member.size
        while remaining > 0:
            chunk = src.read(min(CHUNK, remaining))
            if not chunk:
                raise OtaError("truncated", "package member %r ends early" % member.name)
            digest.update(chunk)
            if out is not None:
                out.write(chunk)
            remaining -= len(chunk)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    if digest.hexdigest() != expected["sha256"]:
        raise OtaError("sha256_mismatch", "package member %r has sha256 %s; the manifest says %s: the file was "
                                          "changed after signing" % (member.name, digest.hexdigest(),
                                                                     expected["sha256"]))


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)
