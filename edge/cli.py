"""lpr-edge: license-plate recognition daemon and tools.

Exit codes: 0 ok, 2 bad config or arguments, 1 runtime failure.
"""
import argparse
import json
import logging
import sys

from edge import __version__

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2

log = logging.getLogger("edge.cli")


def _print_config_error(lines):
    print("config error:\n%s" % "\n".join("  " + line for line in lines), file=sys.stderr)


def _load_config_or_exit(path, preflight=True, bind_health=True):
    """The config, checked against this machine too (state dir, health port, source files); None after
    printing every problem (the caller exits 2)."""
    from edge.config import ConfigError, load_config
    from edge.config.preflight import preflight_problems

    try:
        config = load_config(path)
    except ConfigError as exc:
        _print_config_error(str(exc).splitlines())
        return None
    problems = preflight_problems(config, bind_health) if preflight else []
    if problems:
        _print_config_error("%s: %s" % (path, p) for p in problems)
        return None
    return config


def cmd_run(args):
    from edge.app import App, install_signal_handlers
    from edge.log import setup_logging
    from edge.recognize.model import ModelError

    config = _load_config_or_exit(args.config)
    if config is None:
        return EXIT_CONFIG
    setup_logging(args.log_level or config.log_level)
    app = App(config)
    try:
        app.init()
    except ModelError as exc:
        log.error("model: %s", exc)
        return EXIT_CONFIG
    except OSError as exc:  # what preflight could not foresee (the port taken in between): a config error
        log.error("cannot start: %s", exc)
        return EXIT_CONFIG
    install_signal_handlers(app.stop_event)
    app.start()
    try:
        code = app.run_until_stopped()
    finally:
        app.stop()
    return code


def cmd_check_config(args):
    if not (args.config_option or args.config):
        print("error: check-config needs a config file: check-config FILE or check-config --config FILE",
              file=sys.stderr)
        return EXIT_CONFIG
    from edge.recognize.backends import create_backend
    from edge.recognize.model import ModelError, load_model_info
    from edge.recognize.recognizer import plate_format_for
    from edge.capture.sources import describe_decode
    from edge.config.preflight import warnings_for
    from edge.redact import redact

    config = _load_config_or_exit(args.config_option or args.config, bind_health=not args.skip_port)
    if config is None:
        return EXIT_CONFIG
    summary = config.as_dict()  # every effective setting, defaults and the device profile merged in
    slots = [("model", config.model, summary["model"])]
    slots += [("models.%s" % name, m, summary["models"][name]) for name, m in sorted(config.models.items())]
    for key, model, shown in slots:  # every model slot, as the daemon would load it
        try:
            info = load_model_info(model.path, model.characters, model.name, model.version)
            plate_format = plate_format_for(info, model.plate_format)
            if not args.skip_model:
                create_backend(config.recognizer.backend, info, config.recognizer).close()
        except ModelError as exc:
            print("config error:\n  %s: %s" % (key, exc), file=sys.stderr)
            return EXIT_CONFIG
        shown.update({"path": info.path, "name": info.name, "version": info.version,
                      "characters": info.characters_path,
                      "plate_format": plate_format.pattern if plate_format else None})
    if config.detector is not None and not args.skip_model:
        from edge.detect import Detector

        try:
            detector = Detector.load(config.detector.path, config.recognizer.backend)
        except ModelError as exc:
            print("config error:\n  detector: %s" % exc, file=sys.stderr)
            return EXIT_CONFIG
        summary["detector"].update(contract=detector.kind, input=list(detector.input_size), sha256=detector.sha256)
        detector.close()
    for camera, shown in zip(config.cameras, summary["cameras"]):
        shown["source"] = redact(camera.source)
        shown["decode"] = describe_decode(camera)
        shown["password"] = "(set)" if (camera.password_env or camera.password_file) else None
    summary["mqtt"]["password"] = "(set)" if (config.mqtt.password_env or config.mqtt.password_file) else None
    summary["warnings"] = warnings_for(config)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    for warning in summary["warnings"]:
        print("warning: %s" % warning, file=sys.stderr)
    print("config OK: %s" % (args.config_option or args.config))
    return EXIT_OK


