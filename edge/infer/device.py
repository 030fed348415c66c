"""What hardware this is: the Jetson module (from the device tree), its L4T release, an NVIDIA GPU on x86,
and the device profile (configs/devices/<profile>.yaml) that fits it.

Sources, as jetson_stats reads them (rbonghi/jetson_stats jtop/core/jetson_variables.py):
/proc/device-tree/compatible (NUL-separated, e.g. "nvidia,p3768-0000+p3767-0005", "nvidia,tegra234"): the
module's part number, which tells an Orin Nano from an Orin NX; /proc/device-tree/model ("NVIDIA Jetson Nano
Developer Kit", "Jetson-AGX", ...) where the part number is unknown; /etc/nv_tegra_release ("# R32 (release),
REVISION: 7.1, ..."). Every path is relative to `root` so tests pass sample trees. Part numbers and module
strings come from public sources and have not been checked on each module here.
"""
import glob
import io
import os
import re
from collections import namedtuple
from dataclasses import asdict, dataclass, field
from typing import List, Optional

Module = namedtuple("Module", "slug name parts model_strings compute_capability dla_cores profile")

# Most specific first: an Orin module's SKU (p3767-0000/0001 Orin NX, -0003/0004/0005 Orin Nano) decides
# before the family; "Orin Nano" is tested before anything that says "Nano".
MODULES = (
    Module("orin-nx", "Jetson Orin NX", ("p3767-0000", "p3767-0001"), ("Orin NX",), "8.7", 2, "jetson-orin-nx"),
    Module("orin-nano", "Jetson Orin Nano", ("p3767-0003", "p3767-0004", "p3767-0005"), ("Orin Nano",), "8.7", 0,
           "jetson-orin-nano"),
    Module("agx-orin", "Jetson AGX Orin", ("p3701",), ("AGX Orin",), "8.7", 2, "jetson-agx-orin"),
    Module("orin", "Jetson Orin (module not told apart)", ("p3767", "tegra234"), ("Orin",), "8.7", 0, "jetson-orin"),
    Module("xavier-nx", "Jetson Xavier NX", ("p3668",), ("Xavier NX",), "7.2", 2, "jetson-xavier-nx"),
    Module("agx-xavier", "Jetson AGX Xavier", ("p2888", "p2972"), ("AGX Xavier", "Jetson-AGX"), "7.2", 2,
           "jetson-agx-xavier"),
    # TX2 (Pascal, no DLA, 4-8 GB) takes the Nano's small-memory profile
    Module("tx2", "Jetson TX2", ("p3310", "p3489", "p3636"), ("TX2",), "6.2", 0, "jetson-nano"),
    Module("nano", "Jetson Nano", ("p3448", "tegra210"), ("Jetson Nano",), "5.3", 0, "jetson-nano"),
)

# L4T major.minor -> the JetPack line it ships in (NVIDIA's JetPack archive)
JETPACK_LINES = (("32.6", "4.6"), ("32.7", "4.6.x"), ("35.1", "5.0.2"), ("35", "5.1.x"), ("36.3", "6.0"),
                 ("36.4", "6.1/6.2"), ("36", "6.x"), ("38", "7.x"))

PATHS = {
    "model": "proc/device-tree/model",
    "compatible": "proc/device-tree/compatible",
    "tegra_release": "etc/nv_tegra_release",
    "nvidia_driver": "proc/driver/nvidia/version",
    "nvidia_gpus": "proc/driver/nvidia/gpus",
    "nvidia_dev": "dev/nvidia0",
    "meminfo": "proc/meminfo",
}


@dataclass
class DeviceInfo:
    kind: str  # jetson, x86-nvidia, cpu
    profile: str
    module: Optional[str] = None  # slug, e.g. nano, xavier-nx, orin-nano
    module_name: Optional[str] = None
    model: str = ""
    compatible: List[str] = field(default_factory=list)
    l4t: Optional[str] = None
    jetpack: Optional[str] = None
    gpu_name: Optional[str] = None  # x86: from the driver's /proc entry; CUDA gives the exact name at run time
    compute_capability: Optional[str] = None
    dla_cores: int = 0
    memory_mb: Optional[int] = None
    nvidia_driver: Optional[str] = None

    def as_dict(self):
        return asdict(self)


def _read(root, key):
    try:
        with io.open(os.path.join(root, PATHS[key]), "rb") as f:
            return f.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return None


def parse_tegra_release(text):
    """'# R32 (release), REVISION: 7.1, GCID: ...' -> '32.7.1'."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    return "%s.%s" % (match.group(1), match.group(2).rstrip(".")) if match else None


def jetpack_line(l4t):
    if not l4t:
        return None
    for prefix, line in JETPACK_LINES:
        if l4t == prefix or l4t.startswith(prefix + "."):
            return line
    return None


def match_module(compatible, model):
    """The Module for a device tree's compatible strings and model string, else None."""
    tokens = set()
    for entry in compatible:
        for piece in re.split(r"[,+]", entry):
            piece = piece.strip().lower()
            tokens.add(piece)
            tokens.add(piece.split("-")[0])  # the part number without its SKU
    for module in MODULES:
        if any(part in tokens for part in module.parts if "-" in part):
            return module
    lowered = model.lower()
    for module in MODULES:
        if any(s.lower() in lowered for s in module.model_strings):
            return module
    for module in MODULES:
        if any(part in tokens for part in module.parts if "-" not in part):
            return module
    return None


def _memory_mb(root):
    match = re.search(r"MemTotal:\s+(\d+) kB", _read(root, "meminfo") or "")
    return int(match.group(1)) // 1024 if match else None


def _x86_gpu_name(root):
    for info in sorted(glob.glob(os.path.join(root, PATHS["nvidia_gpus"], "*", "information"))):
        with io.open(info, encoding="utf-8", errors="replace") as f:
            match = re.search(r"^Model:\s*(.+)$", f.read(), re.M)
        if match:
            return match.group(1).strip()
    return None


def detect(root="/"):
    """DeviceInfo for the machine whose / is `root`."""
    model = (_read(root, "model") or "").strip("\x00\n ")
    compatible = [c for c in (_read(root, "compatible") or "").split("\x00") if c.strip()]
    memory = _memory_mb(root)
    module = match_module(compatible, model) if (model or compatible) else None
    if module is not None:
        l4t = parse_tegra_release(_read(root, "tegra_release"))
        return DeviceInfo("jetson", module.profile, module.slug, module.name, model, compatible, l4t,
                          jetpack_line(l4t), None, module.compute_capability, module.dla_cores, memory)
    driver = _read(root, "nvidia_driver")
    if driver or os.path.exists(os.path.join(root, PATHS["nvidia_dev"])):
        version = re.search(r"Kernel Module(?: for \S+)?\s+([\d.]+)", driver or "")
        return DeviceInfo("x86-nvidia", "x86-nvidia", model=model, compatible=compatible,
                          gpu_name=_x86_gpu_name(root), memory_mb=memory,
                          nvidia_driver=version.group(1) if version else None)
    return DeviceInfo("cpu", "cpu", model=model, compatible=compatible, memory_mb=memory)
