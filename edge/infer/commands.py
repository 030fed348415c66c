"""`lpr-edge device` and `lpr-edge engines build|list|prune` (registered by edge/cli.py's build_parser)."""
import argparse
import json
import os
import sys

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def probe_backends():
    """Which backends import here, their versions, and why any is unusable."""
    from edge.infer.tensorrt_backend import INSTALL_HINT

    out = {}
    try:
        import tensorrt as trt

        out["tensorrt"] = {"usable": True, "version": trt.__version__, "api": _trt_api(trt)}
    except Exception as exc:
        out["tensorrt"] = {"usable": False, "reason": "does not import (%s); %s" % (exc, INSTALL_HINT)}
    try:
        import pycuda
        import pycuda.driver as cuda

        entry = {"usable": True, "version": getattr(pycuda, "VERSION_TEXT", "?")}
        try:
            cuda.init()
            device = cuda.Device(0)
            entry.update(gpu=device.name(), compute_capability="%d.%d" % device.compute_capability())
        except Exception as exc:
            entry.update(usable=False, reason="imports, but CUDA does not start (%s): no GPU, no driver, or no "
                                              "access to /dev/nvhost-* or /dev/nvidia* (the video group)"
                                              % str(exc).splitlines()[0])
        out["pycuda"] = entry
    except Exception as exc:
        out["pycuda"] = {"usable": False, "reason": "does not import (%s); `pip install pycuda` (it compiles "
                                                    "against CUDA: nvcc on PATH)" % exc}
    try:
        import onnxruntime as ort

        out["onnxruntime"] = {"usable": True, "version": ort.__version__, "providers": ort.get_available_providers()}
    except Exception as exc:
        out["onnxruntime"] = {"usable": False, "reason": "does not import (%s); `pip install onnxruntime` (on a "
                                                         "Jetson NVIDIA's onnxruntime-gpu wheel)" % exc}
    if out["tensorrt"]["usable"] and not out["pycuda"]["usable"]:
        out["tensorrt"].update(usable=False, reason="imports, but pycuda is unusable: %s" % out["pycuda"]["reason"])
    return out


def _trt_api(trt):
    """The API generation feature probing picks here (tensorrt_backend.py)."""
    ctx = getattr(trt, "IExecutionContext", None)
    parts = ["tensor names, execute_async_v3" if ctx is not None and hasattr(ctx, "execute_async_v3")
             else "binding indices, execute_async_v2",
             "FP16 builder flag" if hasattr(trt.BuilderFlag, "FP16") else "no FP16 flag (FP16 ONNX variants)"]
    return ", ".join(parts)


def cmd_device(args):
    from edge.config import ConfigError, load_profile
    from edge.infer.device import detect

    info = detect(args.root)
    try:
        profile = load_profile(info.profile)
    except ConfigError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_CONFIG
    backends = probe_backends()
    wanted = profile["recognizer"]["backend"]
    runs = wanted
    if wanted == "tensorrt" and not backends["tensorrt"]["usable"]:
        runs = "onnxruntime (fallback: %s)" % backends["tensorrt"]["reason"].split(";")[0]
    if args.json:
        print(json.dumps({"device": info.as_dict(), "profile": dict(profile, name=info.profile),
                          "backends": backends, "runs_on": runs}, indent=1))
        return EXIT_OK
    print("device: %s" % _describe_device(info))
    r = profile["recognizer"]
    print("profile: %s (backend %s%s, batch %d)" % (
        info.profile, wanted, ", %s, workspace %s MB, %s" % (
            r.get("precision", "fp16"), r.get("workspace_mb", 512),
            "DLA core %d" % r["dla_core"] if r.get("dla_core", -1) >= 0 else "GPU") if wanted == "tensorrt" else "",
        r["max_batch"]))
    print("backends:")
    for name, label in (("tensorrt", "TensorRT"), ("pycuda", "pycuda"), ("onnxruntime", "onnxruntime")):
        entry = backends[name]
        if entry["usable"]:
            extra = entry.get("api") or ", ".join(entry.get("providers", [])) or \
                "%s (compute %s)" % (entry.get("gpu"), entry.get("compute_capability"))
            print("  %s %s: usable (%s)" % (label, entry.get("version", ""), extra))
        else:
            print("  %s: not usable: %s" % (label, entry["reason"]))
    print("the daemon runs on: %s" % runs)
    return EXIT_OK


def _describe_device(info):
    if info.kind == "jetson":
        return "%s (%s), model %r, L4T %s (JetPack %s), GPU compute %s, %d DLA cores, %s MB memory" % (
            info.module_name, info.module, info.model, info.l4t or "unknown", info.jetpack or "unknown",
            info.compute_capability, info.dla_cores, info.memory_mb)
    if info.kind == "x86-nvidia":
        return "x86 with an NVIDIA GPU (%s, driver %s)" % (info.gpu_name or "name unknown", info.nvidia_driver or "?")
    return "no NVIDIA GPU found (CPU only)"


# --- engines ---------------------------------------------------------------------------------------
def _config_or_exit(path):
    from edge.cli import _load_config_or_exit

    return _load_config_or_exit(path, bind_health=False)  # engines build while the service runs


def _cache_from_args(args):
    from edge.infer.engine_cache import EngineCache

    if args.dir:
        return EngineCache(args.dir), None
    config = _config_or_exit(args.config)
    if config is None:
        return None, None
    return EngineCache(config.recognizer.engine_dir, config.recognizer.engines_keep), config


