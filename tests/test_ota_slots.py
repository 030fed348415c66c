"""Model slots: a camera reads with the model of its slot (config `model:` is slot default, `models:` the
others), a batch never mixes models, events carry the model that read them, and updates, rollback,
probation and the retained state work per slot. The daemon tests run `lpr-edge run` on the looping sample
video with two cameras over a real mosquitto; the offline ones run the CLI on a state directory."""
import json
import os
import threading
import urllib.request

import jsonschema
import numpy as np
import pytest
import yaml

from edge.config.model import RecognizerConfig
from edge.queues import FrameMailbox
from edge.recognize.worker import RecognizerWorker
from helpers import ROOT, free_port, run_cli, wait_for
from ota_helpers import US_CHARS, US_MODEL, make_kit, resaved_model, sha256_file
from test_ota_daemon import EVENTS, RESPONSE, SHIPPED_VERSION, STATE, Daemon, command, last_state, replies

EU_STATE = "lpr-edge/demo/model/eu/state"
EU_NAME, EU_VERSION = "eu_lprnet", "2026.10.01"


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """make_kit's packages (the default slot's model), plus the eu slot's model and its packages."""
    from edge.ota.pack import pack

    kit = make_kit(tmp_path_factory.mktemp("kit"))
    root = kit["root"]
    kit["eu0"] = resaved_model(os.path.join(root, "eu0.onnx"), "eu0")  # what the config's eu slot names
    kit["eu_model"] = resaved_model(os.path.join(root, "eu2.onnx"), "eu2")
    kit["eu"] = os.path.join(root, "eu.tar")  # meant for slot eu by its manifest
    pack(kit["eu_model"], kit["eu"], EU_NAME, "2026.12.20", 2, key_path=kit["key"], characters_path=US_CHARS,
         golden_dir=kit["golden"], slot="eu")
    from onnx_models import make_lprnet_like

    blank = make_lprnet_like(os.path.join(root, "blank.onnx"), force_class=35)  # reads nothing, ever
    kit["eu_blank"] = os.path.join(root, "eu-blank.tar")
    pack(blank, kit["eu_blank"], EU_NAME, "2026.12.30", 3, key_path=kit["key"], characters_path=US_CHARS,
         golden_dir=kit["golden"], min_accuracy=0.0, slot="eu")
    return kit


