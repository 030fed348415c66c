"""Train the plate detector from a detect spec: real train-split scenes (augmented) plus synthetic
composites, a fixed share of every batch; checkpoints (last.pt, and best.pt by val AP@0.5) every
`checkpoint_minutes` and at the time budget, each validated on the val split and logged to history.json;
`resume` continues from last.pt with the optimizer, the schedule's step and the epoch's position."""
import json
import logging
import math
import os
import signal
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

from edge.dataset import DatasetError
from edge.detect.contracts import BBOX_OFFSET, BBOX_SCALE
from edge.training.detect import data as D
from edge.training.detect.model import DetectorConfig, PlateDetector
from edge.training.detect.targets import STRIDE, detections, make_targets, metrics, split_boxes
from edge.training.from_onnx import freeze_batchnorm
from edge.training.train import learning_rate, resolve_device, schedule_progress

log = logging.getLogger("edge.training.detect")


def model_config(spec):
    mc = spec.get("model_config", {})
    w, h = mc.get("input_size", [512, 288])
    cfg = DetectorConfig(input_width=w, input_height=h)
    for key in ("channels", "blocks", "dilations"):
        if key in mc:
            setattr(cfg, key, list(mc[key]))
    return cfg


def _paths(spec, key):
    return spec["dataset_config"]["splits"][key]


class TrainSet(object):
    """Items (scene index, synthetic?) for one epoch -> (image uint8 [H,W,3], cov, weight, bbox)."""

    def __init__(self, scenes, pool, spec, seed):
        self.scenes, self.pool, self.seed = scenes, pool, seed
        self.aug = spec.get("augmentation_config", {})
        self.cfg = model_config(spec)
        tc, lc, ec = spec["training_config"], spec.get("loss_config", {}), spec.get("eval_config", {})
        self.crop_w, self.crop_h = tc.get("crop_size", [self.cfg.input_width, self.cfg.input_height])
        self.shrink = lc.get("coverage_shrink", 0.5)
        self.min_w, self.min_h = ec.get("min_box_px", [8, 4])
        self.items, self.epoch = [], 0

    def set_items(self, epoch, items):
        self.epoch, self.items = epoch, items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        scene_index, synthetic, position = self.items[i]
        rng = np.random.default_rng([self.seed, self.epoch, position])
        return self.sample(self.scenes[scene_index], synthetic, rng)

    def sample(self, scene, synthetic, rng):
        img, boxes = D.place_scene(scene, rng, self.cfg.input_width, self.cfg.input_height, self.crop_w,
                                   self.crop_h, self.aug)
        boxes, visible = D.clip_boxes(boxes, self.crop_w, self.crop_h)
        keep, ignore = split_boxes(boxes, visible, self.min_w, self.min_h)
        if synthetic and self.pool:
            img = np.ascontiguousarray(img)
            n = len(keep)
            allb = D.paste_plates(img, np.concatenate([keep, ignore]), rng, self.pool, self.aug)
            keep = np.concatenate([keep, allb[n + len(ignore):]])
        img = D.photometric(img, rng, self.aug)
        cov, weight, bbox = make_targets(keep, ignore, self.crop_h, self.crop_w, self.shrink)
        return np.ascontiguousarray(img), cov, weight, bbox


def _worker_init(_):
    """Data workers leave SIGINT / SIGTERM to the trainer, which checkpoints and then shuts them down."""
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)  # one process per core already


def epoch_items(n_scenes, batch, synthetic_fraction, epoch, seed):
    """This epoch's (scene, synthetic?, position) list: a permutation of the train scenes, the first
    round(fraction * batch) slots of every batch synthetic composites (on those scenes as backgrounds)."""
    order = np.random.default_rng([seed, epoch, 7]).permutation(n_scenes)
    n_syn = int(round(synthetic_fraction * batch))
    return [(int(s), (p % batch) < n_syn, p) for p, s in enumerate(order)]


def to_input(images_uint8, device):
    x = torch.as_tensor(images_uint8)
    return x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def _decoded(bbox):
    """DetectNet_v2 bbox planes [N,4,Gh,Gw] -> (x1, y1, x2, y2) in input pixels, as contracts.decode_detectnet
    reads them (stride-16 cells, scale 35, offset 0.5)."""
    gh, gw = bbox.shape[-2:]
    gx = (torch.arange(gw, device=bbox.device, dtype=bbox.dtype) * STRIDE + BBOX_OFFSET) / BBOX_SCALE
    gy = (torch.arange(gh, device=bbox.device, dtype=bbox.dtype) * STRIDE + BBOX_OFFSET) / BBOX_SCALE
    gx, gy = gx.view(1, 1, gw), gy.view(1, gh, 1)
    return ((gx - bbox[:, 0]) * BBOX_SCALE, (gy - bbox[:, 1]) * BBOX_SCALE,
            (bbox[:, 2] + gx) * BBOX_SCALE, (bbox[:, 3] + gy) * BBOX_SCALE)


