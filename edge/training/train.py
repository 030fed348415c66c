"""Train or fine-tune LPRNet with CTC from a spec YAML (see spec.py), on synthetic plates, real plate
folders, or both. Checkpoints every `checkpoint_interval` epochs and at the time budget; `--resume`
continues a run, `--init-from` starts from another run's weights (transfer learning)."""
import logging
import math
import os
import time

import numpy as np
import torch

from edge.dataset import DatasetError, load_characters, read_id_list, read_image, scan
from edge.recognize.decode import decode_batch
from edge.training import synth
from edge.training.synthset import SYNTH_CHUNK, augment_options, generate_synthetic, plate_style  # noqa: F401
from edge.training.from_onnx import freeze_batchnorm
from edge.training.model import LPRNet, LPRNetConfig

log = logging.getLogger("edge.training")

def load_real(source, characters, max_label_length):
    """Real plate folder -> (images [N,48,96,3] uint8, labels). Bad samples are logged by file and skipped."""
    import cv2

    if "path" in source:
        image_dir, label_dir = os.path.join(source["path"], "image"), os.path.join(source["path"], "label")
    else:
        image_dir, label_dir = source["image_directory_path"], source["label_directory_path"]
    samples, skipped = scan(image_dir, label_dir, characters, max_label_length, source.get("normalize"))
    keep = None
    if "only_ids_from" in source:
        keep = read_id_list(source["only_ids_from"])
    drop = read_id_list(source["exclude_ids_from"]) if "exclude_ids_from" in source else set()
    images, labels = [], []
    for sample in samples:
        sid = os.path.splitext(os.path.basename(sample.image_path))[0]
        if sid in drop or (keep is not None and sid not in keep):
            continue
        img = read_image(sample.image_path)
        if img is None:
            skipped.append((sample.image_path, "unreadable image"))
            continue
        images.append(cv2.resize(img, (96, 48), interpolation=cv2.INTER_LINEAR))
        labels.append(sample.label)
    for item in skipped:
        log.warning("skipped %s: %s", item[0], item[1])
    if not images:
        raise DatasetError("%s: no usable samples" % image_dir)
    repeat = source.get("repeat", 1)
    arr = np.stack(images)
    return np.concatenate([arr] * repeat), labels * repeat


def encode_targets(labels, char_index):
    targets = torch.tensor([char_index[c] for text in labels for c in text], dtype=torch.long)
    lengths = torch.tensor([len(t) for t in labels], dtype=torch.long)
    return targets, lengths


def learning_rate(progress, cfg):
    """TAO's soft-start annealing: rise min->max over soft_start, hold, decay max->min after annealing."""
    lo = cfg.get("min_learning_rate", 1e-5)
    hi = cfg.get("max_learning_rate", 1e-3)
    soft, anneal = cfg.get("soft_start", 0.05), cfg.get("annealing", 0.6)
    if progress < soft:
        return lo * (hi / lo) ** (progress / max(soft, 1e-9))
    if progress < anneal:
        return hi
    return hi * (lo / hi) ** ((progress - anneal) / max(1.0 - anneal, 1e-9))


def schedule_progress(step, total_steps, elapsed_s, budget_minutes=None):
    """How far along the learning-rate schedule is, 0..1: by steps, or by the clock when a time budget
    would stop the run first, so that a run cut by its budget has still annealed to a low rate."""
    done = step / float(max(1, total_steps))
    if budget_minutes:
        done = max(done, elapsed_s / (budget_minutes * 60.0))
    return min(1.0, done)


def to_tensor(images_uint8):
    return torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float().div_(255.0)


def predict(model, images, characters, batch_size=256):
    model.eval()
    device = next(model.parameters()).device
    reads = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            prob = model(to_tensor(images[start:start + batch_size]).to(device)).softmax(-1)
            best, ids = prob.max(-1)
            reads.extend(decode_batch(ids.cpu().numpy(), best.cpu().numpy(), characters))
    return reads