def _recognizer_from_args(args):
    """The recognizer `evaluate` and `bench` run: --model, --characters, --backend, --providers, --threads."""
    from edge.config.model import RecognizerConfig
    from edge.recognize.backends import create_backend
    from edge.recognize.model import load_model_info
    from edge.recognize.recognizer import Recognizer, plate_format_for

    info = load_model_info(args.model, args.characters)
    plate_format = plate_format_for(info, "" if args.plate_format == "none" else args.plate_format)
    rc = RecognizerConfig(backend=args.backend, providers=args.providers.split(","), threads=args.threads,
                          engine_dir=args.engine_dir, max_batch=_largest_batch(args))
    return Recognizer(info, create_backend(args.backend, info, rc), plate_format)


def _largest_batch(args):
    """The TensorRT profile's max for evaluate/bench: the largest batch they run."""
    sizes = getattr(args, "batch_sizes", None) or [args.batch if isinstance(getattr(args, "batch", None), int) else 64]
    return min(256, max(sizes))


def _add_recognizer_args(p, model_required=True):
    p.add_argument("--model", required=model_required, help="ONNX model")
    p.add_argument("--characters", help="characters list (default: found beside the model)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="tensorrt builds (or reuses) an engine in --engine-dir; ONNX Runtime where it cannot")
    p.add_argument("--engine-dir", default="state/engines", help="TensorRT engine cache (backend tensorrt)")
    p.add_argument("--providers", default="CPUExecutionProvider", help="ONNX Runtime providers, comma-separated")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: backend default)")
    p.add_argument("--plate-format", metavar="PATTERN",
                   help="plate format reads are held to, as model.plate_format in the config ('none': greedy "
                        "reads only; default: the model's manifest entry)")


def _crop_as_read(crops):
    """The contact sheet shows each misread crop as the model read it."""
    if crops != "detector":
        return None
    import os

    from edge.evaluate import detector_crop

    return lambda image, path: detector_crop(image, os.path.splitext(os.path.basename(path))[0])


