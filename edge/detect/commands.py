"""`lpr-edge read` and `lpr-edge evaluate-detector` (registered by edge/cli.py's build_parser)."""
import json
import os
import sys
import time

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def shipped_default(kind):
    """models/<file> the manifest names as default `kind` ('us', 'ch', 'detector'), or None."""
    from edge import resources
    from edge.recognize.model import read_manifest

    try:
        folder = resources.find_data("models")
    except IOError:
        return None
    manifest, _ = read_manifest(folder)
    name = ((manifest or {}).get("default") or {}).get(kind)
    section = "detectors" if kind == "detector" else "models"
    entry = ((manifest or {}).get(section) or {}).get(name) if name else None
    return os.path.join(folder, entry["file"]) if entry else None


class _Settings(object):
    """What `read` runs, from the flags, else the config, else the manifest's defaults."""

    def __init__(self, args):
        self.config = None
        if args.config:
            from edge.config import load_config

            self.config = load_config(args.config)
        cfg_detector = self.config.detector if self.config else None
        self.detector = args.detector or (cfg_detector.path if cfg_detector else None) or shipped_default("detector")
        self.model = args.model or (self.config.model.path if self.config else None) or shipped_default(args.region)
        self.threshold = args.threshold if args.threshold is not None else (
            cfg_detector.threshold if cfg_detector else 0.3)
        self.nms_iou = cfg_detector.nms_iou if cfg_detector else 0.3
        self.margin = cfg_detector.margin if cfg_detector else 0.05
        self.backend = self.config.recognizer.backend if self.config else args.backend


def _load(args):
    from edge.config.model import ModelConfig, RecognizerConfig
    from edge.detect import Detector
    from edge.recognize.backends import infer_options
    from edge.recognize.recognizer import Recognizer

    settings = _Settings(args)
    if not settings.detector:
        raise ValueError("no detector: models/manifest.yaml ships none yet; give --detector M.onnx (lpr-edge's, "
                         "NVIDIA's LPDNet_usa_pruned_tao5.onnx or a YOLO end-to-end export) or a --config with "
                         "detector.path")
    if not settings.model:
        raise ValueError("no recognizer for region %r: give --model M.onnx" % args.region)
    rc = settings.config.recognizer if settings.config else RecognizerConfig(backend=settings.backend)
    options = infer_options(rc)
    options.max_batch = 1
    detector = Detector.load(settings.detector, settings.backend, options, settings.threshold, settings.nms_iou)
    if settings.config and not args.model:
        model_config = settings.config.model
    else:
        model_config = ModelConfig(path=settings.model, characters=args.characters)
    recognizer = Recognizer.from_config(model_config, rc)
    return detector, recognizer, settings


