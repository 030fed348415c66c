"""Model updates of a running daemon (`lpr-edge run` on the looping sample video) over a real mosquitto and
a real HTTP server on loopback: a good update swaps the model while the sample streams and every event id
arrives; each bad input is refused with its reason on the state topic while the current model serves;
probation rolls back a model that reads nothing; SIGKILL during download, verify and swap leaves the old
model active; Home Assistant's update entity installs an offered update."""
import json
import os
import re
import signal
import subprocess
import time

import jsonschema
import pytest

from helpers import ROOT, VENV_BIN, Subscriber, run_cli, wait_for
from onnx_models import make_lprnet_like
from ota_helpers import (US_CHARS, FileServer, forge, make_kit, read_member, rewrite_package, sha256_file,
                         write_ota_config)

PREFIX = "lpr-edge"
CMD = "lpr-edge/demo/cmd/model"
RESPONSE = "lpr-edge/demo/cmd/model/response"
STATE = "lpr-edge/demo/model/state"
EVENTS = "lpr-edge/demo/events"
SHIPPED_VERSION = "2026.11.24"


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return make_kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture
def www(kit, tmp_path):
    server = FileServer(os.path.dirname(kit["p2"]))
    yield server
    server.close()


class Daemon:
    def __init__(self, config, tmp_path, env=None):
        self.log_path = str(tmp_path / ("daemon-%d.log" % time.time()))
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([os.path.join(VENV_BIN, "lpr-edge"), "run", "--config", config],
                                     stdout=subprocess.DEVNULL, stderr=self.log, env=dict(os.environ, **(env or {})))

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def event_ids(self):
        return re.findall(r" event ([0-9A-Z]{26})$", self.text(), re.M)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.log.close()
        return self.proc.returncode


def streaming_config(kit, tmp_path, port, **ota):
    ota.setdefault("public_keys", [kit["pub"]])
    ota.setdefault("probation_s", 3)
    ota.setdefault("probation_min_crops", 15)
    ota.setdefault("download_timeout_s", 2)
    ota.setdefault("download_retries", 1)
    config = write_ota_config(tmp_path, port, **ota)
    import yaml

    with open(config) as f:
        cfg = yaml.safe_load(f)
    cfg.update(exit_when_sources_end=False, print_events=False)
    cfg["cameras"][0].update(loop=True, pacing="realtime")
    cfg["home_assistant"] = {"enabled": True}
    with open(config, "w") as f:
        yaml.safe_dump(cfg, f)
    return config


def replies(sub, transaction):
    return [r for r in sub.events(RESPONSE) if r.get("transaction") == transaction]


def command(sub, payload, final=True, timeout=90):
    """Publish a command; return the final reply (not 'accepted') for its transaction."""
    transaction = payload.get("transaction")
    sub.client.publish(CMD, json.dumps(payload), qos=1)
    if not final:
        return None
    assert wait_for(lambda: any(r["status"] != "accepted" for r in replies(sub, transaction)), timeout), \
        (payload, sub.events(RESPONSE)[-3:])
    return [r for r in replies(sub, transaction) if r["status"] != "accepted"][-1]


def last_state(sub):
    states = sub.events(STATE)
    return states[-1] if states else None


def package_command(kit, www, name, transaction, **extra):
    path = os.path.join(os.path.dirname(kit["p2"]), name)
    payload = {"transaction": transaction, "action": "install", "url": www.url(name), "sha256": sha256_file(path),
               "size": os.path.getsize(path)}
    payload.update(extra)
    return payload


def wait_serving(sub, daemon):
    assert wait_for(lambda: last_state(sub) is not None and len(sub.events(EVENTS)) >= 1, 60), daemon.text()[-3000:]