def cmd_engines_build(args):
    """The TensorRT engine of every model the config runs: each model slot, and the detector."""
    from edge.recognize.backends import infer_options

    config = _config_or_exit(args.config)
    if config is None:
        return EXIT_CONFIG
    if config.recognizer.backend != "tensorrt":
        print("recognizer.backend is %s (profile %s): no TensorRT engine to build"
              % (config.recognizer.backend, config.device_profile))
        return EXIT_OK
    models = [("model", config.model.path)] + [("models.%s" % n, m.path) for n, m in sorted(config.models.items())]
    if config.detector is not None:  # the detector runs on the recognizer's backend: its engine too
        options = infer_options(config.recognizer)
        options.max_batch = config.detector.max_batch
        models.append(("detector", config.detector.path))
    for key, path in models:
        code = _build_one(key, path, config, options if key == "detector" else infer_options(config.recognizer))
        if code != EXIT_OK:
            return code
    return EXIT_OK


def _build_one(key, path, config, options):
    from edge.infer.base import BackendUnavailable, ModelError
    from edge.infer.tensorrt_backend import TensorRTSession

    if not os.path.isfile(path):
        print("error: %s: %s: no such model file" % (key, path), file=sys.stderr)
        return EXIT_CONFIG
    try:
        session = TensorRTSession(path, options)
    except ModelError as exc:
        print("error: %s: %s" % (key, exc), file=sys.stderr)
        return EXIT_CONFIG
    except BackendUnavailable as exc:
        print("error: %s: no TensorRT engine built: %s" % (key, exc), file=sys.stderr)
        return EXIT_FAILURE
    record = session.record
    session.close()
    engine = session.cache.paths(record["parts"])[0]
    print("%s: %s %s (%s, batch %s, TensorRT %s, %s)" % (
        key, "built in %.1f s:" % record["build_seconds"] if record["built"] else "already cached:", engine,
        record["parts"]["precision"], "/".join(str(b) for b in record["parts"]["batch_profile"]),
        record["parts"]["tensorrt"], record["parts"]["gpu"]))
    return EXIT_OK


def cmd_engines_list(args):
    from edge.recognize.model import sha256_file

    cache, config = _cache_from_args(args)
    if cache is None:
        return EXIT_CONFIG
    current = sha256_file(config.model.path) if config and os.path.isfile(config.model.path) else None
    records = cache.records()
    if args.json:
        print(json.dumps(records, indent=1, sort_keys=True))
        return EXIT_OK
    if not records:
        print("no engines in %s" % cache.folder)
        return EXIT_OK
    print("engines in %s:" % cache.folder)
    for r in records:
        p = r["parts"]
        print("  %s  %.1f MB, %s old%s" % (os.path.basename(r["path"]), r["size"] / 1e6, _age(r["age_s"]),
                                           "  [the config's model]" if current and p.get("model_sha256") == current
                                           else ""))
        if p:
            print("    model %s (sha256 %s), %s, batch %s, %s, workspace %s MB, TensorRT %s, %s (compute %s)%s" % (
                p["model"], p["model_sha256"][:12], p["precision"], "/".join(str(b) for b in p["batch_profile"]),
                "DLA core %d" % p["dla_core"] if p["dla_core"] >= 0 else "GPU", p["workspace_mb"], p["tensorrt"],
                p["gpu"], p["compute_capability"], ", %s L4T %s" % (p["jetson_module"], p["l4t"])
                if p.get("jetson_module") else ""))
            if r.get("warnings"):
                print("    %d TensorRT warning(s) at build, first: %s" % (len(r["warnings"]), r["warnings"][0]))
        else:
            print("    %s" % r.get("problem"))
    return EXIT_OK


def cmd_engines_prune(args):
    cache, config = _cache_from_args(args)
    if cache is None:
        return EXIT_CONFIG
    keep = args.keep or cache.keep
    removed = cache.prune(keep)
    print("removed %d engine(s) from %s, kept the newest %d per model" % (len(removed), cache.folder, keep))
    for path in removed:
        print("  %s" % os.path.basename(path))
    return EXIT_OK


def _age(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return "%d %s" % (seconds // size, unit)
    return "%d s" % seconds


def add_commands(sub):
    p = sub.add_parser("device", help="what hardware this is, the profile it gets, which backends work",
                       description="Detect the device (Jetson module, L4T, NVIDIA GPU), print the device profile "
                                   "it gets and which inference backends import here (TensorRT and its version, "
                                   "pycuda, ONNX Runtime and its providers), and why any is unusable.")
    p.add_argument("--root", default="/", help=argparse.SUPPRESS)  # where a test's sample /proc and /etc trees are
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_device)

    p = sub.add_parser("engines", help="build, list or prune the TensorRT engine cache",
                       description="The TensorRT engine cache (recognizer.engine_dir): `build` builds the config's "
                                   "engine now (make install runs it on a Jetson so the first start is fast), `list` "
                                   "shows each engine's key, size, age and model, `prune` keeps the newest per model.")
    esub = p.add_subparsers(dest="engines_command", metavar="ACTION")
    e = esub.add_parser("build", help="build (or find cached) the engine for the config's model")
    e.add_argument("--config", required=True, help="config YAML")
    e.set_defaults(func=cmd_engines_build)
    for name, func, text in (("list", cmd_engines_list, "list the engines"),
                             ("prune", cmd_engines_prune, "remove all but the newest engines per model")):
        e = esub.add_parser(name, help=text)
        where = e.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", help="config YAML (its recognizer.engine_dir)")
        where.add_argument("--dir", help="engine cache folder")
        if name == "prune":
            e.add_argument("--keep", type=int, help="engines kept per model (default: recognizer.engines_keep)")
        else:
            e.add_argument("--json", action="store_true", help="print the sidecars as JSON")
        e.set_defaults(func=func)
    engines = p
    engines.set_defaults(func=lambda args: (engines.print_help(), EXIT_CONFIG)[1])