def giou_loss(bbox, t_bbox):
    """Per cell 1 - GIoU of the decoded predicted and target boxes [N,Gh,Gw]. Unlike L1 on the planes it does
    not grow with the plate's size, so a small plate's box counts as much as a close-up's: the IoU 0.5 that
    the detector is measured at is what it pulls on."""
    px1, py1, px2, py2 = _decoded(bbox)
    tx1, ty1, tx2, ty2 = _decoded(t_bbox)
    pw, ph = (px2 - px1).clamp(min=0), (py2 - py1).clamp(min=0)
    tw, th = (tx2 - tx1).clamp(min=0), (ty2 - ty1).clamp(min=0)
    iw = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0)
    ih = (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    inter = iw * ih
    union = (pw * ph + tw * th - inter).clamp(min=1e-6)
    hull = ((torch.max(px2, tx2) - torch.min(px1, tx1)) * (torch.max(py2, ty2) - torch.min(py1, ty1))).clamp(min=1e-6)
    return 1.0 - (inter / union - (hull - union) / hull)


def detector_loss(cov_logit, bbox, t_cov, t_weight, t_bbox, lc):
    """Focal (or BCE) coverage loss, L1 on the bbox planes of positive cells (bbox_weight), and where
    loss_config.iou_weight is set 1 - GIoU of their decoded boxes; returns (total, coverage, box)."""
    n_pos = t_cov.sum().clamp(min=1.0)
    if lc.get("coverage", "focal") == "focal":
        gamma, alpha = lc.get("focal_gamma", 2.0), lc.get("focal_alpha", 0.25)
        p = torch.sigmoid(cov_logit)
        ce = F.binary_cross_entropy_with_logits(cov_logit, t_cov, reduction="none")
        p_t = p * t_cov + (1 - p) * (1 - t_cov)
        a_t = alpha * t_cov + (1 - alpha) * (1 - t_cov)
        cov_loss = (a_t * (1 - p_t) ** gamma * ce * t_weight).sum() / n_pos
    else:
        cov_loss = (F.binary_cross_entropy_with_logits(cov_logit, t_cov, reduction="none") * t_weight).sum() / \
            t_weight.sum().clamp(min=1.0)
    bbox_loss = ((bbox - t_bbox).abs() * t_cov).sum() / n_pos
    total = cov_loss + lc.get("bbox_weight", 5.0) * bbox_loss
    if lc.get("iou_weight"):
        iou_loss = (giou_loss(bbox, t_bbox) * t_cov[:, 0]).sum() / n_pos
        total = total + lc["iou_weight"] * iou_loss
        bbox_loss = bbox_loss + iou_loss
    return total, cov_loss.detach(), bbox_loss.detach()


class ValSet(object):
    """Scenes stretched to the network input (as the runtime does), their boxes in input pixels split into
    those that count and those too small to (don't care)."""

    def __init__(self, scenes, cfg, min_box):
        w, h = cfg.input_width, cfg.input_height
        self.images = np.empty((len(scenes), h, w, 3), np.uint8)
        self.gts, self.ignores = [], []
        for i, s in enumerate(scenes):
            img = s.image()
            self.images[i] = cv2_resize(img, w, h)
            b = s.boxes.copy()
            b[:, [0, 2]] *= w / float(img.shape[1])
            b[:, [1, 3]] *= h / float(img.shape[0])
            keep, ignore = split_boxes(b, np.ones(len(b)), min_box[0], min_box[1])
            self.gts.append(keep)
            self.ignores.append(ignore)


def cv2_resize(img, w, h):
    from edge.detect.contracts import stretch

    return stretch(img, w, h)[0] if img.shape[:2] != (h, w) else img


def validate(model, valset, spec, device):
    """recall / precision at the operating threshold and AP@IoU, decoded by edge.detect.contracts."""
    ec = spec.get("eval_config", {})
    cfg = model.config
    thr, ap_thr = ec.get("coverage_threshold", 0.3), ec.get("ap_threshold", 0.05)
    nms_iou, match_iou = ec.get("nms_iou", 0.3), ec.get("iou", 0.5)
    model.eval()
    per_image = []
    bs = ec.get("batch_size", 16)
    t0 = time.time()
    with torch.no_grad():
        for start in range(0, len(valset.images), bs):
            cov, bbox = model(to_input(valset.images[start:start + bs], device))
            cov = torch.sigmoid(cov).cpu().numpy()
            dets = detections(cov, bbox.cpu().numpy(), cfg.input_height, cfg.input_width, ap_thr, nms_iou)
            for k, d in enumerate(dets):
                per_image.append((d, valset.gts[start + k], valset.ignores[start + k]))
    result = metrics(per_image, thr, match_iou)
    result["images"] = len(valset.images)
    result["seconds"] = round(time.time() - t0, 1)
    model.train()
    return result


def _save(path, state):
    tmp = path + ".part"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_detector(path):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DatasetError("%s: not a checkpoint: %s" % (path, exc))
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "plate_detector":
        raise DatasetError("%s: not an lpr-edge detector checkpoint" % path)
    model = PlateDetector(DetectorConfig(**ckpt["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.eval(), ckpt


def load_split_scenes(spec, key, limit=None):
    root = spec["dataset_config"]["path"]
    ids = D.read_ids(_paths(spec, key))
    if limit:
        ids = ids[:limit]
    if not ids:
        raise DatasetError("%s: empty split list" % _paths(spec, key))
    return D.load_scenes(root, ids)


def initial_detector(init_from, cfg):
    """(model, frozen BatchNorm?) to fine-tune from: a shipped or exported ONNX (BatchNorm folded, so its
    statistics stay frozen) or a detector checkpoint (.pt; frozen if it was)."""
    if init_from.lower().endswith(".onnx"):
        from edge.training.from_onnx import load_detector_onnx

        return load_detector_onnx(init_from, cfg), True
    model, ckpt = load_detector(init_from)
    if model.config.to_dict() != cfg.to_dict():
        raise DatasetError("%s: trained with model_config %s, the spec says %s" % (init_from, model.config.to_dict(),
                                                                                  cfg.to_dict()))
    return model, bool(ckpt.get("frozen_bn"))


def train_detector(spec, output_dir, resume=False, device=None, workers=None, progress_every=50, init_from=None):
    """Returns (model on the CPU, history). `init_from`: an ONNX or checkpoint whose weights start the run
    (a fine-tune); a resumed run keeps what its last.pt started from."""
    seed = spec.get("random_seed", 42)
    torch.manual_seed(seed)
    tc, lc, ec = spec["training_config"], spec.get("loss_config", {}), spec.get("eval_config", {})
    ds = spec["dataset_config"]
    torch.set_num_threads(tc.get("threads", max(1, os.cpu_count() or 1)))
    device = resolve_device(device or tc.get("device", "auto"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log.info("training the detector on %s", torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU")
    os.makedirs(output_dir, exist_ok=True)
    last_path, best_path = os.path.join(output_dir, "last.pt"), os.path.join(output_dir, "best.pt")
    cfg = model_config(spec)
    model, frozen_bn = PlateDetector(cfg), False
    if init_from and not (resume and os.path.exists(last_path)):
        model, frozen_bn = initial_detector(init_from, cfg)
        log.info("fine-tuning from %s%s", init_from, " (BatchNorm statistics frozen)" if frozen_bn else "")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=tc.get("weight_decay", 5e-4))
    epoch, position, step, elapsed, history, best_ap = 0, 0, 0, 0.0, [], -1.0
    if resume and os.path.exists(last_path):
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        if ckpt.get("config") != cfg.to_dict():
            raise DatasetError("%s: trained with model_config %s, the spec says %s" % (last_path, ckpt.get("config"),
                                                                                      cfg.to_dict()))
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        epoch, position, step = ckpt["epoch"], ckpt["position"], ckpt["step"]
        elapsed, history, best_ap = ckpt.get("elapsed_s", 0.0), ckpt.get("history", []), ckpt.get("best_ap", -1.0)
        frozen_bn = bool(ckpt.get("frozen_bn"))
        if init_from and init_from != ckpt.get("init_from"):
            log.warning("--init-from %s ignored: resuming %s, which started from %s", init_from, last_path,
                        ckpt.get("init_from") or "scratch")
        init_from = ckpt.get("init_from")
        log.info("resuming %s at epoch %d, image %d, step %d", last_path, epoch + 1, position, step)
    elif resume:
        log.warning("--resume: no %s yet; starting afresh", last_path)
    model.to(device)

    workers = tc.get("workers", 0) if workers is None else workers
    if workers:
        # before any OpenCV call here: a data worker forked while OpenCV's thread pool exists hangs at its
        # first OpenCV call (seen: a CPU run with --workers 1 stuck for good)
        import cv2

        cv2.setNumThreads(1)
    t_load = time.time()
    train_scenes = load_split_scenes(spec, "train", ds.get("max_train_scenes"))
    val_scenes = load_split_scenes(spec, "val", ec.get("max_images"))
    valset = ValSet(val_scenes, cfg, ec.get("min_box_px", [8, 4]))
    frac = ds.get("synthetic_fraction", 0.3)
    pool = D.render_pool(ds.get("synthetic_regions", ["us", "ch"]), ds.get("synthetic_pool", 600), seed) \
        if frac > 0 else []
    log.info("%d train scenes, %d val scenes, %d synthetic plates ready in %.0f s", len(train_scenes),
             len(val_scenes), len(pool), time.time() - t_load)
    trainset = TrainSet(train_scenes, pool, spec, seed)
    batch = tc.get("batch_size", 16)
    epochs = tc.get("num_epochs", 30)
    steps_per_epoch = int(math.ceil(len(train_scenes) / float(batch)))
    total_steps = min(steps_per_epoch * epochs, tc.get("max_steps", 1 << 62))
    lr_cfg = tc.get("learning_rate", {})
    budget = tc.get("time_budget_minutes")
    every = tc.get("checkpoint_minutes", 5) * 60.0
    started = time.time()
    last_ckpt = started
    images_seen, t_rate = 0, time.time()

    def checkpoint(reason):
        nonlocal best_ap, images_seen, t_rate
        rate = images_seen / max(time.time() - t_rate, 1e-6)
        val = validate(model, valset, spec, device)
        if frozen_bn:
            freeze_batchnorm(model)
        entry = {"step": step, "epoch": epoch + position / float(max(1, len(train_scenes))),
                 "elapsed_s": round(elapsed + time.time() - started, 1), "train_images_per_s": round(rate, 2),
                 "loss": round(running, 4) if running == running else None, "reason": reason, "val": val}
        history.append(entry)
        state = {"kind": "plate_detector", "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "epoch": epoch, "position": position, "step": step, "elapsed_s": entry["elapsed_s"],
                 "history": history, "best_ap": max(best_ap, val["ap50"]), "config": cfg.to_dict(), "spec": spec,
                 "frozen_bn": frozen_bn, "init_from": init_from}
        _save(last_path, state)
        if val["ap50"] > best_ap:
            best_ap = val["ap50"]
            _save(best_path, state)
        with open(os.path.join(output_dir, "history.json"), "w") as f:
            json.dump(history, f, indent=1)
        log.info("checkpoint (%s) step %d epoch %.2f: loss %.4f, val recall %.3f precision %.3f AP@0.5 %.3f "
                 "(%d plates, %d images), %.1f train images/s", reason, step, entry["epoch"], running,
                 val["recall"], val["precision"], val["ap50"], val["gt_boxes"], val["images"], rate)
        images_seen, t_rate = 0, time.time()

    running = float("nan")
    stop = None
    if init_from and step == 0 and not history:
        checkpoint("init")  # the starting model on val: best.pt is a later one only if it does better
    if budget and elapsed >= budget * 60:
        log.info("the time budget of %s minutes was spent before this resume; nothing to train", budget)
        model.eval()
        return model.cpu(), history
    interrupted = []  # SIGTERM / SIGINT (a `timeout`, a service stop): checkpoint at the next step, then stop
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: interrupted.append(signum))
    while epoch < epochs and stop is None:
        items = epoch_items(len(train_scenes), batch, frac, epoch, seed)
        trainset.set_items(epoch, items[position:])
        loader = torch.utils.data.DataLoader(trainset, batch_size=batch, shuffle=False, num_workers=workers,
                                             drop_last=False, pin_memory=device.type == "cuda",
                                             persistent_workers=False,
                                             worker_init_fn=_worker_init if workers else None)
        model.train()
        if frozen_bn:
            freeze_batchnorm(model)
        for imgs, t_cov, t_weight, t_bbox in loader:
            if step >= total_steps:
                stop = "max_steps"
                break
            # by the clock where the time budget ends the run first, so a cut run has still annealed
            lr = learning_rate(schedule_progress(step, total_steps, elapsed + time.time() - started, budget), lr_cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            cov, bbox = model(to_input(imgs, device))
            loss, lcov, lbox = detector_loss(cov, bbox, t_cov.to(device), t_weight.to(device), t_bbox.to(device), lc)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            step += 1
            position += len(imgs)
            images_seen += len(imgs)
            value = loss.item()
            running = value if running != running else 0.98 * running + 0.02 * value
            if progress_every and step % progress_every == 0:
                log.info("step %d/%d epoch %d: loss %.4f (coverage %.4f, bbox %.4f) lr %.2e", step, total_steps,
                         epoch + 1, running, lcov.item(), lbox.item(), lr)
            now = time.time()
            if interrupted:
                stop = "signal"
                break
            if budget and elapsed + now - started > budget * 60:  # the run's minutes in all, across resumes
                stop = "time_budget"
                break
            if now - last_ckpt > every:
                checkpoint("interval")
                last_ckpt = time.time()
        else:
            epoch, position = epoch + 1, 0
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if epoch >= epochs:
        stop = stop or "done"
    checkpoint(stop or "done")
    if stop in ("time_budget", "signal"):
        log.info("stopped (%s) at step %d; `--resume` goes on", stop.replace("_", " "), step)
    model.eval()
    return model.cpu(), history
