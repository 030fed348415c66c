"""The TensorRT engine cache for real: real files, real processes, a real SIGKILL. The builder here returns
bytes in place of TensorRT's plan (this machine has no GPU); everything else is the cache's own code."""
import errno
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from edge.infer import engine_cache
from edge.infer.engine_cache import KEY_PARTS, EngineCache, EngineCacheError, EngineRejected
from helpers import ROOT, wait_for

CHILD = os.path.join(ROOT, "tests", "engine_cache_child.py")
PARTS = {"model": "us_lprnet", "model_sha256": "a" * 64, "tensorrt": "8.5.2.2", "gpu": "Xavier",
         "compute_capability": "7.2", "jetson_module": "xavier-nx", "l4t": "35.4.1", "precision": "fp16",
         "batch_profile": [1, 32, 32], "dla_core": -1, "workspace_mb": 512, "layout": engine_cache.LAYOUT}
CHANGED = {"model": "ch_lprnet", "model_sha256": "b" * 64, "tensorrt": "8.5.2.3", "gpu": "Orin",
           "compute_capability": "8.7", "jetson_module": "agx-xavier", "l4t": "35.5.0", "precision": "fp32",
           "batch_profile": [1, 16, 32], "dla_core": 0, "workspace_mb": 256, "layout": engine_cache.LAYOUT + 1}


class Builder:
    def __init__(self, plan=b"PLAN-1"):
        self.plan, self.calls = plan, 0

    def __call__(self):
        self.calls += 1
        return self.plan + b"-%d" % self.calls, ["[W] onnx2trt_utils.cpp:366: Your ONNX model has INT64 weights"]


def load(plan):
    return b"engine:" + plan


def test_build_once_then_reuse_with_a_sidecar(tmp_path):
    cache, build = EngineCache(str(tmp_path / "engines")), Builder()
    engine, record = cache.get_or_build(PARTS, build, load)
    assert engine == b"engine:PLAN-1-1" and record["built"] and build.calls == 1
    engine2, record2 = EngineCache(str(tmp_path / "engines")).get_or_build(PARTS, build, load)
    assert engine2 == engine and not record2["built"] and build.calls == 1
    engine_path, sidecar_path = cache.paths(PARTS)
    sidecar = json.load(open(sidecar_path))
    assert sidecar["parts"] == PARTS and sidecar["engine_bytes"] == len(b"PLAN-1-1")
    assert sidecar["warnings"] == ["[W] onnx2trt_utils.cpp:366: Your ONNX model has INT64 weights"]
    assert sidecar["build_seconds"] >= 0 and sidecar["built_at"].endswith("Z")
    assert os.path.basename(engine_path).startswith("us_lprnet-") and engine_path.endswith(".engine")


@pytest.mark.parametrize("part", [p for p in KEY_PARTS])
def test_every_key_part_invalidates(tmp_path, part):
    cache, build = EngineCache(str(tmp_path)), Builder()
    cache.get_or_build(PARTS, build, load)
    other = dict(PARTS, **{part: CHANGED[part]})
    assert cache.paths(other) != cache.paths(PARTS)
    _, record = cache.get_or_build(other, build, load)
    assert record["built"] and build.calls == 2
    _, record = cache.get_or_build(PARTS, build, load)  # the first is still there (keep=2)
    assert not record["built"] and build.calls == 2


def test_foreign_engine_under_our_name_is_set_aside_and_rebuilt(tmp_path, caplog):
    cache, build = EngineCache(str(tmp_path)), Builder()
    other = dict(PARTS, gpu="NVIDIA Tegra X1", compute_capability="5.3")
    cache.get_or_build(other, build, load)
    ours_engine, ours_sidecar = cache.paths(PARTS)
    theirs_engine, theirs_sidecar = cache.paths(other)
    os.rename(theirs_engine, ours_engine)  # copied from another device under this device's name
    os.rename(theirs_sidecar, ours_sidecar)
    with caplog.at_level(logging.WARNING, "edge.infer"):
        _, record = cache.get_or_build(PARTS, build, load)
    assert record["built"] and build.calls == 2
    assert "built for something else" in caplog.text and "compute_capability" in caplog.text
    assert len(os.listdir(str(tmp_path / "rejected"))) == 2


