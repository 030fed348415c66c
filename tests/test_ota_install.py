"""The install process on a state directory, offline (`lpr-edge model install|list|rollback`) as real
subprocesses: switch and rollback, the refusals (unsigned, unknown key, wrong name, lower serial, refused
serial, failing golden set, detector kind), one update at a time, and SIGKILL at each step leaving the old
model active and the staging cleaned at the next start. Then `lpr-edge run` serves the installed model."""
import json
import os
import signal
import subprocess
import time

import pytest

from edge.ota.store import FileLock, ModelStore
from helpers import VENV_BIN, free_port, run_cli, wait_for
from onnx_models import make_lprnet_like
from ota_helpers import US_CHARS, US_NAME, FileServer, forge, make_kit, sha256_file, write_ota_config

@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return make_kit(tmp_path_factory.mktemp("kit"))


@pytest.fixture
def config(kit, tmp_path):
    return write_ota_config(tmp_path, public_keys=[kit["pub"]])


def listing(config):
    result = run_cli("model", "list", "--config", config, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def install(config, *args, **kw):
    return run_cli("model", "install", "--config", config, *args, **kw)


def state_dir(config):
    return os.path.join(os.path.dirname(config), "state")


def test_install_list_noop_rollback(kit, config):
    before = listing(config)
    assert before["active"]["folder"] is None and before["active"]["serial"] == 0  # the config's model
    result = install(config, kit["p2"])
    assert result.returncode == 0, result.stderr
    assert "checked and installed" in result.stdout and "golden set 100.0%" in result.stdout
    after = listing(config)
    assert after["active"]["version"] == "2026.12.02" and after["active"]["serial"] == 2
    assert after["active"]["sha256"] == sha256_file(kit["model2"])
    assert after["previous"] == "the config's model"
    again = install(config, kit["p2"])
    assert again.returncode == 0 and "already active; nothing to do" in again.stdout
    assert install(config, kit["p3"]).returncode == 0
    assert listing(config)["previous"]["serial"] == 2
    back = run_cli("model", "rollback", "--config", config)
    assert back.returncode == 0 and "active now: us_lprnet_baseline10_mid 2026.12.02" in back.stdout
    assert listing(config)["active"]["serial"] == 2
    # only active and previous stay on disk
    models = os.path.join(state_dir(config), "models")
    assert sorted(n for n in os.listdir(models) if not n.startswith(".") and n != "state.json") == sorted(
        "%s-%d-%s" % (US_NAME, s, sha256_file(kit["model%d" % s])[:12]) for s in (2, 3))


def test_lower_serial_needs_allow_downgrade(kit, config):
    assert install(config, kit["p3"]).returncode == 0
    result = install(config, kit["p2"])
    assert result.returncode == 2 and "serial 2 is not above the active model's 3" in result.stderr
    assert listing(config)["active"]["serial"] == 3
    assert install(config, kit["p2"], "--allow-downgrade").returncode == 0
    assert listing(config)["active"]["serial"] == 2


def test_refusals_leave_the_active_model(kit, config, tmp_path):
    unsigned = forge(tmp_path / "unsigned.tar", kit["model2"], US_CHARS, None, golden_dir=kit["golden"])
    other = forge(tmp_path / "other.tar", kit["model2"], US_CHARS, kit["other_key"], golden_dir=kit["golden"])
    wrong_name = forge(tmp_path / "name.tar", kit["model2"], US_CHARS, kit["key"], golden_dir=kit["golden"],
                       name="ch_something")
    blank = make_lprnet_like(tmp_path / "blank.onnx", force_class=35)
    failing = forge(tmp_path / "golden.tar", blank, US_CHARS, kit["key"], golden_dir=kit["golden"])
    detector = forge(tmp_path / "det.tar", kit["model2"], US_CHARS, kit["key"], golden_dir=kit["golden"],
                     kind="detector")
    no_golden = forge(tmp_path / "nog.tar", kit["model2"], US_CHARS, kit["key"])
    cases = [(unsigned, "is not signed"), (other, "not one of the trusted keys"),
             (wrong_name, "does not replace the active model"), (failing, "golden set: 0.0%"),
             (detector, "installs recognizers only"), (no_golden, "has no golden set"),
             (str(tmp_path / "missing.tar"), "no such file")]
    for package, why in cases:
        result = install(config, package)
        assert result.returncode == 2 and why in result.stderr, (package, result.stderr)
        assert len(result.stderr.strip().splitlines()[-1]) and "Traceback" not in result.stderr
    assert listing(config)["active"]["folder"] is None
    staging = os.path.join(state_dir(config), "models", ".staging")
    assert os.listdir(staging) == []
    (tmp_path / "lab").mkdir()
    lab = write_ota_config(tmp_path / "lab", allow_unsigned=True)  # a lab device that takes unsigned packages
    assert install(lab, unsigned).returncode == 0


def test_refused_serial_stays_refused(kit, config):
    assert install(config, kit["p2"]).returncode == 0
    store = ModelStore(state_dir(config))
    store.rollback(refuse_reason="failed its probation in a test")
    result = install(config, kit["p2"])
    assert result.returncode == 2 and "serial 2 was refused before" in result.stderr
    assert "failed its probation in a test" in json.dumps(listing(config)["refused"])


def test_install_from_a_url_with_sha256_and_size(kit, config):
    server = FileServer(os.path.dirname(kit["p2"]))
    try:
        url = server.url("p2.tar")
        bad = install(config, url, "--sha256", "0" * 64, "--size", str(os.path.getsize(kit["p2"])))
        assert bad.returncode == 2 and "the command said" in bad.stderr
        result = install(config, url, "--sha256", sha256_file(kit["p2"]), "--size", str(os.path.getsize(kit["p2"])))
        assert result.returncode == 0, result.stderr
        assert listing(config)["active"]["serial"] == 2
        assert os.listdir(os.path.join(state_dir(config), "models", ".downloads")) == []
    finally:
        server.close()


def test_one_update_at_a_time_and_none_beside_a_daemon(kit, tmp_path):
    config = write_ota_config(tmp_path, broker_port=free_port(), public_keys=[kit["pub"]])
    store = ModelStore(state_dir(config))
    with FileLock(store.update_lock.path):
        result = install(config, kit["p2"])
        assert result.returncode == 1 and "already in progress" in result.stderr
    with FileLock(store.daemon_lock.path):  # "a daemon runs": the command goes to it over MQTT (no broker here)
        result = install(config, kit["p2"])
        assert result.returncode == 1 and "cannot reach the broker" in result.stderr
    assert listing(config)["active"]["folder"] is None


def start_install(config, source, step, tmp_path):
    marker = str(tmp_path / ("pause-%s" % step))
    env = dict(os.environ, LPR_EDGE_TEST_OTA_PAUSE=step, LPR_EDGE_TEST_OTA_PAUSE_FILE=marker)
    proc = subprocess.Popen([os.path.join(VENV_BIN, "lpr-edge"), "model", "install", "--config", config, source],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return proc, marker


def assert_old_model_and_clean(config):
    after = listing(config)  # a fresh start on the state dir: it recovers first
    assert after["active"]["folder"] is None, after
    models = os.path.join(state_dir(config), "models")
    assert os.listdir(os.path.join(models, ".staging")) == []
    assert [n for n in os.listdir(models) if not n.startswith(".") and n != "state.json"] == []


@pytest.mark.parametrize("step", ["verified", "moved"])
def test_sigkill_at_a_step_leaves_the_old_model(kit, config, tmp_path, step):
    proc, marker = start_install(config, kit["p2"], step, tmp_path)
    assert wait_for(lambda: os.path.exists(marker), 60), proc.communicate(timeout=5)
    if step == "verified":  # killed with the package unpacked in the staging
        assert os.listdir(os.path.join(state_dir(config), "models", ".staging")) != []
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert_old_model_and_clean(config)
    assert install(config, kit["p2"]).returncode == 0  # and the same package installs afterwards


def test_sigkill_during_download_then_resume(kit, config, tmp_path):
    server = FileServer(os.path.dirname(kit["p2"]))
    server.stall_s = 60.0  # half the package, then nothing
    try:
        proc, _ = start_install(config, server.url("p2.tar"), "never", tmp_path)
        downloads = os.path.join(state_dir(config), "models", ".downloads")
        assert wait_for(lambda: any(n.endswith(".part") and os.path.getsize(os.path.join(downloads, n)) > 0
                                    for n in os.listdir(downloads)) if os.path.isdir(downloads) else False, 30)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert_old_model_and_clean(config)
        server.stall_s = 0.0
        result = install(config, server.url("p2.tar"))
        assert result.returncode == 0, result.stderr
        assert any(rng for _, rng, _ in server.requests[1:]), server.requests  # resumed, not started over
        assert listing(config)["active"]["serial"] == 2
    finally:
        server.close()


def test_the_daemon_serves_the_installed_model(kit, broker, subscriber, tmp_path):
    config = write_ota_config(tmp_path, broker.port, public_keys=[kit["pub"]])
    assert install(config, kit["p3"]).returncode == 0
    sub = subscriber("lpr-edge/demo/#")
    proc = subprocess.run([os.path.join(VENV_BIN, "lpr-edge"), "run", "--config", config], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = sub.events("lpr-edge/demo/events")
    assert events and all(e["model"]["version"] == "2026.12.03" for e in events)
    assert all(e["model"]["sha256"] == sha256_file(kit["model3"]) for e in events)
    assert "starting with installed model us_lprnet_baseline10_mid 2026.12.03 (serial 3)" in proc.stderr
    state = json.loads(sub.payloads("lpr-edge/demo/model/state")[-1])
    assert state["installed_version"] == "2026.12.03" and state["model"]["serial"] == 3


def test_a_damaged_installed_model_is_rolled_back_at_start(kit, broker, subscriber, tmp_path):
    config = write_ota_config(tmp_path, broker.port, public_keys=[kit["pub"]])
    assert install(config, kit["p2"]).returncode == 0
    active = ModelStore(state_dir(config)).active()
    with open(active.model_path, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 64)
    sub = subscriber("lpr-edge/demo/events")
    proc = subprocess.run([os.path.join(VENV_BIN, "lpr-edge"), "run", "--config", config], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "is damaged" in proc.stderr
    assert sub.events() and all(e["model"]["version"] == "2026.11.24" for e in sub.events())
    assert "is damaged" in json.dumps(listing(config)["refused"])


def test_an_installed_model_that_no_longer_loads_is_rolled_back_at_start(kit, broker, subscriber, tmp_path):
    """E.g. installed offline, then the daemon's backend refuses it: the daemon must still start."""
    config = write_ota_config(tmp_path, broker.port, public_keys=[kit["pub"]])
    assert install(config, kit["p2"]).returncode == 0
    active = ModelStore(state_dir(config)).active()
    with open(active.characters_path, "w") as f:
        f.write("".join(c + "\n" for c in "ABCDEFGHIJKLMNOPQRST"))  # intact on disk, wrong for the model
    manifest = dict(active.manifest)
    manifest["files"][manifest["characters"]]["sha256"] = sha256_file(active.characters_path)
    with open(os.path.join(active.folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    sub = subscriber("lpr-edge/demo/events")
    proc = subprocess.run([os.path.join(VENV_BIN, "lpr-edge"), "run", "--config", config], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "does not load" in proc.stderr
    assert sub.events() and all(e["model"]["version"] == "2026.11.24" for e in sub.events())
    assert listing(config)["active"]["folder"] is None


def test_a_second_daemon_on_the_same_state_dir_is_refused(kit, tmp_path):
    config = write_ota_config(tmp_path, broker_port=free_port(), public_keys=[kit["pub"]])
    with FileLock(ModelStore(state_dir(config)).daemon_lock.path):
        result = run_cli("run", "--config", config, timeout=60)
    assert result.returncode == 2 and "another lpr-edge daemon runs on the state directory" in result.stderr
    assert "Traceback" not in result.stderr
