"""Device detection from sample /proc and /etc trees of every module (written here, as the modules write
them: NUL-terminated device-tree strings), the profile each gets, and `lpr-edge device`."""
import json
import os

import pytest

from edge.config import detect_profile, load_profile
from edge.infer.device import detect, jetpack_line, parse_tegra_release
from helpers import run_cli

NANO_RELEASE = "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, DATE: Sat Feb 19 17:05:08 UTC 2022\n"
XAVIER_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"
ORIN_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"

# (model string, compatible strings, nv_tegra_release) -> (module, profile, compute capability, DLA cores, L4T, JetPack)
MODULES = [
    ("NVIDIA Jetson Nano Developer Kit", ["nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,jetson-nano", "nvidia,tegra210"],
     NANO_RELEASE, ("nano", "jetson-nano", "5.3", 0, "32.7.1", "4.6.x")),
    ("NVIDIA Jetson Nano 2GB Developer Kit", ["nvidia,p3542-0000+p3448-0003", "nvidia,jetson-nano-2gb", "nvidia,tegra210"],
     "# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64\n",
     ("nano", "jetson-nano", "5.3", 0, "32.6.1", "4.6")),
    ("quill", ["nvidia,p3489-0888", "nvidia,tegra186"], NANO_RELEASE.replace("t210ref", "t186ref"),
     ("tx2", "jetson-nano", "6.2", 0, "32.7.1", "4.6.x")),
    ("NVIDIA Jetson Xavier NX Developer Kit", ["nvidia,p3509-0000+p3668-0000", "nvidia,tegra194"], XAVIER_RELEASE,
     ("xavier-nx", "jetson-xavier-nx", "7.2", 2, "35.4.1", "5.1.x")),
    ("Jetson-AGX", ["nvidia,p2972-0000", "nvidia,galen", "nvidia,tegra194"], NANO_RELEASE.replace("t210ref", "t186ref"),
     ("agx-xavier", "jetson-agx-xavier", "7.2", 2, "32.7.1", "4.6.x")),
    ("NVIDIA Jetson AGX Xavier Developer Kit", ["nvidia,p2822-0000+p2888-0004", "nvidia,tegra194"], XAVIER_RELEASE,
     ("agx-xavier", "jetson-agx-xavier", "7.2", 2, "35.4.1", "5.1.x")),
    ("NVIDIA Jetson AGX Orin Developer Kit", ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"],
     ORIN_RELEASE, ("agx-orin", "jetson-agx-orin", "8.7", 2, "36.4.3", "6.1/6.2")),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", ["nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000",
                                                                   "nvidia,tegra234"],
     "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64\n",
     ("orin-nx", "jetson-orin-nx", "8.7", 2, "36.3.0", "6.0")),
    ("NVIDIA Jetson Orin Nano Developer Kit", ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"],
     ORIN_RELEASE, ("orin-nano", "jetson-orin-nano", "8.7", 0, "36.4.3", "6.1/6.2")),
    # an Orin carrier board whose model string says neither: the part number decides
    ("Custom carrier", ["vendor,board+p3767-0004", "nvidia,p3767-0004", "nvidia,tegra234"], ORIN_RELEASE,
     ("orin-nano", "jetson-orin-nano", "8.7", 0, "36.4.3", "6.1/6.2")),
    ("Some Orin board", ["vendor,board", "nvidia,tegra234"], None, ("orin", "jetson-orin", "8.7", 0, None, None)),
]


def write_tree(root, model=None, compatible=None, release=None, nvidia_driver=None, gpu_model=None):
    def put(rel, data):
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())

    if model is not None:
        put("proc/device-tree/model", model.encode() + b"\x00")
    if compatible is not None:
        put("proc/device-tree/compatible", b"".join(c.encode() + b"\x00" for c in compatible))
    if release is not None:
        put("etc/nv_tegra_release", release)
    if nvidia_driver is not None:
        put("proc/driver/nvidia/version", nvidia_driver)
    if gpu_model is not None:
        put("proc/driver/nvidia/gpus/0000:01:00.0/information", "Model: \t\t %s\nIRQ:   \t\t 133\n" % gpu_model)
    put("proc/meminfo", "MemTotal:        3964656 kB\nMemFree:          123 kB\n")
    return str(root)


@pytest.mark.parametrize("model,compatible,release,expected", MODULES, ids=[m[3][0] + "-" + m[0][:12] for m in MODULES])
def test_every_jetson_module(tmp_path, model, compatible, release, expected):
    info = detect(write_tree(tmp_path, model, compatible, release))
    assert (info.module, info.profile, info.compute_capability, info.dla_cores, info.l4t, info.jetpack) == expected
    assert info.kind == "jetson" and info.memory_mb == 3871 and info.model == model
    profile = load_profile(info.profile)["recognizer"]
    assert profile["backend"] == "tensorrt" and profile["precision"] == "fp16"
    assert detect_profile(str(tmp_path)) == info.profile


def test_profiles_fit_the_hardware():
    nano = load_profile("jetson-nano")["recognizer"]
    assert nano["workspace_mb"] <= 256 and nano["max_batch"] <= 16  # 4 GB shared; 1 GB workspaces get OOM-killed
    for name in ("jetson-nano", "jetson-orin-nano", "jetson-orin"):
        assert load_profile(name)["recognizer"]["dla_core"] == -1  # no DLA on these modules
    assert load_profile("x86-nvidia")["recognizer"]["backend"] == "tensorrt"
    assert load_profile("cpu")["recognizer"]["backend"] == "onnxruntime"


def test_x86_with_an_nvidia_gpu(tmp_path):
    root = write_tree(tmp_path, nvidia_driver="NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Thu Feb 22 "
                                              "01:44:30 UTC 2024\nGCC version:  gcc version 12.2.0\n",
                      gpu_model="NVIDIA GeForce RTX 3060")
    info = detect(root)
    assert (info.kind, info.profile, info.gpu_name, info.nvidia_driver, info.module) == \
        ("x86-nvidia", "x86-nvidia", "NVIDIA GeForce RTX 3060", "550.54.14", None)


def test_cpu_only(tmp_path):
    info = detect(write_tree(tmp_path))
    assert (info.kind, info.profile, info.module, info.l4t) == ("cpu", "cpu", None, None)


def test_tegra_release_and_jetpack_lines():
    assert parse_tegra_release(NANO_RELEASE) == "32.7.1"
    assert parse_tegra_release("garbage") is None and parse_tegra_release(None) is None
    assert [jetpack_line(v) for v in ("32.6.1", "35.1.0", "35.5.0", "36.3.0", "99.1")] == \
        ["4.6", "5.0.2", "5.1.x", "6.0", None]


def test_device_command_prints_detection_profile_and_backends(tmp_path):
    root = write_tree(tmp_path, *MODULES[0][:3])
    result = run_cli("device", "--root", root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Jetson Nano" in out and "L4T 32.7.1" in out and "profile: jetson-nano" in out
    assert "tensorrt" in out and "onnxruntime" in out and "CPUExecutionProvider" in out
    assert "TensorRT: not usable: does not import" in out and "--system-site-packages" in out  # why, and how
    assert "the daemon runs on: onnxruntime (fallback" in out
    result = run_cli("device", "--root", root, "--json")
    data = json.loads(result.stdout)
    assert data["device"]["module"] == "nano" and data["profile"]["name"] == "jetson-nano"
    assert data["backends"]["onnxruntime"]["usable"] and not data["backends"]["tensorrt"]["usable"]
    assert data["backends"]["tensorrt"]["reason"]