def cmd_read(args):
    from edge.detect import PlateFilter
    from edge.detect.tools import ImageError, image_paths, load_rgb, read_plates
    from edge.infer import ModelError

    try:
        paths = image_paths(args.paths)
        detector, recognizer, settings = _load(args)
    except (ImageError, ModelError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_CONFIG
    plate_filter = PlateFilter("read", min_plate_px=args.min_plate_px, margin=settings.margin)
    bad = 0
    for path in paths:
        start = time.monotonic()
        try:
            plates = read_plates(detector, recognizer, plate_filter, load_rgb(path))
        except ImageError as exc:
            bad += 1
            print("error: %s" % exc, file=sys.stderr)
            if args.json:
                print(json.dumps({"image": path, "error": str(exc)}, ensure_ascii=False))
            continue
        ms = round((time.monotonic() - start) * 1000, 1)
        if args.json:
            print(json.dumps({"image": path, "plates": plates, "ms": ms}, ensure_ascii=False))
        elif not plates:
            print("%s: no plate (%.0f ms)" % (path, ms))
        else:
            for p in plates:
                print("%s: %s  score %.2f  box %s  detector %.2f" % (path, p["plate"] or "(unread)", p["score"],
                                                                    ",".join(str(v) for v in p["box"]), p["det_score"]))
    detector.close()
    recognizer.close()
    return EXIT_CONFIG if bad else EXIT_OK


def cmd_evaluate_detector(args):
    from edge.dataset import read_id_list
    from edge.detect import Detector
    from edge.detect.tools import ImageError, evaluate_detector, yolo_scenes
    from edge.infer import InferOptions, ModelError

    try:
        scenes = yolo_scenes(args.data)
        only = set(read_id_list(args.only_ids)) if args.only_ids else None
        options = InferOptions(max_batch=args.batch, threads=args.threads)
        detector = Detector.load(args.model, args.backend, options, args.threshold, args.nms_iou)
        result = evaluate_detector(detector, scenes, args.min_box_px, only, args.limit, args.batch)
    except (ImageError, ModelError, ValueError, IOError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_CONFIG
    for problem in result["skipped"]:
        print("skipped: %s" % problem, file=sys.stderr)
    print("detector %s (%s) on %s: %d images, %d plates%s" % (
        result["model"], result["contract"], args.data, result["images"], result["plates"],
        " at least %g px wide" % args.min_box_px if args.min_box_px else ""))
    print("at IoU 0.5, threshold %.2f: recall %s, precision %s, AP %.4f" % (
        result["threshold"], result["recall_iou50"], result["precision_iou50"], result["ap_iou50"]))
    print("speed: %s frames/s at batch %d (inference and decoding, not file reading)"
          % (result["frames_per_s"], result["batch"]))
    if args.json:
        result["data"] = args.data
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    return EXIT_OK


def bench_detector_command(args):
    """`lpr-edge bench detector --model M`: frames/s and p50/p99 per batch, GMAC per frame from the graph."""
    from edge.bench import bench_detector, count_macs
    from edge.cli import _bench_batches
    from edge.detect import Detector
    from edge.infer import InferOptions, ModelError

    try:
        if args.batch == "1,4,16,64":  # the recognizer's default: a detector is measured at 1 and 8
            args.batch = "1,8"
        batches = _bench_batches(args)
        w, h = (int(v) for v in args.frame.lower().split("x"))
        options = InferOptions(providers=args.providers.split(","), threads=args.threads, max_batch=max(batches),
                               engine_dir=args.engine_dir)
        detector = Detector.load(args.model, args.backend, options)
    except (ModelError, ValueError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        macs = count_macs(args.model)
    except Exception as exc:  # a report, never a reason to stop
        print("warning: MACs not counted for %s: %s" % (args.model, exc), file=sys.stderr)
        macs = None
    rows = bench_detector(detector, batches, args.seconds, (w, h))
    iw, ih = detector.input_size
    print("detector %s (%s, input %dx%d) on %s, %dx%d frames" % (detector.name, detector.kind, iw, ih,
                                                                detector.session.name, w, h))
    if macs:
        print("%.3f GMAC per frame, counted from the ONNX graph" % (macs["total"] / 1e9))
    print("%6s %10s %9s %9s %8s" % ("batch", "frames/s", "p50 ms", "p99 ms", "x first"))
    for row in rows:
        print("%6d %10.1f %9.2f %9.2f %8.2f" % (row["batch"], row["frames_per_s"], row["latency_ms_p50"],
                                               row["latency_ms_p99"], row["speedup_vs_first"]))
    if args.json:
        print(json.dumps({"detector": detector.name, "sha256": detector.sha256, "contract": detector.kind,
                          "backend": detector.session.name, "frame": [w, h], "macs": macs, "rows": rows}))
    detector.close()
    return EXIT_OK


def add_commands(sub):
    p = sub.add_parser("read", help="detect and read the plates in still images or folders (as OpenALPR's alpr)",
                       description="Find the plates in images (files or folders of them) with the detector and read "
                                   "them with the recognizer, as the daemon does in mode 'detect'. Models: the "
                                   "flags, else the --config's detector and model, else the manifest's defaults "
                                   "for --region. With --json one line per image: {image, plates: [{plate, score, "
                                   "char_scores, box [x, y, w, h], det_score}], ms}.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--region", default="us", choices=("us", "ch"), help="which shipped recognizer (default us)")
    p.add_argument("--config", help="take the detector, model and backend from this daemon config")
    p.add_argument("--detector", help="detector ONNX (default: the manifest's)")
    p.add_argument("--model", help="recognizer ONNX (default: the manifest's for --region)")
    p.add_argument("--characters", help="the recognizer's characters list (default: found beside it)")
    p.add_argument("--threshold", type=float, help="detector confidence threshold (default 0.3)")
    p.add_argument("--min-plate-px", type=float, default=0.0, help="ignore boxes narrower than this (pixels)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("evaluate-detector", help="precision, recall and AP at IoU 0.5 of a detector on scenes",
                       description="Run a detector on YOLO-layout scenes (<folder>/images/*.jpg and "
                                   "<folder>/labels/*.txt, searched below DATA) and report recall, precision and "
                                   "AP at IoU 0.5 and frames per second. With --json the last line is one JSON "
                                   "object.")
    p.add_argument("--model", required=True, help="detector ONNX")
    p.add_argument("--data", required=True, help="folder of YOLO-layout scenes (e.g. ../shared/data/detect)")
    p.add_argument("--only-ids", metavar="FILE", help="only the scenes listed (<source>/<id> per line: a split)")
    p.add_argument("--limit", type=int, help="only the first N scenes")
    p.add_argument("--threshold", type=float, default=0.3, help="confidence threshold (default 0.3)")
    p.add_argument("--nms-iou", type=float, default=0.3, help="NMS IoU for DetectNet_v2 models (default 0.3)")
    p.add_argument("--min-box-px", type=float, default=0.0,
                   help="leave out plates (truth and detections) narrower than this many pixels")
    p.add_argument("--batch", type=int, default=1, help="frames per inference (default 1)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: backend default)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    p.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    p.set_defaults(func=cmd_evaluate_detector)