def test_good_update_swaps_live_and_every_event_arrives(kit, www, broker, subscriber, tmp_path):
    sub = subscriber("lpr-edge/#")
    daemon = Daemon(streaming_config(kit, tmp_path, broker.port), tmp_path)
    try:
        wait_serving(sub, daemon)
        assert last_state(sub)["state"] == "idle" and last_state(sub)["installed_version"] == SHIPPED_VERSION
        reply = command(sub, package_command(kit, www, "p2.tar", "t-good"))
        assert reply["status"] == "ok" and reply["state"] == "probation", reply
        assert wait_for(lambda: any(r.get("state") == "active" for r in replies(sub, "t-good")), 60), \
            sub.events(RESPONSE)
        new_sha = sha256_file(kit["model2"])
        assert wait_for(lambda: any(e["model"]["sha256"] == new_sha for e in sub.events(EVENTS)), 60)
        time.sleep(1.0)
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert "Traceback" not in daemon.text()
    events = sub.events(EVENTS)
    assert sorted(e["id"] for e in events) == sorted(set(daemon.event_ids()))  # every event committed arrived
    models = [e["model"]["version"] for e in events]
    first_new = models.index("2026.12.02")
    assert set(models[:first_new]) == {SHIPPED_VERSION} and set(models[first_new:]) == {"2026.12.02"}, models
    with open(os.path.join(ROOT, "configs", "schema", "model-state.schema.json")) as f:
        state_schema = json.load(f)
    for payload in sub.events(STATE):
        jsonschema.validate(payload, state_schema)
    states = [s["state"] for s in sub.events(STATE)]
    for expected in ("downloading", "verifying", "probation", "active"):
        assert expected in states, states
    final = last_state(sub)
    assert final["installed_version"] == "2026.12.02" and final["model"]["serial"] == 2
    assert final["in_progress"] is False and final["previous"] is None  # previous = the config's model
    late = Subscriber(broker.port, "lpr-edge/demo/#")  # retained: the state, never a response
    try:
        assert wait_for(lambda: late.payloads(STATE), 5)
        assert json.loads(late.payloads(STATE)[-1])["installed_version"] == "2026.12.02"
        time.sleep(0.5)
        assert late.payloads(RESPONSE) == []
    finally:
        late.close()
    status = json.loads(sub.payloads("lpr-edge/demo/status")[-1])
    assert status["cameras"][0]["dropped_frames"] == 0  # no frame dropped unread across the swap
    listing = json.loads(run_cli("model", "list", "--config", os.path.join(str(tmp_path), "config.yaml"),
                                 "--json").stdout)
    assert listing["active"]["serial"] == 2


