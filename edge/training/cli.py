"""lpr-edge-train: train, fine-tune and export LPRNet models, and train the plate detector (`detect`)
(needs the `train` extra: torch, onnx)."""
import argparse
import json
import logging
import os
import sys

from edge.dataset import DatasetError


def _train(args):
    from edge.training.spec import SpecError, load_spec
    from edge.training.train import train

    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    out = args.output_dir or spec.get("output_dir") or os.path.join("runs", spec.get("model_name", "lprnet"))
    if args.epochs:
        spec["training_config"]["num_epochs"] = args.epochs
    if args.time_budget:
        spec["training_config"]["time_budget_minutes"] = args.time_budget
    try:
        model, characters, history = train(spec, out, resume=args.resume, init_from=args.init_from,
                                           progress=not args.no_progress, device=args.device)
    except DatasetError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    if args.export:
        from edge.training.train import generate_synthetic

        name = spec.get("model_name", "lprnet")
        path = os.path.join(args.export, name + ".onnx") if os.path.isdir(args.export) else args.export
        region = spec["dataset_config"].get("synthetic", {}).get("region", "us")
        return _export_checked(model, characters, path, generate_synthetic(region, 256, seed=12345, workers=1)[0],
                               args.fp16_weights)
    return 0


def _export_checked(model, characters, path, images, fp16_weights=False):
    """ONNX with the deployable contract at `path`, checked against PyTorch on `images` (fine-tuning starts
    from this file itself: --init-from M.onnx). A model that fails the check is left beside `path`
    (.unchecked) and never replaces what is there."""
    from edge.recognize.model import sha256_file
    from edge.training.export import check_same_reads, export_fp16_variant, export_onnx, store_weights_fp16

    staged = export_onnx(model, path + ".unchecked")
    if fp16_weights:
        before, after = store_weights_fp16(staged)
        print("weights stored as FP16: %.1f MB -> %.1f MB" % (before / 1e6, after / 1e6))
    # FP16 weights move class probabilities by ~1e-3 on noise images (reads stay the same): a looser bound
    mismatches = check_same_reads(model, staged, images, characters, tolerance=1e-2 if fp16_weights else 1e-3)
    if mismatches:
        print("error: %s: ONNX Runtime and PyTorch decode differently: %s" % (staged, mismatches[:5]),
              file=sys.stderr)
        return 1
    os.replace(staged, path)
    print("exported %s (sha256 %s); ONNX Runtime and PyTorch agree on %d plates" % (path, sha256_file(path), len(images)))
    try:  # for TensorRT 11 (strongly typed: FP16 only where the graph says so), checked on plates, not noise
        plates = _check_plates(characters, images)
        variant, same = export_fp16_variant(model, path, plates)
        print("FP16 variant for TensorRT: %s (reads %.1f%% of %d plates as FP32 does)" % (variant, 100 * same,
                                                                                      len(plates)))
    except ValueError as exc:
        print("warning: no FP16 variant written: %s; TensorRT 11 will build this model in FP32" % exc,
              file=sys.stderr)
    return 0


def _check_plates(characters, fallback):
    """Synthetic plates of the model's region (by its characters list), else `fallback`."""
    region = {35: "us", 67: "ch"}.get(len(characters))
    if region is None:
        return fallback
    from edge.training.synthset import generate_synthetic

    return generate_synthetic(region, 128, seed=4242, workers=1)[0]


def _export(args):
    from edge.training.export import random_images
    from edge.training.train import load_model_from_checkpoint

    try:
        model, ckpt = load_model_from_checkpoint(args.checkpoint)
    except DatasetError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    code = _export_checked(model, ckpt["characters"], args.output, random_images(64), args.fp16_weights)
    if code == 0 and args.package:
        return _write_package(args, ckpt["characters"])
    return code


def _write_package(args, characters):
    """export --package: the ONNX just written, its characters list and a golden set as a signed package."""
    from edge.ota import OtaError
    from edge.training.export import export_package, write_characters

    missing = [flag for flag, value in (("--name", args.name), ("--version", args.version),
                                        ("--serial", args.serial)) if value is None]
    if missing or not (args.key or args.unsigned):
        print("error: --package needs %s" % ", ".join(missing + ([] if args.key or args.unsigned else ["--key"])),
              file=sys.stderr)
        return 2
    chars = write_characters(characters, args.output)
    try:
        manifest = export_package(args.output, chars, args.package, args.name, args.version, args.serial,
                                  key=args.key, golden=args.golden, min_accuracy=args.min_accuracy)
    except OtaError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    print("package %s: %s %s serial %d (%s)" % (args.package, manifest["name"], manifest["version"],
                                                manifest["serial"], "signed" if args.key else "unsigned"))
    return 0


