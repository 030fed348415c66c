"""Ed25519 keys and signatures over a package manifest (the SWUpdate pattern: sign the small manifest,
which carries the sha256 of every file, not the files). Keys are PEM files: the private key PKCS#8
(mode 0600), the public key SubjectPublicKeyInfo. A key's id is the first 16 hex digits of the sha256 of
its raw 32 bytes; a signature names the id of the key that made it, so a device with several trusted keys
(rotation) knows which to try and can say "unknown key" apart from "bad signature"."""
import base64
import hashlib
import io
import json
import os
import warnings

from edge.ota import OtaError

ALGORITHM = "ed25519"


def _crypto():
    # cryptography 40.0.2, the last for Python 3.6 (JetPack 4.6), warns on every import that 3.6 is
    # deprecated: known and chosen, so kept out of the daemon's log and the CLI's one-line errors
    warnings.filterwarnings("ignore", message="Python 3.6 is no longer supported")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def key_id(public_key):
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_new(path, data, mode):
    """Create `path` with `mode` from the start (never a moment world-readable); refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def keygen(path):
    """Write a new private key to `path` (0600) and its public key to `path`.pub; returns the key id."""
    serialization, ed25519 = _crypto()
    for p in (path, path + ".pub"):
        if os.path.exists(p):
            raise OtaError("exists", "%s already exists; not overwriting a key" % p)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        os.makedirs(folder, 0o700)
    private = ed25519.Ed25519PrivateKey.generate()
    _write_new(path, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
    public = private.public_key()
    _write_new(path + ".pub", public.public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return key_id(public)


def _read(path, what):
    try:
        with io.open(path, "rb") as f:
            return f.read()
    except (IOError, OSError) as exc:
        raise OtaError("bad_key", "%s: cannot read %s: %s" % (path, what, exc.strerror or exc))


def load_private_key(path):
    serialization, ed25519 = _crypto()
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise OtaError("bad_key", "%s: not an unencrypted PEM private key (%s)" % (path, exc))
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise OtaError("bad_key", "%s: not an Ed25519 key" % path)
    return key


def load_public_key(path):
    serialization, ed25519 = _crypto()
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise OtaError("bad_key", "%s: not a PEM public key (%s)" % (path, exc))
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise OtaError("bad_key", "%s: not an Ed25519 public key" % path)
    return key


def sign(manifest_bytes, private_key):
    """The signature document (bytes of a small JSON) stored as manifest.sig beside manifest.json."""
    doc = {"algorithm": ALGORITHM, "key_id": key_id(private_key.public_key()),
           "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii")}
    return (json.dumps(doc, sort_keys=True) + "\n").encode("utf-8")


def verify(manifest_bytes, signature_bytes, public_keys):
    """Check manifest.sig against the trusted keys; returns the signing key's id. OtaError codes:
    bad_signature_file, unknown_key (signed, but by no trusted key), bad_signature (the manifest or the
    signature was changed after signing)."""
    from cryptography.exceptions import InvalidSignature

    try:
        doc = json.loads(signature_bytes.decode("utf-8"))
        algorithm, kid = doc["algorithm"], doc["key_id"]
        signature = base64.b64decode(doc["signature"].encode("ascii"), validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OtaError("bad_signature_file", "manifest.sig is not a signature document (%s)" % exc)
    if algorithm != ALGORITHM:
        raise OtaError("bad_signature_file", "manifest.sig uses %r; only %s is accepted" % (algorithm, ALGORITHM))
    by_id = dict((key_id(k), k) for k in public_keys)
    if kid not in by_id:
        raise OtaError("unknown_key", "signed by key %s, which is not one of the trusted keys (%s)"
                       % (kid, ", ".join(sorted(by_id)) or "none configured"))
    try:
        by_id[kid].verify(signature, manifest_bytes)
    except InvalidSignature:
        raise OtaError("bad_signature", "the signature by key %s does not match the manifest: the manifest or "
                                        "its signature was changed after signing" % kid)
    return kid
