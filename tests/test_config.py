"""Config validation: every bad value is refused with the key path, the value and what was expected;
device profiles supply recognizer defaults; secrets never reach check-config's output."""
import os

import pytest

from edge.config import ConfigError, detect_profile, list_profiles, load_config, load_profile
from helpers import ROOT, free_port, run_cli, write_config

MODEL = os.path.join(ROOT, "models", "us_lp_characters.txt")  # any existing file stands in for the model path

BASE = """
device_id: test
device_profile: cpu
model:
  path: {model}
cameras:
  - id: gate
    source: {root}/samples/gate_us.mp4
    rois:
      - id: lane1
        points: [[255, 229], [385, 224], [387, 291], [257, 294]]
"""


def cfg(tmp_path, extra="", base=BASE):
    if "health:" not in extra:  # never the default port: another lpr-edge may hold it
        extra += "health:\n  port: %d\n" % free_port()
    return write_config(tmp_path / "c.yaml", base.format(model=MODEL, root=ROOT) + extra)


def problems(tmp_path, extra="", base=BASE):
    with pytest.raises(ConfigError) as info:
        load_config(cfg(tmp_path, extra, base))
    return "\n".join(info.value.problems)


def test_demo_config_is_valid():
    for name, loops in (("demo.yaml", False), ("demo-loop.yaml", True)):
        config = load_config(os.path.join(ROOT, "configs", name))
        assert config.cameras[0].id == "gate" and config.cameras[0].loop == loops
        assert config.exit_when_sources_end != loops
        assert config.mqtt.port == 1883
        assert config.tracking.min_reads == 3
        assert config.model.path.endswith("models/us_lprnet_baseline10_mid.onnx")


def test_defaults_come_from_schema_and_profile(tmp_path):
    config = load_config(cfg(tmp_path))
    assert config.tracking.expire_s == 1.5 and config.tracking.min_plate_length == 3
    assert config.cameras[0].queue_size == 4 and config.cameras[0].pacing == "realtime"
    assert config.recognizer.max_batch == load_profile("cpu")["recognizer"]["max_batch"]
    assert config.mqtt.client_id == "lpr-edge-test"
    assert config.outbox.path.endswith("outbox.sqlite3")


def test_config_overrides_profile(tmp_path):
    config = load_config(cfg(tmp_path, "recognizer:\n  max_batch: 3\n"))
    assert config.recognizer.max_batch == 3
    assert config.recognizer.providers == ["CPUExecutionProvider"]


def test_unknown_key_is_named(tmp_path):
    out = problems(tmp_path, "mqtt:\n  hots: 1.2.3.4\n")
    assert "mqtt" in out and "'hots'" in out and "not a known key" in out


def test_wrong_type_names_path_value_and_expectation(tmp_path):
    out = problems(tmp_path, "mqtt:\n  port: 99999\n")
    assert "mqtt.port" in out and "99999" in out and "expected" in out


def test_bad_roi_points(tmp_path):
    base = BASE.replace("[[255, 229], [385, 224], [387, 291], [257, 294]]", "[[1, 2], [3, 4]]")
    out = problems(tmp_path, base=base)
    assert "cameras[0].rois[0].points" in out


def test_degenerate_roi(tmp_path):
    base = BASE.replace("[[255, 229], [385, 224], [387, 291], [257, 294]]", "[[1, 1], [2, 2], [3, 3], [4, 4]]")
    assert "no area" in problems(tmp_path, base=base)


def test_duplicate_yaml_key_is_refused(tmp_path):
    out = problems(tmp_path, "mqtt:\n  port: 1883\nmqtt:\n  port: 1884\n")
    assert "duplicate key 'mqtt'" in out


def test_duplicate_camera_ids(tmp_path):
    extra = """  - id: gate
    source: x.mp4
    mode: crop
"""
    assert "camera ids must be unique" in problems(tmp_path, base=BASE + extra)


def test_roi_mode_needs_rois(tmp_path):
    base = BASE.split("    rois:")[0]
    assert "mode 'roi' needs at least one ROI" in problems(tmp_path, base=base)