def _synth(args):
    import cv2

    from edge.training.synthset import generate_synthetic

    if args.count < 1:
        print("error: --count must be at least 1 (got %d)" % args.count, file=sys.stderr)
        return 2
    images, labels = generate_synthetic(args.region, args.count, args.seed)
    os.makedirs(os.path.join(args.out, "image"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "label"), exist_ok=True)
    for i, (img, text) in enumerate(zip(images, labels)):
        cv2.imwrite(os.path.join(args.out, "image", "%06d.jpg" % i), img[:, :, ::-1])
        with open(os.path.join(args.out, "label", "%06d.txt" % i), "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print("wrote %d plates to %s" % (len(labels), args.out))
    return 0


def _detect(args):
    from edge.training.detect.spec import load_detect_spec
    from edge.training.spec import SpecError

    try:
        spec = load_detect_spec(args.spec)
    except SpecError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    if args.time_budget:
        spec["training_config"]["time_budget_minutes"] = args.time_budget
    if args.epochs:
        spec["training_config"]["num_epochs"] = args.epochs
    if args.batch_size:
        spec["training_config"]["batch_size"] = args.batch_size
    if args.data:
        spec["dataset_config"]["path"] = args.data
    name = spec.get("model_name", "lpr_edge_lpd")
    out = args.output_dir or spec.get("output_dir") or os.path.join("runs", name)
    from edge.training.detect.train import (ValSet, load_detector, load_split_scenes, train_detector,
                                            validate)

    try:
        if args.evaluate:
            model, _ = load_detector(args.checkpoint or os.path.join(out, "best.pt"))
            scenes = load_split_scenes(spec, args.evaluate)
            result = validate(model, ValSet(scenes, model.config, spec.get("eval_config", {}).get(
                "min_box_px", [8, 4])), spec, __import__("torch").device("cpu"))
            print(json.dumps(dict(result, split=args.evaluate)))
            return 0
        if args.checkpoint:
            model, _ = load_detector(args.checkpoint)
        else:
            model, _ = train_detector(spec, out, resume=args.resume, device=args.device, workers=args.workers,
                                      init_from=args.init_from)
            model, _ = load_detector(os.path.join(out, "best.pt")) if os.path.exists(
                os.path.join(out, "best.pt")) else (model, None)
    except DatasetError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    if args.export:
        return _export_detector(spec, model, args.export, name)
    return 0


def _export_detector(spec, model, export, name):
    """ONNX of `model` (the best-val checkpoint after training) at `export`, checked against PyTorch."""
    import numpy as np

    from edge.training.detect.export import check_export, export_onnx
    from edge.training.detect.train import ValSet, load_split_scenes

    path = os.path.join(export, name + ".onnx") if os.path.isdir(export) else export
    staged = export_onnx(model, path + ".unchecked")
    try:
        scenes = load_split_scenes(spec, "val", 8)
        images = ValSet(scenes, model.config, [8, 4]).images
    except DatasetError:
        images = np.random.default_rng(0).integers(0, 256, (4, model.config.input_height,
                                                            model.config.input_width, 3)).astype(np.uint8)
    diff, problems, n_boxes = check_export(model, staged, images)
    print("ONNX Runtime against PyTorch on %d images: max abs difference %.2e; %d boxes decoded by "
          "edge.detect.contracts, %s" % (len(images), diff, n_boxes, "the same" if not problems else problems))
    if problems or diff > 1e-3:
        print("error: %s: ONNX Runtime and PyTorch differ; left as %s" % (path, staged), file=sys.stderr)
        return 1
    os.replace(staged, path)
    from edge.bench import count_macs

    macs = count_macs(path)
    from edge.recognize.model import sha256_file

    print("exported %s (sha256 %s), %.3f GMAC per frame at %dx%d" % (
        path, sha256_file(path), macs["total"] / 1e9 if macs else float("nan"), model.config.input_width,
        model.config.input_height))
    return 0


def _detect_split(args):
    from edge.training.detect.data import make_split, write_split

    split = make_split(args.data)
    for path in write_split(split, args.out):
        print("wrote %s" % path)
    print(", ".join("%s %d" % (k, len(v)) for k, v in split.items()))
    return 0


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text)
        if not value > 0:
            raise argparse.ArgumentTypeError("must be above 0, got %s" % text)
        return value
    return parse


