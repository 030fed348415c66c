"""Model updates where TensorRT serves: the candidate's engine is built into the engine cache after the golden
set and before the switch, the state topic says `building` with elapsed_s counting up while it builds, and
a build that fails leaves the old model serving with reason build_failed. The daemon runs in this process
(App.init/start, as `lpr-edge run` does) on the recording TensorRT fakes of tests/fake_tensorrt.py, whose
engines really compute (ONNX Runtime on the fake device memory); this machine has no GPU. The broker is a
real mosquitto, the events and states real MQTT messages."""
import glob
import json
import os

import pytest

import fake_tensorrt
from helpers import ROOT, free_port, wait_for
from ota_helpers import make_kit, sha256_file, write_ota_config
from test_ota_daemon import EVENTS, STATE, SHIPPED_VERSION, command, last_state, replies

BUILD_S = 1.6  # each fake engine build takes this long: long enough for a few elapsed_s ticks


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return make_kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture
def app(kit, broker, tmp_path, monkeypatch):
    """A daemon on backend tensorrt (TensorRT 10 fakes), the looping sample, real mosquitto."""
    import yaml

    from edge import app as app_module
    from edge.config import load_config

    _, rec = fake_tensorrt.install(monkeypatch, "10", build_seconds=BUILD_S)
    path = write_ota_config(tmp_path, broker.port, public_keys=[str(kit["pub"])], probation_s=2,
                            probation_min_crops=10)
    with open(path) as f:
        cfg = yaml.safe_load(f)
    cfg["cameras"][0].update(loop=True, pacing="realtime")
    cfg.update(exit_when_sources_end=False, print_events=False, recognizer={"backend": "tensorrt", "max_batch": 8})
    cfg["health"] = {"port": free_port()}
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    daemon = app_module.App(load_config(path))
    daemon.init()
    assert daemon.recognizer.backend.name == "tensorrt" and rec.count("build_serialized_network") == 1
    daemon.start()
    daemon.rec = rec
    daemon.engine_dir = daemon.config.recognizer.engine_dir
    yield daemon
    daemon.stop()


def package(kit, name, transaction):
    return {"transaction": transaction, "action": "install", "url": "file://" + kit[name]}


def test_the_engine_is_built_before_the_switch_with_elapsed_seconds(kit, app, subscriber):
    sub = subscriber("lpr-edge/#")
    assert wait_for(lambda: last_state(sub) is not None and sub.events(EVENTS), 60)
    reply = command(sub, package(kit, "p2", "trt"))
    assert reply["status"] == "ok" and reply["state"] == "probation", reply
    assert wait_for(lambda: any(r.get("state") == "active" for r in replies(sub, "trt")), 60), replies(sub, "trt")
    states = [s for s in sub.events(STATE) if s.get("transaction") == "trt"]
    names = [s["state"] for s in states]
    # the order of the process: checked (verifying: contract, golden set), built, then switched
    assert names.index("verifying") < names.index("building") < names.index("probation"), names
    assert all(n == "building" for n in names[names.index("building"):names.index("probation")]), names
    elapsed = [s["elapsed_s"] for s in states if s["state"] == "building"]
    assert elapsed[0] == 0.0 and elapsed == sorted(elapsed) and elapsed[-1] >= 1.0 and len(set(elapsed)) >= 3, \
        elapsed  # counted up while the fake TensorRT built
    assert all(s["in_progress"] for s in states if s["state"] == "building")
    assert app.rec.count("build_serialized_network") == 2  # the start's engine, then the candidate's
    new_sha = sha256_file(kit["model2"])
    engines = glob.glob(os.path.join(app.engine_dir, "*"))
    assert any(new_sha[:12] in open(p, "rb").read().decode("utf-8", "replace") for p in engines
               if p.endswith(".json")), engines  # in the engine cache, where the next start finds it
    serving = app.recognizers["default"]
    assert serving.backend.name == "tensorrt" and serving.model.sha256 == new_sha
    assert wait_for(lambda: any(e["model"]["sha256"] == new_sha for e in sub.events(EVENTS)), 60)
    assert last_state(sub)["installed_version"] == "2026.12.02"


def test_a_failed_build_leaves_the_old_model_with_reason_build_failed(kit, app, subscriber, monkeypatch):
    import tensorrt

    sub = subscriber("lpr-edge/#")
    assert wait_for(lambda: last_state(sub) is not None and sub.events(EVENTS), 60)

    def out_of_memory(self, network, config):  # as the fake's build_fails, from now on only
        self.logger.log(tensorrt.ILogger.Severity.ERROR, "1: [virtualMemoryBuffer.cpp::resizePhysical] out of memory")
        return None

    monkeypatch.setattr(tensorrt.Builder, "build_serialized_network", out_of_memory)
    old = app.recognizers["default"]
    reply = command(sub, package(kit, "p2", "oom"))
    assert reply["status"] == "error" and reply["error"] == "build_failed", reply
    assert "could not be built" in reply["message"] and "out of memory" in reply["message"]
    assert wait_for(lambda: last_state(sub)["state"] == "failed", 10)
    final = last_state(sub)
    assert final["reason"] == "build_failed" and final["installed_version"] == SHIPPED_VERSION
    assert "building" in [s["state"] for s in sub.events(STATE) if s.get("transaction") == "oom"]
    assert app.recognizers["default"] is old and old.backend.name == "tensorrt"
    assert app.ota.store.active() is None  # the pointer never moved
    n = len(sub.events(EVENTS))
    assert wait_for(lambda: len(sub.events(EVENTS)) > n, 40)  # still reading plates, with the old model
    assert sub.events(EVENTS)[-1]["model"]["version"] == SHIPPED_VERSION
    staging = os.path.join(app.config.state_dir, "models", ".staging")
    assert os.listdir(staging) == []
    with open(os.path.join(ROOT, "configs", "schema", "model-state.schema.json")) as f:
        schema = json.load(f)
    import jsonschema

    for payload in sub.events(STATE):
        jsonschema.validate(payload, schema)