def test_bad_inputs_are_refused_with_their_reason_while_the_model_serves(kit, www, broker, subscriber, tmp_path):
    folder = os.path.dirname(kit["p2"])
    manifest = read_member(kit["p2"], "manifest.json").replace(b'"serial": 2', b'"serial": 7')
    rewrite_package(kit["p2"], os.path.join(folder, "badsig.tar"), replace={"manifest.json": manifest})
    forge(os.path.join(folder, "otherkey.tar"), kit["model2"], US_CHARS, kit["other_key"], golden_dir=kit["golden"])
    junk = os.path.join(folder, "junk.onnx")
    with open(junk, "wb") as f:
        f.write(b"not a model" * 100)
    forge(os.path.join(folder, "nonnx.tar"), junk, US_CHARS, kit["key"], golden_dir=kit["golden"])
    shape = make_lprnet_like(os.path.join(folder, "shape.onnx"), input_shape=("N", 3, 24, 94))
    forge(os.path.join(folder, "shape.tar"), shape, US_CHARS, kit["key"], golden_dir=kit["golden"])
    wide = make_lprnet_like(os.path.join(folder, "wide.onnx"), n_classes=40, class_probs=True)
    forge(os.path.join(folder, "chars.tar"), wide, US_CHARS, kit["key"], golden_dir=kit["golden"])
    reads3 = make_lprnet_like(os.path.join(folder, "reads3.onnx"), force_class=3)
    forge(os.path.join(folder, "golden.tar"), reads3, US_CHARS, kit["key"], golden_dir=kit["golden"])

    sub = subscriber("lpr-edge/#")
    # a retained command, there before the daemon subscribes: it would run again at every reconnect, so it
    # is ignored
    sub.client.publish(CMD, json.dumps(package_command(kit, www, "p2.tar", "retained")), qos=1, retain=True)
    daemon = Daemon(streaming_config(kit, tmp_path, broker.port), tmp_path)
    try:
        wait_serving(sub, daemon)
        assert wait_for(lambda: "is retained: ignored" in daemon.text(), 10)
        assert replies(sub, "retained") == []
        sub.client.publish(CMD, b"", qos=1, retain=True)  # clear it (the daemon refuses the empty command)
        assert wait_for(lambda: any("not JSON" in r.get("message", "") for r in sub.events(RESPONSE)), 10)
        cases = [("badsig.tar", {}, "bad_signature"), ("otherkey.tar", {}, "unknown_key"),
                 ("p2.tar", {"sha256": "ab" * 32}, "sha256_mismatch"), ("nonnx.tar", {}, "not_onnx"),
                 ("shape.tar", {}, "contract"), ("chars.tar", {}, "characters_mismatch"),
                 ("golden.tar", {}, "golden_failed")]
        for i, (name, extra, code) in enumerate(cases):
            reply = command(sub, package_command(kit, www, name, "t%d" % i, **extra))
            assert reply["status"] == "error" and reply["error"] == code, (name, reply)
            assert wait_for(lambda: last_state(sub)["reason"] == code and last_state(sub)["state"] == "failed", 5)
            assert last_state(sub)["installed_version"] == SHIPPED_VERSION
        # malformed JSON, an unknown action
        sub.client.publish(CMD, b"{not json", qos=1)
        assert wait_for(lambda: any(r.get("error") == "bad_command" and "not JSON" in r["message"]
                                    for r in sub.events(RESPONSE)), 10)
        assert command(sub, {"transaction": "u", "action": "explode"})["error"] == "bad_command"
        assert command(sub, {"transaction": "v", "action": "install", "url": "gopher://x"})["error"] == "bad_command"
        # commands for another device: not answered, not acted on
        n = len(sub.events(RESPONSE))
        sub.client.publish("lpr-edge/gate2/cmd/model", json.dumps(package_command(kit, www, "p2.tar", "x1")), qos=1)
        sub.client.publish("lpr-edge/all/cmd/model", json.dumps(dict(package_command(kit, www, "p2.tar", "x2"),
                                                                      devices=["gate2"])), qos=1)
        time.sleep(2.0)
        assert len(sub.events(RESPONSE)) == n
        # a stalling server, and a second command while that update runs
        www.stall_s = 4.0
        command(sub, package_command(kit, www, "p3.tar", "stall"), final=False)
        assert wait_for(lambda: any(r["status"] == "accepted" for r in replies(sub, "stall")), 10)
        busy = command(sub, package_command(kit, www, "p2.tar", "second"))
        assert busy["error"] == "busy"
        assert command(sub, {"transaction": "st", "action": "status"})["data"]["state"] == "downloading"
        stalled = [r for r in replies(sub, "stall") if r["status"] != "accepted"]
        assert wait_for(lambda: [r for r in replies(sub, "stall") if r["status"] != "accepted"], 30)
        stalled = [r for r in replies(sub, "stall") if r["status"] != "accepted"][-1]
        assert stalled["error"] == "stalled", stalled
        # the same package again: it resumes the partial download; cut short once more, it resumes again
        www.stall_s = 0.0
        www.truncate_once = 64 * 1024
        www.requests[:] = []
        reply = command(sub, package_command(kit, www, "p3.tar", "resume"))
        assert reply["status"] == "ok", reply
        ranges = [int(rng.split("=")[1].rstrip("-")) for _, rng, _ in www.requests if rng]
        assert len(ranges) == 2 and ranges[1] == ranges[0] + 64 * 1024, www.requests
        assert wait_for(lambda: last_state(sub)["state"] == "active", 30)
        # now a lower serial
        low = command(sub, package_command(kit, www, "p2.tar", "low"))
        assert low["error"] == "downgrade" and "allow_downgrade" in low["message"]
        assert last_state(sub)["installed_version"] == "2026.12.03"
        # and rollback by command: back to the config's model
        back = command(sub, {"transaction": "rb", "action": "rollback"})
        assert back["status"] == "ok" and back["model"]["version"] == SHIPPED_VERSION
        assert wait_for(lambda: last_state(sub)["state"] == "rolled_back", 10)
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    versions = [e["model"]["version"] for e in sub.events(EVENTS)]
    assert set(versions) <= {SHIPPED_VERSION, "2026.12.03"}  # never a refused model
    assert "Traceback" not in daemon.text()