def slots_config(kit, tmp_path, port, **ota):
    """Two cameras on the looping sample: gate reads with the default slot, gate2 with slot eu; a third
    slot (spare) that no camera uses."""
    ota.setdefault("public_keys", [kit["pub"]])
    ota.setdefault("probation_s", 3)
    ota.setdefault("probation_min_crops", 15)
    with open(os.path.join(ROOT, "configs", "demo.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["model"]["path"] = US_MODEL
    camera = dict(cfg["cameras"][0], source=os.path.join(ROOT, "samples", "gate_us.mp4"), loop=True,
                  pacing="realtime")
    cfg["cameras"] = [camera, dict(camera, id="gate2", model="eu")]
    cfg["models"] = {"eu": {"path": kit["eu0"], "characters": US_CHARS, "name": EU_NAME, "version": EU_VERSION},
                     "spare": {"path": kit["eu0"], "characters": US_CHARS, "name": "spare"}}
    cfg.update(state_dir=str(tmp_path / "state"), exit_when_sources_end=False, print_events=False, ota=ota,
               home_assistant={"enabled": True})
    cfg["mqtt"]["port"] = port
    cfg["mqtt"]["status_interval_s"] = 1
    cfg["health"] = {"port": free_port()}
    path = str(tmp_path / "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path, cfg


def install(url, transaction, **extra):
    payload = {"transaction": transaction, "action": "install", "url": "file://" + url}
    payload.update(extra)
    return payload


class Recording:
    """A real Recognizer that also records each batch it is given (its size and the crops' first pixel)."""

    def __init__(self, recognizer):
        self.inner = recognizer
        self.batches = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, crops):
        self.batches.append([int(c[0, 0, 0]) for c in crops])
        return self.inner.read(crops)


def test_a_batch_never_mixes_models_and_a_swap_changes_one_slot(tmp_path):
    from edge.capture.thread import FrameCrops
    from edge.config import load_config
    from edge.crop.roi import PlateCrop
    from edge.recognize.model import load_model_info
    from edge.recognize.recognizer import Recognizer
    from edge.recognize.backends import create_backend
    from edge.track import Tracker
    from test_daemon import demo_config

    def real(path):
        info = load_model_info(path, US_CHARS)
        return Recording(Recognizer(info, create_backend("onnxruntime", info, RecognizerConfig())))

    config = load_config(demo_config(tmp_path, free_port()))
    mailbox = FrameMailbox()
    for camera in ("gate", "gate2", "gate3"):
        mailbox.add_camera(camera, 8)
    us, eu, eu_next = real(US_MODEL), real(resaved_model(tmp_path / "eu.onnx", "eu")), real(US_MODEL)
    emitted = []
    worker = RecognizerWorker({"default": us, "eu": eu}, mailbox, Tracker(config.tracking), emitted.append,
                              threading.Event(), 16, 50, slot_of={"gate": "default", "gate2": "eu", "gate3": "eu"})

    def frame(camera, marker, n):  # crops whose first pixel says which camera they came from
        crops = [PlateCrop("lane1", np.full((48, 96, 3), marker, np.uint8), None) for _ in range(n)]
        return FrameCrops(camera, 1, 0.0, 0.0, crops)

    for camera, marker, n in (("gate", 1, 2), ("gate2", 2, 3), ("gate3", 3, 1), ("gate", 1, 1)):
        mailbox.put(camera, frame(camera, marker, n))
    worker.step()
    assert [sorted(set(b)) for b in us.batches] == [[1]] and sum(len(b) for b in us.batches) == 3
    assert [sorted(set(b)) for b in eu.batches] == [[2, 3]] and sum(len(b) for b in eu.batches) == 4
    assert worker.crops_read == 7 and worker.batches == 2
    swapped = []
    done = worker.swap_recognizer("eu", eu_next, lambda old, new: swapped.append((old, new)))
    mailbox.put("gate2", frame("gate2", 2, 2))
    mailbox.put("gate", frame("gate", 1, 1))
    worker.step()
    assert done.is_set() and swapped == [(eu, eu_next)]
    assert worker.recognizers == {"default": us, "eu": eu_next} and worker.recognizer is us
    assert [len(b) for b in eu_next.batches] == [2] and len(eu.batches) == 1 and len(us.batches) == 2
    for r in (us, eu, eu_next):
        r.inner.close()


def test_each_camera_reads_with_its_slot_and_updates_go_to_one_slot(kit, broker, subscriber, tmp_path):
    path, cfg = slots_config(kit, tmp_path, broker.port)
    sub = subscriber("#")
    daemon = Daemon(path, tmp_path)
    eu0_sha, eu2_sha, us_sha = sha256_file(kit["eu0"]), sha256_file(kit["eu_model"]), sha256_file(US_MODEL)

    def cameras_seen():
        return set(e["camera"] for e in sub.events(EVENTS))

    try:
        assert wait_for(lambda: cameras_seen() == {"gate", "gate2"} and sub.events(EU_STATE), 90), \
            daemon.text()[-3000:]
        by_camera = dict((e["camera"], e["model"]) for e in sub.events(EVENTS))
        assert by_camera["gate"] == {"name": "us_lprnet_baseline10_mid", "version": SHIPPED_VERSION, "sha256": us_sha}
        assert by_camera["gate2"] == {"name": EU_NAME, "version": EU_VERSION, "sha256": eu0_sha}
        # the retained state per slot: the default slot's where it always was, eu's on its own topic
        assert last_state(sub)["slot"] == "default" and last_state(sub)["installed_version"] == SHIPPED_VERSION
        assert sub.events(EU_STATE)[-1]["slot"] == "eu" and sub.events(EU_STATE)[-1]["installed_version"] == EU_VERSION
        # status topic and /healthz list the models per slot (spare: no camera, not loaded)
        assert wait_for(lambda: sub.payloads("lpr-edge/demo/status"), 10)
        status = json.loads(sub.payloads("lpr-edge/demo/status")[-1])
        assert sorted(status["models"]) == ["default", "eu"] and status["models"]["eu"]["cameras"] == ["gate2"]
        assert status["models"]["eu"]["sha256"] == eu0_sha and status["model"]["sha256"] == us_sha
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % cfg["health"]["port"], timeout=5) as r:
            health = json.loads(r.read().decode("utf-8"))
        assert health["models"]["eu"]["name"] == EU_NAME and health["models"]["default"]["cameras"] == ["gate"]
        assert "slot eu: %s %s: idle" % (EU_NAME, EU_VERSION) in health["components"]["model"]["reason"]
        # Home Assistant: an update entity per slot in use
        topics = [t for t, _, _ in list(sub.messages) if t.startswith("homeassistant/update/")]
        assert "homeassistant/update/lpr_edge_demo_model/config" in topics
        eu_entity = json.loads(sub.payloads("homeassistant/update/lpr_edge_demo_model_eu/config")[-1])
        assert eu_entity["state_topic"] == EU_STATE and json.loads(eu_entity["payload_install"])["slot"] == "eu"

        # refusals, each with its reason, nothing changes
        for payload, code, words in (
                (install(kit["eu"], "t-unknown", slot="nope"), "unknown_slot", "no model slot 'nope'"),
                (install(kit["eu"], "t-unused", slot="spare"), "slot_unused", "no camera reads with model slot"),
                (install(kit["p2"], "t-wrong", slot="eu"), "wrong_model", "does not replace the active model "
                                                                       "'eu_lprnet' in slot eu"),
                (install(kit["eu"], "t-slot", slot="default"), "wrong_slot", "meant for model slot 'eu'")):
            reply = command(sub, payload)
            assert reply["status"] == "error" and reply["error"] == code and words in reply["message"], reply
        assert sub.events(EU_STATE)[-1]["installed_version"] == EU_VERSION

        # the eu package names its slot: an install without one goes there; the default slot is untouched
        reply = command(sub, install(kit["eu"], "t-eu"))
        assert reply["status"] == "ok" and reply["state"] == "probation" and reply["slot"] == "eu", reply
        assert wait_for(lambda: any(r.get("state") == "active" for r in replies(sub, "t-eu")), 60), \
            sub.events(RESPONSE)[-3:]
        assert wait_for(lambda: any(e["camera"] == "gate2" and e["model"]["sha256"] == eu2_sha
                                    for e in sub.events(EVENTS)), 60)
        eu_final = sub.events(EU_STATE)[-1]
        assert eu_final["state"] == "active" and eu_final["installed_version"] == "2026.12.20"
        assert eu_final["model"]["serial"] == 2 and eu_final["slot"] == "eu"
        eu_states = [s["state"] for s in sub.events(EU_STATE) if s.get("transaction") == "t-eu"]
        assert "probation" in eu_states and "active" in eu_states, eu_states
        default = last_state(sub)
        assert default["installed_version"] == SHIPPED_VERSION and default["slot"] == "default"
        assert default["state"] not in ("verifying", "probation", "active")  # said again what it said before
        assert all(e["model"]["sha256"] == us_sha for e in sub.events(EVENTS) if e["camera"] == "gate")

        # probation judges the slot's own cameras: a model reading nothing there is rolled back, refused
        reply = command(sub, install(kit["eu_blank"], "t-blank"))
        assert reply["state"] == "probation" and reply["slot"] == "eu", reply
        assert wait_for(lambda: any(r.get("error") == "probation_failed" for r in replies(sub, "t-blank")), 40), \
            replies(sub, "t-blank")
        assert wait_for(lambda: sub.events(EU_STATE)[-1]["state"] == "rolled_back", 10)
        assert sub.events(EU_STATE)[-1]["installed_version"] == "2026.12.20"
        assert last_state(sub)["installed_version"] == SHIPPED_VERSION
        assert command(sub, install(kit["eu_blank"], "t-blank2"))["error"] == "refused_serial"

        # rollback of one slot
        back = command(sub, {"transaction": "rb", "action": "rollback", "slot": "eu"})
        assert back["status"] == "ok" and back["model"]["version"] == EU_VERSION, back  # the config's eu model
        assert wait_for(lambda: sub.events(EU_STATE)[-1]["state"] == "rolled_back", 10)
        nothing = command(sub, {"transaction": "rb0", "action": "rollback"})  # the default slot has nothing
        assert nothing["error"] == "nothing_to_roll_back"
        listing = command(sub, {"transaction": "st", "action": "status"})["data"]
        assert sorted(listing["slots"]) == ["default", "eu"] and listing["slot"] == "default"
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert "Traceback" not in daemon.text()
    assert sorted(e["id"] for e in sub.events(EVENTS)) == sorted(set(daemon.event_ids()))  # none lost
    with open(os.path.join(ROOT, "configs", "schema", "model-state.schema.json")) as f:
        schema = json.load(f)
    for payload in sub.events(STATE) + sub.events(EU_STATE):
        jsonschema.validate(payload, schema)


def test_offline_install_list_rollback_per_slot(kit, tmp_path):
    path, _ = slots_config(kit, tmp_path, free_port())
    result = run_cli("model", "install", "--config", path, "--slot", "nope", kit["eu"])
    assert result.returncode == 2 and "no model slot 'nope' (slots: default, eu, spare)" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("model", "install", "--config", path, kit["eu"])  # the manifest's slot: eu
    assert result.returncode == 0 and "in slot eu" in result.stdout, result.stderr
    listing = json.loads(run_cli("model", "list", "--config", path, "--json").stdout)
    assert listing["slots"]["eu"]["active"]["version"] == "2026.12.20"
    assert listing["slots"]["eu"]["active"]["slot"] == "eu" and listing["slots"]["eu"]["previous"] == "the config's model"
    assert listing["active"]["folder"] is None and listing["active"]["version"] == SHIPPED_VERSION  # default slot
    text = run_cli("model", "list", "--config", path).stdout
    assert "[eu] eu_lprnet 2026.12.20" in text and "[spare] spare" in text
    assert os.path.isdir(os.path.join(str(tmp_path), "state", "models", "eu-%s-2-%s" % (
        EU_NAME, sha256_file(kit["eu_model"])[:12])))
    # the default slot's package into the default slot, beside it: the two pointers are separate
    assert run_cli("model", "install", "--config", path, kit["p2"]).returncode == 0
    back = run_cli("model", "rollback", "--config", path, "--slot", "eu")
    assert back.returncode == 0 and "active now: the config's model" in back.stdout, back.stderr
    listing = json.loads(run_cli("model", "list", "--config", path, "--json").stdout)
    assert listing["slots"]["eu"]["active"]["folder"] is None and listing["active"]["serial"] == 2
    refused = run_cli("model", "rollback", "--config", path, "--slot", "eu")
    assert refused.returncode == 2 and "nothing to roll back to" in refused.stderr


def test_a_probation_a_restart_interrupted_is_rolled_back_in_its_slot(kit, tmp_path):
    """SIGKILL during a slot's probation leaves state.json saying so: the next start rolls that slot back and
    leaves the others as they were."""
    from edge.ota.store import ModelStore

    path, _ = slots_config(kit, tmp_path, free_port())
    assert run_cli("model", "install", "--config", path, kit["eu"]).returncode == 0
    assert run_cli("model", "install", "--config", path, kit["p2"]).returncode == 0
    store = ModelStore(str(tmp_path / "state"))
    eu = store.active("eu")
    store.rollback("eu")  # back to the config's, then "activated with probation pending", as a daemon does
    store.activate(eu.folder_name, "eu", probation_s=300)
    assert store.active("eu").version == "2026.12.20"
    said = store.recover()
    assert "rolled back slot eu: the daemon stopped during probation of eu_lprnet 2026.12.20" in said
    assert store.active("eu") is None and store.active().serial == 2  # the default slot untouched
    state = store.read_state()
    assert store.last(state, "eu")["state"] == "rolled_back" and state["last"]["reason"] == "installed offline"