def build_parser():
    parser = argparse.ArgumentParser(prog="lpr-edge-train", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("train", help="train or fine-tune from a spec YAML")
    p.add_argument("--spec", required=True, help="spec YAML (lpr_config, training_config, dataset_config)")
    p.add_argument("--output-dir", help="checkpoints and history (default: spec output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument("--init-from", help="a checkpoint (.pt) or a shipped or exported ONNX whose weights start this "
                                       "run (fine-tuning; an ONNX's BatchNorm statistics stay frozen)")
    p.add_argument("--export", help="folder or .onnx path to export the trained model to (the epoch best on the "
                                    "validation data, else the last)")
    p.add_argument("--fp16-weights", action="store_true",
                   help="export: store the weights as FP16 with casts to FP32 (half the file)")
    p.add_argument("--epochs", type=_positive(int), help="epochs the schedule spans (overrides the spec's num_epochs)")
    p.add_argument("--time-budget", type=_positive(float), metavar="MINUTES",
                   help="stop and checkpoint after this long (overrides the spec's time_budget_minutes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="train on a CUDA GPU or the CPU (default: the spec's training_config.device, else auto)")
    p.set_defaults(func=_train)
    p = sub.add_parser("export", help="export a checkpoint (or re-export an ONNX) to ONNX with the deployable contract")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--fp16-weights", action="store_true",
                   help="store the weights as FP16 with casts to FP32 (half the file; I/O and arithmetic stay FP32)")
    p.add_argument("--package", metavar="PKG", help="also write a model package (lpr-edge model install takes it)")
    p.add_argument("--name", help="package: model name")
    p.add_argument("--version", help="package: model version")
    p.add_argument("--serial", type=int, help="package: serial, growing with every release of the name")
    p.add_argument("--key", help="package: signing key from `lpr-edge model keygen`")
    p.add_argument("--unsigned", action="store_true", help="package: no signature (lab devices only)")
    p.add_argument("--golden", help="package: golden set folder (image/, label/)")
    p.add_argument("--min-accuracy", type=float, help="package: golden-set accuracy devices must reach")
    p.set_defaults(func=_export)
    p = sub.add_parser("detect", help="train the plate detector (DetectNet_v2 contract) from a detect spec YAML")
    p.add_argument("--spec", required=True, help="detect spec YAML (configs/training/detect_*.yaml)")
    p.add_argument("--output-dir", help="checkpoints and history.json (default: spec output_dir)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="train on a CUDA GPU or the CPU (default: the spec's training_config.device, else auto)")
    p.add_argument("--workers", type=int, help="data-loading processes (default: the spec's, else 0)")
    p.add_argument("--time-budget", type=_positive(float), metavar="MINUTES",
                   help="stop (checkpoint, validate) when the run has trained this many minutes in all, resumes "
                   "included; the learning rate anneals by then (overrides the spec's)")
    p.add_argument("--epochs", type=_positive(int), help="epochs the schedule spans (overrides the spec's num_epochs)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from this detector's weights: a shipped or exported ONNX (BatchNorm statistics then "
                   "stay frozen) or a checkpoint .pt; a resumed run keeps its own")
    p.add_argument("--batch-size", type=int, help="overrides the spec's batch_size")
    p.add_argument("--data", help="scene root (overrides the spec's dataset_config.path)")
    p.add_argument("--export", metavar="OUT.onnx", help="export the best-val checkpoint to ONNX (or a folder)")
    p.add_argument("--checkpoint", help="with --export or --evaluate: this checkpoint, no training")
    p.add_argument("--evaluate", choices=("val", "eval"),
                   help="no training: recall, precision and AP@0.5 of --checkpoint (default best.pt) on a split")
    p.set_defaults(func=_detect)
    p = sub.add_parser("detect-split", help="write the detector's grouped train/val/eval split lists")
    p.add_argument("--data", default="../shared/data/detect", help="root of <source>/{images,labels,manifest.tsv}")
    p.add_argument("--out", default="configs/training/splits", help="folder for detect_{train,val,eval}.txt")
    p.set_defaults(func=_detect_split)
    p = sub.add_parser("synth", help="write synthetic plates as a dataset folder (image/, label/)")
    p.add_argument("--region", choices=("us", "ch"), required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_synth)
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)