def test_probation_rolls_back_a_model_that_reads_nothing(kit, www, broker, subscriber, tmp_path):
    folder = os.path.dirname(kit["p2"])
    blank = make_lprnet_like(os.path.join(folder, "blank.onnx"), force_class=35)  # every timestep the blank
    forge(os.path.join(folder, "blank.tar"), blank, US_CHARS, kit["key"], golden_dir=kit["golden"],
          golden={"path": "golden", "count": 16, "plate_accuracy": 0.0}, version="2026.12.09", serial=9)
    sub = subscriber("lpr-edge/#")
    daemon = Daemon(streaming_config(kit, tmp_path, broker.port, probation_s=30), tmp_path)
    try:
        wait_serving(sub, daemon)
        reply = command(sub, package_command(kit, www, "blank.tar", "blank"))
        assert reply["state"] == "probation"
        assert wait_for(lambda: any(r.get("error") == "probation_failed" for r in replies(sub, "blank")), 30), \
            replies(sub, "blank")
        final = [r for r in replies(sub, "blank") if r.get("error")][-1]
        assert "reads a plate on 0 of the" in final["message"] and "where the old one read one" in final["message"]
        assert wait_for(lambda: last_state(sub)["state"] == "rolled_back", 10)
        assert last_state(sub)["installed_version"] == SHIPPED_VERSION
        n = len(sub.events(EVENTS))
        assert wait_for(lambda: len(sub.events(EVENTS)) > n, 30)  # reading plates again
        again = command(sub, package_command(kit, www, "blank.tar", "blank2"))
        assert again["error"] == "refused_serial"
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert sorted(e["id"] for e in sub.events(EVENTS)) == sorted(set(daemon.event_ids()))


@pytest.mark.parametrize("step", ["download", "verified", "activated"])
def test_sigkill_during_an_update_leaves_the_old_model(kit, www, broker, subscriber, tmp_path, step):
    config = streaming_config(kit, tmp_path, broker.port)
    marker = str(tmp_path / "paused")
    env = {"LPR_EDGE_TEST_OTA_PAUSE": step, "LPR_EDGE_TEST_OTA_PAUSE_FILE": marker}
    if step == "download":
        www.stall_s = 60.0
    sub = subscriber("lpr-edge/#")
    daemon = Daemon(config, tmp_path, env)
    try:
        wait_serving(sub, daemon)
        command(sub, package_command(kit, www, "p2.tar", "kill"), final=False)
        if step == "download":
            assert wait_for(lambda: (last_state(sub) or {}).get("state") == "downloading", 30)
            time.sleep(1.0)
        else:
            assert wait_for(lambda: os.path.exists(marker), 60), daemon.text()[-2000:]
    finally:
        daemon.stop(signal.SIGKILL)
    www.stall_s = 0.0
    models = os.path.join(str(tmp_path), "state", "models")
    sub2 = subscriber("lpr-edge/demo/events")
    again = Daemon(config, tmp_path)  # the next start
    try:
        assert wait_for(lambda: len(sub2.events(EVENTS)) >= 1, 60), again.text()[-2000:]
        assert all(e["model"]["version"] == SHIPPED_VERSION for e in sub2.events(EVENTS))
        assert os.listdir(os.path.join(models, ".staging")) == []
    finally:
        assert again.stop() == 0
    if step == "activated":
        assert "the daemon stopped during probation" in again.text()