def cmd_evaluate(args):
    from edge.dataset import DatasetError, read_id_list
    from edge.evaluate import evaluate
    from edge.recognize.model import ModelError

    normalize = {}
    for item in args.normalize or []:
        if "=" not in item or len(item.split("=", 1)[0]) != 1:
            print("error: --normalize takes FROM=TO with single characters, e.g. O=0", file=sys.stderr)
            return EXIT_CONFIG
        a, b = item.split("=", 1)
        normalize[a] = b
    try:
        recognizer = _recognizer_from_args(args)
        only = set().union(*(read_id_list(p) for p in args.only_ids)) if args.only_ids else None
        result = evaluate(recognizer, args.data, normalize or None, args.batch, args.limit,
                          keep_reads=args.show_errors or bool(args.contact_sheet), only_ids=only, crops=args.crops)
    except (IOError, OSError) as exc:
        print("error: %s: %s" % (getattr(exc, "filename", None) or "--only-ids", exc.strerror or exc), file=sys.stderr)
        return EXIT_CONFIG
    except (ModelError, DatasetError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_CONFIG
    misreads = [r for r in result.pop("reads", []) if r[1] != r[2]]
    if args.show_errors:
        for path, label, text, score in misreads:
            print("%s: truth %s read %s (score %.2f)" % (path, label, text or "(nothing)", score))
    if args.contact_sheet:
        from edge.contact_sheet import write_contact_sheet

        try:
            drawn = write_contact_sheet(args.contact_sheet, misreads, prepare=_crop_as_read(args.crops))
        except OSError as exc:
            print("error: --contact-sheet %s: %s" % (args.contact_sheet, exc.strerror or exc), file=sys.stderr)
            return EXIT_CONFIG
        print("contact sheet: %s (%d of %d misreads: crop, truth, read)" % (args.contact_sheet, drawn, len(misreads)))
    print("model %s on %s (%s)" % (result["model"], result["data"], result["backend"]))
    print("plates: %d evaluated, %d skipped %s" % (result["count"], result["skipped"],
                                                    result["skipped_reasons"] or ""))
    print("full-plate accuracy: %.2f%% (%d/%d) on %s crops" % (100 * result["plate_accuracy"], result["correct"],
                                                              result["count"], result["crops"]))
    if len(result["per_set"]) > 1:
        print("per set: " + ", ".join("%s %.2f%% (%d/%d)" % (name, 100 * v["plate_accuracy"], v["correct"], v["count"])
                                      for name, v in result["per_set"].items()))
    print("character accuracy: %.2f%%" % (100 * result["char_accuracy"]))
    if result["plate_format"]:
        print("plate format: %d reads re-decoded to fit it, %d do not fit (%s)"
              % (result["format_refits"], result["format_misses"], result["plate_format"]))
    print("throughput: %s plates/s inference, %s plates/s with decoding of files"
          % (result["plates_per_s_inference"], result["plates_per_s_total"]))
    if result["confusions"]:
        print("most frequent confusions: " + ", ".join("%s->%s x%d" % (c["truth"], c["read"], c["count"])
                                                         for c in result["confusions"]))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    return EXIT_OK


def _bench_batches(args):
    if args.seconds <= 0:
        raise ValueError("--seconds must be more than 0 (got %g)" % args.seconds)
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        raise ValueError("--batch takes sizes separated by commas, e.g. 1,8 (got %s)" % args.batch)
    if min(batches) < 1:
        raise ValueError("--batch sizes must be at least 1 (got %s)" % args.batch)
    return batches


def cmd_bench(args):
    from edge.bench import add_flops, bench, count_macs, reference_gflops
    from edge.recognize.model import ModelError

    if args.what == "pipeline":
        return cmd_bench_pipeline(args)
    if args.seconds is None:
        args.seconds = 3.0
    if not args.model:
        print("error: bench %s needs --model M.onnx" % args.what, file=sys.stderr)
        return EXIT_CONFIG
    if args.what == "detector":
        from edge.detect.commands import bench_detector_command

        return bench_detector_command(args)
    try:
        batches = _bench_batches(args)
        args.batch_sizes = batches  # the TensorRT profile's max: the largest batch measured
        recognizer = _recognizer_from_args(args)
        info = recognizer.model
    except (ModelError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        macs = count_macs(info.path)
    except Exception as exc:  # counting is a report, never a reason to stop the benchmark
        print("warning: MACs not counted for %s: %s" % (info.path, exc), file=sys.stderr)
        macs = None
    rows = bench(recognizer, batches, args.seconds)
    reference = reference_gflops(args.threads) if recognizer.backend.name == "onnxruntime" else None
    add_flops(rows, macs, reference)
    print("model %s on %s (%s)" % (info.name, recognizer.backend.name, ",".join(recognizer.backend.providers)))
    if macs:
        print("%.3f GMAC per plate (conv %.3f, matmul %.3f, LSTM %.3f), counted from the ONNX graph"
              % (macs["total"] / 1e9, macs["conv"] / 1e9, macs["matmul"] / 1e9, macs["lstm"] / 1e9))
    if reference:
        print("the same runtime and threads on plain work: %.1f GFLOP/s on a 1024^3 matrix product, %.1f GFLOP/s "
              "on a 3x3 convolution" % (reference["matmul"], reference["conv3x3"]))
    print("%6s %10s %9s %9s %8s %9s %8s %8s" % ("batch", "plates/s", "p50 ms", "p99 ms", "x first", "GFLOP/s",
                                               "vs conv", "vs mm"))
    for row in rows:
        print("%6d %10.1f %9.2f %9.2f %8.2f %9s %8s %8s" % (
            row["batch"], row["plates_per_s"], row["latency_ms_p50"], row["latency_ms_p99"], row["speedup_vs_first"],
            _fmt(row["gflops"]), _fmt(row["vs_conv3x3"], "%.0f%%", 100), _fmt(row["vs_matmul"], "%.0f%%", 100)))
    if args.json:
        print(json.dumps({"model": info.name, "sha256": info.sha256, "backend": recognizer.backend.name,
                          "macs": macs, "reference_gflops": reference, "rows": rows}))
    return EXIT_OK


def cmd_bench_pipeline(args):
    from edge.bench_pipeline import BenchError, run
    from edge.config import ConfigError
    from edge.recognize.model import ModelError

    if args.seconds is None:  # a pipeline needs longer than a batch size
        args.seconds = 20.0
    try:
        counts = [int(c) for c in args.cameras.split(",")]
        if min(counts) < 1 or args.seconds < 5:
            raise ValueError
    except ValueError:
        print("error: bench pipeline needs --cameras as counts of at least 1 (e.g. 1,4,8) and --seconds of at "
              "least 5 (got %s, %g)" % (args.cameras, args.seconds), file=sys.stderr)
        return EXIT_CONFIG
    try:
        # --backend tensorrt replaces the config's backend (the selftest's pipeline run); the default keeps it
        trt = args.backend == "tensorrt"
        result = run(counts, args.seconds, args.mode, args.fps, args.config, args.detect_fps,
                     "tensorrt" if trt else None, args.engine_dir if trt else None)
    except (BenchError, ConfigError, ModelError, IOError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_CONFIG
    print("pipeline, mode %s%s, %s, on %s (%d cores), %s" % (
        result["mode"], ", %g fps" % args.fps if args.fps else "", result["backend"], result["machine"]["cpu"],
        result["machine"]["cores"], result["date"]))
    print("%7s %9s %8s %8s %7s %9s %9s %6s %7s %8s" % ("cameras", "fps/cam", "dropped", "det/s", "events",
                                                      "p50 ms", "p99 ms", "CPU%", "RSS MB", "overhead"))
    for r in result["runs"]:
        print("%7d %9.1f %8d %8s %7d %9s %9s %6.0f %7.0f %8s" % (
            r["cameras"], r["fps_per_camera"], r["frames_dropped"], _fmt(r["detections_per_s"]), r["events"],
            _fmt(r["latency_ms_p50"]), _fmt(r["latency_ms_p99"]), r["cpu_percent"], r["rss_mb"],
            _fmt(r["overhead"], "%.0f%%", 100)))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return EXIT_OK


def _fmt(value, pattern="%.1f", scale=1.0):
    return "-" if value is None else pattern % (value * scale)


def cmd_snapshot(args):
    """A live frame of one camera with ROIs and a pixel grid drawn, as JPEG: what an installer sets ROIs from."""
    import os
    import time

    from edge.capture.sources import SourceError, open_source
    from edge.service.snapshot import annotate, jpeg

    config = _load_config_or_exit(args.config, preflight=False)
    if config is None:
        return EXIT_CONFIG
    cameras = {c.id: c for c in config.cameras}
    camera = cameras.get(args.camera) if args.camera else (config.cameras[0] if len(cameras) == 1 else None)
    if camera is None:
        print("error: --camera: %s (cameras in %s: %s)" % ("unknown camera %r" % args.camera if args.camera else
                                                             "say which", args.config, ", ".join(cameras)),
              file=sys.stderr)
        return EXIT_CONFIG
    source = open_source(camera)
    frame = None
    try:
        source.open()
        settle = time.monotonic() + (0.0 if source.finite else 1.0)  # a live stream's first frames may be grey
        while True:
            item = source.read()
            if item is None:
                break
            frame = item[1]
            if time.monotonic() >= settle:
                break
    except SourceError as exc:
        print("error: camera %s: %s" % (camera.id, exc), file=sys.stderr)
        return EXIT_FAILURE
    finally:
        source.close()
    if frame is None:
        print("error: camera %s: the source gave no frame" % camera.id, file=sys.stderr)
        return EXIT_FAILURE
    data = jpeg(annotate(frame, camera))
    tmp = args.out + ".part"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, args.out)
    except OSError as exc:
        print("error: --out %s: %s" % (args.out, exc.strerror or exc), file=sys.stderr)
        return EXIT_CONFIG
    print("wrote %s: camera %s, %dx%d, %d ROI(s) drawn, grid every 50 px" % (
        args.out, camera.id, frame.shape[1], frame.shape[0], len(camera.rois)))
    return EXIT_OK


def cmd_version(args):
    print("lpr-edge %s" % __version__)
    return EXIT_OK


def build_parser():
    parser = argparse.ArgumentParser(prog="lpr-edge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon", description="Run the daemon until SIGTERM/SIGINT.")
    p.add_argument("--config", required=True, help="config YAML")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override the config's log_level")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config and its model, print the effective settings",
                       description="Validate a config file (schema, files it names, the model's I/O contract) "
                                   "and print the effective settings, without secrets.")
    p.add_argument("config", nargs="?", help="config YAML")
    p.add_argument("--config", dest="config_option", metavar="FILE", help="config YAML (as `run --config FILE`)")
    p.add_argument("--skip-model", action="store_true", help="do not load the model into the backend")
    p.add_argument("--skip-port", action="store_true",
                   help="do not check that health.port is free (the running daemon holds it)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("evaluate", help="accuracy of a model on labelled plate crops",
                       description="Full-plate and character accuracy, throughput and confusions of a model on "
                                   "plate crops in the TAO layout (image/, label/); DATA may hold several such "
                                   "folders. With --json the last line is one JSON object.")
    _add_recognizer_args(p)
    p.add_argument("--data", required=True, help="dataset folder (image/, label/) or a folder of them")
    p.add_argument("--batch", type=int, default=64, help="plates per inference")
    p.add_argument("--limit", type=int, help="evaluate only the first N plates")
    p.add_argument("--only-ids", metavar="FILE", action="append",
                   help="evaluate only the sample ids listed in FILE (a split's evaluation part); repeat for several sets")
    p.add_argument("--crops", choices=("tight", "detector"), default="tight",
                   help="tight: the crops as stored; detector: each cut as a plate detector's box would (jittered "
                        "8%% a side, 5%% margin, seen 18-40 px high), the same cut every run")
    p.add_argument("--normalize", action="append", metavar="FROM=TO",
                   help="map a label character before scoring, e.g. O=0 for US lists without O (repeatable)")
    p.add_argument("--show-errors", action="store_true", help="print every misread plate")
    p.add_argument("--contact-sheet", metavar="PNG", help="write the misreads as a PNG grid (crop, truth, read)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="recognizer throughput, latency and FLOP/s per batch size",
                       description="`bench model` (or plain `bench`): plates per second and p50/p99 latency of the "
                                   "recognizer (preprocess, inference, decode) for each batch size, the model's MACs "
                                   "counted from its ONNX graph and the FLOP/s it reaches beside what the same "
                                   "runtime reaches on a plain matrix product and 3x3 convolution, all in one run: "
                                   "compare the figures as ratios.")
    p.add_argument("what", nargs="?", default="model", choices=("model", "detector", "pipeline"),
                   help="what to measure: model (the recognizer, default), detector (--model is then a detector) "
                        "or pipeline (the daemon on --config with --cameras copies of its first camera)")
    _add_recognizer_args(p, model_required=False)
    p.add_argument("--batch", default="1,4,16,64", help="batch sizes, comma-separated (bench detector: 1,8)")
    p.add_argument("--frame", default="1280x720", help="bench detector: the frame size WxH fed to it")
    p.add_argument("--cameras", default="1,4", help="bench pipeline: camera counts to run, comma-separated (1,4,8)")
    p.add_argument("--mode", default="roi", choices=("roi", "detect"), help="bench pipeline: fixed ROIs or the detector")
    p.add_argument("--fps", type=float, help="bench pipeline: each camera's frame rate (the sample re-timed by ffmpeg)")
    p.add_argument("--detect-fps", type=float, help="bench pipeline: detect_fps of each camera (mode detect)")
    p.add_argument("--config", help="bench pipeline: a daemon config whose first camera is copied, and whose broker is "
                                    "used (default: the bundled sample and a private mosquitto)")
    p.add_argument("--seconds", type=float, help="seconds per batch size (3), or per camera count (bench pipeline: 20)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    p.set_defaults(func=cmd_bench)

    from edge.infer.commands import add_commands  # lpr-edge device, lpr-edge engines build|list|prune

    add_commands(sub)

    from edge.detect.commands import add_commands as add_detect_commands  # lpr-edge read, evaluate-detector

    add_detect_commands(sub)

    p = sub.add_parser("snapshot", help="grab a camera frame with its ROIs and a pixel grid drawn (JPEG)",
                       description="Open one camera of a config, grab a live frame, draw its ROIs and a labelled "
                                   "pixel grid on it, and write it as JPEG, to place ROIs from on a device with no "
                                   "screen. The running daemon serves the same at /snapshot.jpg?camera=ID, with "
                                   "the last reads drawn too.")
    p.add_argument("--config", required=True, help="config YAML")
    p.add_argument("--camera", help="camera id (may be left out when the config has one camera)")
    p.add_argument("--out", required=True, help="JPEG file to write")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=cmd_version)

    from edge.ota.cli import add_model_commands  # over-the-air model updates (edge/ota/)

    add_model_commands(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