def test_damaged_engine_is_set_aside_and_rebuilt(tmp_path, caplog):
    cache, build = EngineCache(str(tmp_path)), Builder()
    cache.get_or_build(PARTS, build, load)
    engine_path, _ = cache.paths(PARTS)
    with open(engine_path, "r+b") as f:
        f.write(b"XX")
    with caplog.at_level(logging.WARNING, "edge.infer"):
        engine, record = cache.get_or_build(PARTS, build, load)
    assert record["built"] and engine == b"engine:PLAN-1-2" and "damaged" in caplog.text


def test_engine_that_does_not_load_is_rebuilt_once_not_in_a_loop(tmp_path, caplog):
    cache, build = EngineCache(str(tmp_path)), Builder()
    cache.get_or_build(PARTS, build, load)
    loads = []

    def picky(plan):  # TensorRT's deserialize_cuda_engine gives None for the first (an older version's) plan
        loads.append(plan)
        if plan.endswith(b"-1"):
            raise EngineRejected("deserialize_cuda_engine returned None")
        return plan

    with caplog.at_level(logging.WARNING, "edge.infer"):
        engine, record = cache.get_or_build(PARTS, build, picky)
    assert record["built"] and engine == b"PLAN-1-2" and loads == [b"PLAN-1-1", b"PLAN-1-2"]
    assert "does not load here" in caplog.text
    _, record = cache.get_or_build(PARTS, build, picky)
    assert not record["built"] and build.calls == 2


def test_missing_sidecar_or_symlinked_engine_is_not_trusted(tmp_path):
    cache, build = EngineCache(str(tmp_path / "c")), Builder()
    cache.get_or_build(PARTS, build, load)
    engine_path, sidecar_path = cache.paths(PARTS)
    os.remove(sidecar_path)
    assert cache.get_or_build(PARTS, build, load)[1]["built"]
    outside = tmp_path / "downloaded.engine"
    outside.write_bytes(b"PLAN-1-2")
    os.remove(engine_path)
    os.symlink(str(outside), engine_path)
    engine, record = cache.get_or_build(PARTS, build, load)
    assert record["built"] and engine == b"engine:PLAN-1-3"
    assert not os.path.islink(engine_path) and outside.read_bytes() == b"PLAN-1-2"


def test_permissions_folder_0700_files_0600_and_a_foreign_owner_refused(tmp_path):
    folder = tmp_path / "engines"
    cache = EngineCache(str(folder))
    cache.get_or_build(PARTS, Builder(), load)
    assert stat.S_IMODE(os.stat(str(folder)).st_mode) == 0o700
    for name in os.listdir(str(folder)):
        if name.endswith((".engine", ".json")):
            assert stat.S_IMODE(os.stat(str(folder / name)).st_mode) == 0o600, name
    os.chmod(str(folder), 0o777)
    cache.get_or_build(PARTS, Builder(), load)
    assert stat.S_IMODE(os.stat(str(folder)).st_mode) == 0o700
    if os.geteuid() != 0:
        pytest.skip("giving the folder to another user needs root")
    os.chown(str(folder), 4242, 4242)
    with pytest.raises(EngineCacheError) as info:
        cache.get_or_build(PARTS, Builder(), load)
    assert str(folder) in str(info.value) and "uid 4242" in str(info.value)


def test_prune_keeps_the_newest_per_model(tmp_path):
    cache = EngineCache(str(tmp_path), keep=10)
    for i in range(4):
        parts = dict(PARTS, model_sha256="%d" % i * 64)
        cache.get_or_build(parts, Builder(), load)
        os.utime(cache.paths(parts)[0], (1000 + i, 1000 + i))
    cache.get_or_build(dict(PARTS, model="ch_lprnet"), Builder(), load)
    removed = cache.prune(2)
    assert sorted(removed) == sorted(cache.paths(dict(PARTS, model_sha256="%d" % i * 64))[0] for i in (0, 1))
    left = sorted((r["parts"]["model"], r["parts"]["model_sha256"][0]) for r in cache.records())
    assert left == [("ch_lprnet", "a"), ("us_lprnet", "2"), ("us_lprnet", "3")]
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".json") and
                not os.path.exists(str(tmp_path / n).replace(".json", ".engine"))]