def test_home_assistant_update_entity_installs_the_offered_update(kit, www, broker, subscriber, tmp_path):
    sub = subscriber("#")
    daemon = Daemon(streaming_config(kit, tmp_path, broker.port, probation_s=0), tmp_path)
    try:
        wait_serving(sub, daemon)
        topic = "homeassistant/update/lpr_edge_demo_model/config"
        assert wait_for(lambda: sub.payloads(topic), 10)
        discovery = json.loads(sub.payloads(topic)[-1])
        assert discovery["command_topic"] == CMD and discovery["state_topic"] == STATE
        offer = package_command(kit, www, "p3.tar", "offer-1", version="2026.12.03", release_summary="test release")
        offer["action"] = "offer"
        assert command(sub, offer)["status"] == "ok"
        assert wait_for(lambda: last_state(sub)["latest_version"] == "2026.12.03", 10)
        assert last_state(sub)["installed_version"] == SHIPPED_VERSION
        assert last_state(sub)["release_summary"] == "test release"
        sub.client.publish(discovery["command_topic"], discovery["payload_install"], qos=1)  # the install button
        assert wait_for(lambda: last_state(sub)["installed_version"] == "2026.12.03", 60), sub.events(RESPONSE)
        states = sub.events(STATE)
        assert any(s["in_progress"] for s in states) and any(s["update_percentage"] is not None for s in states)
        assert last_state(sub)["in_progress"] is False
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]


def test_the_cli_talks_to_the_running_daemon(kit, broker, subscriber, tmp_path):
    import urllib.request

    import yaml

    from helpers import free_port

    config = streaming_config(kit, tmp_path, broker.port, probation_s=2)
    with open(config) as f:
        cfg = yaml.safe_load(f)
    cfg["health"] = {"port": free_port()}
    with open(config, "w") as f:
        yaml.safe_dump(cfg, f)
    sub = subscriber("lpr-edge/#")
    daemon = Daemon(config, tmp_path)
    try:
        wait_serving(sub, daemon)
        result = run_cli("model", "install", "--config", config, kit["p2"])  # a local file: sent as file:///
        assert result.returncode == 0, result.stderr
        assert "2026.12.02 is active (serial 2)" in result.stdout and "probation" in result.stderr
        listing = run_cli("model", "list", "--config", config)
        assert "2026.12.02" in listing.stdout and "the daemon says: active" in listing.stdout, listing.stderr
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % cfg["health"]["port"], timeout=5) as r:
            health = json.loads(r.read().decode("utf-8"))
        assert health["components"]["model"]["reason"].startswith("us_lprnet_baseline10_mid 2026.12.02: active")
        manifest = read_member(kit["p3"], "manifest.json").replace(b'"serial": 3', b'"serial": 30')
        bad = rewrite_package(kit["p3"], str(tmp_path / "bad.tar"), replace={"manifest.json": manifest})
        refused = run_cli("model", "install", "--config", config, bad)
        assert refused.returncode == 2 and "does not match the manifest" in refused.stderr
        back = run_cli("model", "rollback", "--config", config)
        assert back.returncode == 0 and "rolled back by command" in back.stdout, back.stderr
        n = len(sub.events(EVENTS))
        assert wait_for(lambda: len(sub.events(EVENTS)) > n, 40)
        assert sub.events(EVENTS)[-1]["model"]["version"] == SHIPPED_VERSION
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