def accuracy(model, images, labels, characters):
    if not labels:
        return float("nan")
    reads = predict(model, images, characters)
    return sum(r.text == t for r, t in zip(reads, labels)) / float(len(labels))


def model_config(spec, n_chars):
    lpr = spec["lpr_config"]
    return LPRNetConfig(n_chars=n_chars, nlayers=lpr.get("nlayers", 18), hidden_units=lpr.get("hidden_units", 512),
                        width=lpr.get("width", 1.0))


def save_checkpoint(path, model, optimizer, epoch, step, spec, characters, frozen_bn=False, history=()):
    tmp = path + ".part"
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                "spec": spec, "characters": characters, "config": model.config.__dict__, "frozen_bn": frozen_bn,
                "history": list(history)},
               tmp)
    os.replace(tmp, path)


def load_model_from_checkpoint(path, characters=None, config=None):
    """A training checkpoint (runs/<name>/last.pt), FP16 weights (.pt files earlier releases shipped), or an ONNX
    (models/<name>.onnx: its characters list is `characters`, else the file beside it or the manifest's).
    An ONNX start has its BatchNorms folded: the checkpoint dict says so with "folded": True."""
    if path.endswith(".onnx"):
        return _load_onnx(path, characters, config)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DatasetError("%s: not a checkpoint or weights file: %s" % (path, exc))
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise DatasetError("%s: not an lpr-edge checkpoint (no model weights and config)" % path)
    model = LPRNet(LPRNetConfig(**ckpt["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model, ckpt


def _load_onnx(path, characters, config):
    from edge.training.from_onnx import load_onnx_weights

    if not os.path.exists(path):
        raise DatasetError("%s: no such file" % path)
    if characters is None:
        characters = _characters_of(path)
    model, config = load_onnx_weights(path, characters, config)
    return model, {"characters": list(characters), "config": config.__dict__, "folded": True}


def _characters_of(onnx_path):
    """The characters list the daemon would use for this ONNX (manifest entry, region default, file beside it)."""
    from edge.recognize.model import ModelError, _default_characters, manifest_entry

    try:
        return load_characters(_default_characters(onnx_path, manifest_entry(onnx_path)[0]))
    except ModelError as exc:
        raise DatasetError(str(exc))


def build_sets(spec, characters, seed):
    ds = spec["dataset_config"]
    aug = spec.get("augmentation_config", {})
    max_len = spec["lpr_config"].get("max_label_length", 8)
    images, labels = [], []
    if "synthetic" in ds:
        t0 = time.time()
        x, y = generate_synthetic(ds["synthetic"]["region"], ds["synthetic"]["count"], seed, aug)
        log.info("generated %d synthetic plates in %.0f s", len(y), time.time() - t0)
        images.append(x)
        labels.extend(y)
    n_synth = len(labels)
    for source in ds.get("data_sources", []):
        x, y = load_real(source, characters, max_len)
        log.info("loaded %d real plates from %s", len(y), source.get("path", source.get("image_directory_path")))
        images.append(x)
        labels.extend(y)
    if not labels:
        raise DatasetError("spec has no training data (dataset_config.synthetic or data_sources)")
    val_x, val_y = [], []
    if ds.get("validation_synthetic") and "synthetic" in ds:
        x, y = generate_synthetic(ds["synthetic"]["region"], ds["validation_synthetic"], seed + 7919, aug)
        val_x.append(x)
        val_y.extend(y)
    for source in ds.get("validation_data_sources", []):
        x, y = load_real(source, characters, max_len)
        val_x.append(x)
        val_y.extend(y)
    bad = [t for t in labels if any(c not in set(characters) for c in t) or len(t) > max_len]
    if bad:
        raise DatasetError("%d training labels do not fit the characters list or max_label_length, e.g. %r"
                           % (len(bad), bad[0]))
    train_x = np.concatenate(images)
    val = (np.concatenate(val_x), val_y) if val_y else (np.empty((0, 48, 96, 3), np.uint8), [])
    return train_x, labels, n_synth, val


def resolve_device(name):
    """'auto' -> a CUDA GPU when torch sees one, else the CPU; 'cuda' without one is a clear error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DatasetError("device cuda asked for, but torch %s sees no CUDA GPU" % torch.__version__)
    return torch.device(name)


def train(spec, output_dir, resume=False, init_from=None, progress=True, device=None):
    """Run training on `device` (default: the spec's training_config.device, else auto); returns
    (model on the CPU, characters, history)."""
    seed = spec.get("random_seed", 42)
    torch.manual_seed(seed)
    tcfg = spec["training_config"]
    torch.set_num_threads(tcfg.get("threads", max(1, os.cpu_count() or 1)))
    device = resolve_device(device or tcfg.get("device", "auto"))
    if device.type == "cuda":  # TF32 convolutions and matmuls: ample for CTC training, much faster
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    log.info("training on %s", torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU")
    characters = load_characters(spec["dataset_config"]["characters_list_file"])
    char_index = {c: i for i, c in enumerate(characters)}
    os.makedirs(output_dir, exist_ok=True)
    ckpt_path = os.path.join(output_dir, "last.pt")
    best_path = os.path.join(output_dir, "best.pt")
    best_val = -1.0
    history = []

    model = LPRNet(model_config(spec, len(characters)))
    start_epoch, step = 0, 0
    frozen_bn = False
    if init_from:
        src, ckpt = load_model_from_checkpoint(init_from, characters, model.config)
        if ckpt["characters"] != characters:
            raise DatasetError("%s: trained with another characters list than %s"
                               % (init_from, spec["dataset_config"]["characters_list_file"]))
        if src.config != model.config:
            raise DatasetError("%s: its architecture %s differs from the spec's lpr_config %s"
                               % (init_from, src.config, model.config))
        model.load_state_dict(src.state_dict())
        # an ONNX's BatchNorms are folded into its convolutions: batch statistics would undo that
        frozen_bn = bool(ckpt.get("folded") or ckpt.get("frozen_bn") or tcfg.get("freeze_batchnorm"))
        log.info("fine-tuning from %s%s", init_from, " (BatchNorm statistics frozen)" if frozen_bn else "")
    model.to(device)
    opt_name = tcfg.get("optimizer", "adam")
    lr_cfg = tcfg.get("learning_rate", {})
    reg = tcfg.get("regularizer", {"type": "L2", "weight": 5e-5})
    wd = reg.get("weight", 0.0) if reg.get("type", "L2") == "L2" else 0.0
    if opt_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=wd)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=wd)
    if resume and os.path.exists(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        frozen_bn = frozen_bn or bool(ckpt.get("frozen_bn"))
        history = list(ckpt.get("history", []))
        if os.path.exists(best_path):  # a best.pt of epochs after last.pt (checkpoint_interval > 1) is stale
            if torch.load(best_path, map_location="cpu", weights_only=False)["epoch"] > start_epoch:
                os.remove(best_path)
        best_val = max([h["val_plate_accuracy"] for h in history if not math.isnan(h["val_plate_accuracy"])] or [-1.0])
        log.info("resuming %s at epoch %d", ckpt_path, start_epoch)

    train_x, train_y, n_synth, (val_x, val_y) = build_sets(spec, characters, seed)
    aug = spec.get("augmentation_config", {})
    real_aug = aug.get("real_augment_prob", 0.0)
    # real crops get a lighter pose/margin than synthetic ones, through the same capture path
    real_aug_options = dict(augment_options(aug), strength=aug.get("real_augment_strength", 0.3))
    detector_cut = aug.get("detector_cut_prob", 0.0)
    detector_cut_options = {"jitter": aug.get("detector_cut_jitter", 0.08), "margin": aug.get("detector_cut_margin", 0.05)}
    batch = tcfg.get("batch_size_per_gpu", 64)
    epochs = tcfg.get("num_epochs", 10)
    steps_per_epoch = int(math.ceil(len(train_y) / float(batch)))
    total_steps = steps_per_epoch * epochs
    budget = tcfg.get("time_budget_minutes")
    started = time.time()
    deadline = started + budget * 60 if budget else None
    ctc = torch.nn.CTCLoss(blank=len(characters), zero_infinity=True)
    rng = np.random.default_rng(seed + start_epoch)
    try:
        from tqdm import tqdm
    except ImportError:  # progress bar is a nicety
        tqdm = None
    stopped_early = False
    for epoch in range(start_epoch, epochs):
        model.train()
        if frozen_bn:
            freeze_batchnorm(model)
        order = rng.permutation(len(train_y))
        bar = range(steps_per_epoch)
        if progress and tqdm is not None:
            bar = tqdm(bar, desc="epoch %d/%d" % (epoch + 1, epochs), mininterval=5, ascii=True)
        running = 0.0
        for i in bar:
            idx = order[i * batch:(i + 1) * batch]
            x = train_x[idx]
            if real_aug > 0 or detector_cut > 0:
                x = x.copy()
                for j, k in enumerate(idx):
                    if k < n_synth:
                        continue
                    draw = rng.random()
                    if draw < detector_cut:  # as the detect stage will cut it (edge/detect/zones.py crop_box)
                        x[j] = synth.detector_cut(x[j], rng, **detector_cut_options)
                    elif draw < detector_cut + real_aug:
                        x[j] = synth.augment(x[j], rng, **real_aug_options)
            targets, lengths = encode_targets([train_y[k] for k in idx], char_index)
            lr = learning_rate(schedule_progress(step, total_steps, time.time() - started, budget), lr_cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            log_probs = model(to_tensor(x).to(device, non_blocking=True)).log_softmax(-1).permute(1, 0, 2)
            in_lengths = torch.full((len(idx),), log_probs.shape[0], dtype=torch.long)
            loss = ctc(log_probs, targets.to(device), in_lengths.to(device), lengths.to(device))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            step += 1
            value = loss.item()
            running = 0.98 * running + 0.02 * value if i else value
            if tqdm is not None and progress and i % 20 == 0:
                bar.set_postfix(loss="%.3f" % running, lr="%.1e" % lr)
            if deadline and time.time() > deadline:
                stopped_early = True
                break
        val_acc = accuracy(model, val_x, val_y, characters) if val_y else float("nan")
        history.append({"epoch": epoch + 1, "loss": running, "val_plate_accuracy": val_acc, "step": step})
        log.info("epoch %d: loss %.4f, validation plate accuracy %.4f", epoch + 1, running, val_acc)
        if stopped_early or (epoch + 1) % tcfg.get("checkpoint_interval", 1) == 0 or epoch + 1 == epochs:
            save_checkpoint(ckpt_path, model, optimizer, epoch + 1, step, spec, characters, frozen_bn, history)
        if val_y and val_acc > best_val:  # the validation parts pick the epoch that is exported
            best_val = val_acc
            save_checkpoint(best_path, model, optimizer, epoch + 1, step, spec, characters, frozen_bn, history)
            log.info("epoch %d is the best on validation so far: %s", epoch + 1, best_path)
        if stopped_early:
            log.info("time budget of %s minutes reached after %d steps; checkpoint saved", budget, step)
            break
    if val_y and os.path.exists(best_path):
        best = torch.load(best_path, map_location="cpu", weights_only=False)
        model.load_state_dict(best["model"])
        log.info("returning epoch %d, the best on validation (plate accuracy %.4f)", best["epoch"], best_val)
    model.eval()
    return model.cpu(), characters, history
