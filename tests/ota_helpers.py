"""Helpers for the model-update tests: a golden set of real plate crops (the sample video's ROI, labelled
from samples/gate_us.mp4.plates.txt), re-saved copies of the shipped model (same reads, another sha256),
package tampering, and a loopback HTTP server that serves files and can truncate, stall or ignore ranges."""
import hashlib
import http.server
import io
import json
import os
import shutil
import socketserver
import tarfile
import threading
import time

import onnx

from helpers import ROOT, free_port

US_MODEL = os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")
US_CHARS = os.path.join(ROOT, "models", "us_lp_characters.txt")
US_NAME = "us_lprnet_baseline10_mid"


def sample_golden_set(out_dir, per_plate=2):
    """scripts/sample_golden_set.py: real crops of the sample video labelled from plates.txt."""
    import sys

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from sample_golden_set import sample_golden_set as make

    counts = make(out_dir, per_plate)
    assert len(counts) >= 4, counts
    return out_dir


def resaved_model(path, tag):
    """The shipped US model with a metadata entry added: identical reads, a different sha256."""
    model = onnx.load(US_MODEL)
    entry = model.metadata_props.add()
    entry.key, entry.value = "lpr-edge-test", tag
    onnx.save(model, str(path))
    return str(path)


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def rewrite_package(src, dst, replace=None, add=None, drop=(), member_hook=None):
    """Copy a package tar, replacing member bytes (`replace`: name -> bytes), adding raw TarInfo members
    (`add`: list of (TarInfo, bytes or None)) and dropping names."""
    replace = replace or {}
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for member in tin.getmembers():
            if member.name in drop:
                continue
            data = replace.get(member.name)
            if data is None:
                data = tin.extractfile(member).read()
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            info.mode = 0o644
            tout.addfile(info, io.BytesIO(data))
        for info, data in add or []:
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def read_member(package, name):
    with tarfile.open(package) as tar:
        return tar.extractfile(name).read()


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True  # a stalled handler must not hold up the next request (or the shutdown)


class FileServer:
    """http.server on a free loopback port serving files from a folder, with Range support and faults:
    `truncate_once` cuts the next full response at that many bytes; `stall_s` sleeps mid-body;
    `ignore_range` answers 200 to range requests. `requests` records (path, Range, If-Range)."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.truncate_once = None
        self.stall_s = 0.0
        self.ignore_range = False
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range"), self.headers.get("If-Range")))
                path = os.path.join(server.folder, self.path.lstrip("/"))
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                with open(path, "rb") as f:
                    data = f.read()
                etag = '"%s"' % hashlib.sha256(data).hexdigest()[:16]
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range and self.headers.get("If-Range") in (None, etag):
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", "bytes */%d" % len(data))
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.end_headers()
                cut = server.truncate_once
                if cut is not None:
                    server.truncate_once = None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if server.stall_s:
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    time.sleep(server.stall_s)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.port = free_port()
        self.httpd = _ThreadingServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name):
        return "http://127.0.0.1:%d/%s" % (self.port, name)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def write_ota_config(tmp_path, broker_port=1883, state_dir=None, **ota):
    """A demo config (sample video, shipped model) with an ota section; returns its path."""
    import yaml

    with io.open(os.path.join(ROOT, "configs", "demo.yaml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["model"]["path"] = US_MODEL
    cfg["cameras"][0]["source"] = os.path.join(ROOT, "samples", "gate_us.mp4")
    cfg["state_dir"] = str(state_dir or (tmp_path / "state"))
    cfg["mqtt"]["port"] = broker_port
    cfg["health"] = {"port": 0}
    cfg["ota"] = ota
    path = os.path.join(str(tmp_path), "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def copy(src, dst):
    shutil.copyfile(src, dst)
    return dst


def manifest_of(package):
    return json.loads(read_member(package, "manifest.json").decode("utf-8"))


def forge(path, model, characters, key, contract=None, golden_dir=None, golden=None, name=US_NAME, version="9",
          serial=9, kind="recognizer"):
    """A package signed by `key` around any files, skipping pack's checks (as an attacker or a broken build
    system could make one)."""
    from edge.ota import signing
    from edge.ota.package import (CHARACTERS_MEMBER, MODEL_MEMBER, build_manifest, describe_files,
                                  golden_members, write_package)

    sources = {MODEL_MEMBER: model, CHARACTERS_MEMBER: characters}
    if golden_dir:
        sources.update(golden_members(golden_dir))
        golden = golden or {"path": "golden", "count": len(os.listdir(os.path.join(golden_dir, "label"))),
                            "plate_accuracy": 1.0}
    if contract is None:
        contract = {"input": {"name": "image_input", "shape": ["N", 3, 48, 96], "dtype": "float32"},
                    "outputs": ["tf_op_layer_ArgMax", "tf_op_layer_Max"], "classes": 36}
        try:  # what the model really has, where ONNX Runtime loads it
            from edge.ota.check import load_recognizer, measure_contract

            recognizer = load_recognizer(model, characters)
            contract = measure_contract(recognizer)
            recognizer.close()
        except Exception:
            pass
    manifest = build_manifest(name, version, serial, contract, describe_files(sources), golden=golden, kind=kind)
    write_package(str(path), manifest, sources, signing.load_private_key(key) if key else None)
    return str(path)


def make_kit(root):
    """Golden set, two signing keys, and packages of re-saved shipped models (serials 2 and 3)."""
    from edge.ota import signing
    from edge.ota.pack import pack

    root = str(root)
    kit = {"root": root, "golden": sample_golden_set(os.path.join(root, "golden"))}
    kit["key"] = os.path.join(root, "signing.key")
    signing.keygen(kit["key"])
    kit["pub"] = kit["key"] + ".pub"
    other = os.path.join(root, "other.key")
    signing.keygen(other)
    kit["other_key"], kit["other_pub"] = other, other + ".pub"
    for serial in (2, 3):
        model = resaved_model(os.path.join(root, "m%d.onnx" % serial), "v%d" % serial)
        kit["model%d" % serial] = model
        kit["p%d" % serial] = os.path.join(root, "p%d.tar" % serial)
        pack(model, kit["p%d" % serial], US_NAME, "2026.12.0%d" % serial, serial, key_path=kit["key"],
             characters_path=US_CHARS, golden_dir=kit["golden"], release_summary="test release %d" % serial)
    return kit