def test_a_build_prunes_that_model_to_keep(tmp_path):
    cache = EngineCache(str(tmp_path), keep=2)
    for i in range(3):
        cache.get_or_build(dict(PARTS, model_sha256="%d" % i * 64), Builder(), load)
        time.sleep(0.01)
    assert sorted(r["parts"]["model_sha256"][0] for r in cache.records()) == ["1", "2"]


def test_sigkill_in_the_middle_of_the_write_leaves_no_engine(tmp_path):
    folder, marker = str(tmp_path / "engines"), str(tmp_path / "marker")
    child = subprocess.Popen([sys.executable, CHILD, folder, "hang-in-write", marker])
    try:
        assert wait_for(lambda: os.path.exists(marker), 30), "the child never reached the write"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    names = os.listdir(folder)
    assert not [n for n in names if n.endswith(".engine")] and [n for n in names if ".tmp-" in n]
    cache = EngineCache(folder)
    parts = json.loads(subprocess.check_output([sys.executable, "-c", "import json, engine_cache_child as c; "
                                                "print(json.dumps(c.PARTS))"], cwd=os.path.join(ROOT, "tests")))
    engine, record = cache.get_or_build(parts, lambda: (b"fresh", []), load)
    assert record["built"] and engine == b"engine:fresh"
    assert not [n for n in os.listdir(folder) if ".tmp-" in n]


def test_two_processes_at_once_build_once(tmp_path):
    folder, builds = str(tmp_path / "engines"), str(tmp_path / "builds.log")
    children = [subprocess.Popen([sys.executable, CHILD, folder, "build", builds, "3"], stdout=subprocess.PIPE,
                                 universal_newlines=True) for _ in range(2)]
    records = [json.loads(c.communicate(timeout=60)[0]) for c in children]
    assert [c.returncode for c in children] == [0, 0]
    assert sorted(r["built"] for r in records) == [False, True]
    assert records[0]["engine_sha256"] == records[1]["engine_sha256"]
    assert len(open(builds).read().split()) == 1


def test_a_full_disk_is_an_error_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    cache = EngineCache(str(tmp_path))

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine_cache.os, "fsync", full)
    with pytest.raises(EngineCacheError) as info:
        cache.get_or_build(PARTS, Builder(), load)
    assert "No space left" in str(info.value) and "us_lprnet-" in str(info.value)
    assert not [n for n in os.listdir(str(tmp_path)) if n.endswith(".engine") or ".tmp-" in n]


def test_timing_cache_is_per_device(tmp_path):
    cache = EngineCache(str(tmp_path))
    cache.ensure_folder()
    nano = {"tensorrt": "8.2.1.8", "gpu": "NVIDIA Tegra X1", "compute_capability": "5.3"}
    cache.write_timing_cache(nano, b"timings")
    assert cache.read_timing_cache(nano) == b"timings"
    assert cache.read_timing_cache(dict(nano, tensorrt="8.2.1.9")) == b""


def test_engines_list_and_prune_commands(tmp_path):
    from helpers import run_cli

    folder = tmp_path / "engines"
    cache = EngineCache(str(folder), keep=10)
    for i in range(3):
        parts = dict(PARTS, model_sha256="%d" % i * 64)
        cache.get_or_build(parts, Builder(), load)
        os.utime(cache.paths(parts)[0], (time.time() - 7200 * (3 - i),) * 2)
    result = run_cli("engines", "list", "--dir", str(folder))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count(".engine") == 3 and "us_lprnet (sha256 222222222222)" in out and "TensorRT 8.5.2.2" in out
    assert "batch 1/32/32" in out and "xavier-nx L4T 35.4.1" in out and "6 h old" in out and "INT64" in out
    listed = json.loads(run_cli("engines", "list", "--dir", str(folder), "--json").stdout)
    assert sorted(r["parts"]["model_sha256"][0] for r in listed) == ["0", "1", "2"]
    result = run_cli("engines", "prune", "--dir", str(folder), "--keep", "1")
    assert result.returncode == 0 and "removed 2 engine(s)" in result.stdout
    assert [r["parts"]["model_sha256"][0] for r in cache.records()] == ["2"]
    assert run_cli("engines", "list").returncode == 2  # --config or --dir is required