def test_bad_regex_and_missing_files(tmp_path):
    out = problems(tmp_path, "tracking:\n  format: '([A-Z'\nmqtt:\n  password_file: /nope/pw\n  tls:\n    ca_certs: /nope/ca.pem\n")
    assert "tracking.format" in out and "not a regular expression" in out
    assert "mqtt.password_file" in out and "mqtt.tls.ca_certs" in out


def test_missing_model(tmp_path):
    out = problems(tmp_path, base=BASE.replace("{model}", "/nope/model.onnx"))
    assert "model.path" in out and "no such file" in out


def test_unset_password_env(tmp_path):
    assert "LPR_TEST_UNSET_PW" in problems(tmp_path, "mqtt:\n  username: u\n  password_env: LPR_TEST_UNSET_PW\n")


def test_yaml_syntax_error(tmp_path):
    path = write_config(tmp_path / "bad.yaml", "cameras: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not valid YAML" in str(info.value)


def test_unknown_profile(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(cfg(tmp_path, base=BASE.replace("device_profile: cpu", "device_profile: toaster")))
    assert "unknown device profile 'toaster'" in str(info.value)


def test_profiles_are_valid_and_detected(tmp_path):
    backends = {name: load_profile(name)["recognizer"]["backend"] for name in list_profiles()}
    assert backends.pop("cpu") == "onnxruntime" and set(backends.values()) == {"tensorrt"}
    tree = tmp_path / "proc" / "device-tree"
    tree.mkdir(parents=True)
    for model, profile in (("NVIDIA Jetson Nano Developer Kit", "jetson-nano"),
                           ("NVIDIA Jetson AGX Orin Developer Kit", "jetson-agx-orin"),
                           ("NVIDIA Jetson Xavier NX Developer Kit", "jetson-xavier-nx")):
        (tree / "model").write_bytes(model.encode() + b"\x00")
        assert detect_profile(str(tmp_path)) == profile
    # every module's sample tree: tests/test_device.py


def test_password_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LPR_TEST_PW", "s3cret-env")
    config = load_config(cfg(tmp_path, "mqtt:\n  username: u\n  password_env: LPR_TEST_PW\n"))
    assert config.mqtt.password() == "s3cret-env"
    assert "s3cret-env" not in repr(config)
    (tmp_path / "pw").write_text("s3cret-file\n")
    config = load_config(cfg(tmp_path, "mqtt:\n  username: u\n  password_file: pw\n"))
    assert config.mqtt.password() == "s3cret-file"


def test_check_config_cli(tmp_path, us_model):
    (tmp_path / "pw").write_text("hunter2-secret\n")
    base = BASE.replace("{model}", us_model)
    path = cfg(tmp_path, "mqtt:\n  username: u\n  password_file: pw\n", base)
    result = run_cli("check-config", path)
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "hunter2-secret" not in result.stdout + result.stderr
    bad = cfg(tmp_path, "mqtt:\n  port: nope\n", base)
    result = run_cli("check-config", bad)
    assert result.returncode == 2 and "mqtt.port" in result.stderr


def test_cli_bad_arguments_exit_2():
    assert run_cli("run").returncode == 2
    assert run_cli("frobnicate").returncode == 2
    result = run_cli("run", "--config", "/nope.yaml")
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_self_intersecting_roi(tmp_path):
    bow_tie = BASE.replace("[[255, 229], [385, 224], [387, 291], [257, 294]]", "[[255, 229], [387, 291], [385, 224], [257, 294]]")
    assert "crosses itself" in problems(tmp_path, "", bow_tie) and "cameras[0].rois[0].points" in problems(tmp_path, "", bow_tie)


def test_check_config_prints_every_effective_setting_and_what_will_not_work_here(tmp_path, us_model):
    base = BASE.replace("{model}", us_model)
    path = cfg(tmp_path, "recognizer:\n  providers: [CUDAExecutionProvider, CPUExecutionProvider]\n", base)
    result = run_cli("check-config", "--config", path, "--skip-model")  # as `run --config FILE`
    assert result.returncode == 0, result.stderr
    summary = __import__("json").loads(result.stdout[:result.stdout.rindex("}") + 1])
    for key in ("tracking", "events", "home_assistant", "health", "mqtt", "outbox", "recognizer", "state_dir"):
        assert key in summary, key
    assert summary["cameras"][0]["rois"][0]["points"] == [[255, 229], [385, 224], [387, 291], [257, 294]]
    assert summary["tracking"]["min_reads"] >= 1 and "decode" in summary["cameras"][0]
    assert "CUDAExecutionProvider" in result.stderr and "warning:" in result.stderr
    csi = cfg(tmp_path, "", base.replace("{root}/samples/gate_us.mp4", "csi://0"))
    for args in (("check-config", csi, "--skip-model"), ("run", "--config", csi)):
        result = run_cli(*args)
        if "GStreamer:                   YES" in __import__("cv2").getBuildInformation():
            pytest.skip("this OpenCV has GStreamer")
        assert result.returncode == 2 and "cameras[0].source" in result.stderr and "no GStreamer" in result.stderr


def test_a_model_given_as_the_config_is_a_clear_error(us_model):
    for args in (("check-config", us_model), ("run", "--config", us_model)):
        result = run_cli(*args)
        assert result.returncode == 2 and "not a YAML text file" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


SLOTS = """
device_id: test
device_profile: cpu
model:
  path: {model}
models:
  ch:
    path: {model}
    name: ch_model
cameras:
  - id: gate
    source: {root}/samples/gate_us.mp4
    rois:
      - id: lane1
        points: [[255, 229], [385, 224], [387, 291], [257, 294]]
  - id: border
    source: {root}/samples/gate_us.mp4
    model: ch
    rois:
      - id: lane1
        points: [[255, 229], [385, 224], [387, 291], [257, 294]]
"""


def test_model_slots_are_chosen_per_camera(tmp_path):
    config = load_config(cfg(tmp_path, base=SLOTS))
    assert sorted(config.models) == ["ch", "default"] and config.models["default"] is config.model
    assert config.models["ch"].name == "ch_model" and os.path.isabs(config.models["ch"].path)
    assert [(c.id, c.model) for c in config.cameras] == [("gate", "default"), ("border", "ch")]
    assert config.used_slots() == ["default", "ch"]
    plain = load_config(cfg(tmp_path))  # no models: one slot, every camera on it
    assert list(plain.models) == ["default"] and plain.used_slots() == ["default"]


def test_an_unknown_model_slot_is_one_line_naming_the_camera_and_the_key(tmp_path):
    out = problems(tmp_path, base=SLOTS.replace("model: ch", "model: eu"))
    assert out.count("\n") == 0, out
    assert out.startswith("cameras[1].model: camera 'border' names model slot 'eu'") and "slots: default, ch" in out
    result = run_cli("check-config", cfg(tmp_path, base=SLOTS.replace("model: ch", "model: eu")))
    assert result.returncode == 2 and "cameras[1].model" in result.stderr and "Traceback" not in result.stderr


def test_model_slot_entries_are_checked_as_model_is(tmp_path):
    out = problems(tmp_path, base=SLOTS.replace("    name: ch_model", "    nome: ch_model"))
    assert "models.ch:" in out and "'nome' is not a known key" in out, out
    out = problems(tmp_path, base=SLOTS.replace("  ch:\n    path: {model}", "  ch:\n    path: /nope/ch.onnx"))
    assert "models.ch.path: value '/nope/ch.onnx' is wrong: no such file" in out
    out = problems(tmp_path, base=SLOTS.replace("  ch:\n", "  default:\n").replace("model: ch", "model: default"))
    assert "models.default: the slot named default is the top-level model: key" in out
    out = problems(tmp_path, base=SLOTS.replace("  ch:\n", "  'c h':\n").replace("model: ch", "model: default"))
    assert "models" in out and "does not match" in out
