"""Export the detector to ONNX with the DetectNet_v2 contract (LPDNet's tensor names, dynamic batch, opset
13: ONNX Runtime 1.10 and TensorRT 8.2 parse it), checked against PyTorch: the outputs' max abs difference
and the boxes decoded from both through edge.detect.contracts."""
import os

import numpy as np
import torch

from edge.detect.contracts import DETECTNET_BBOX, DETECTNET_COV, DETECTNET_INPUT, decode_detectnet
from edge.training.detect.model import DeployableDetector

OPSET = 13


def export_onnx(model, path, opset=OPSET):
    model = model.eval()
    cfg = model.config
    wrapper = DeployableDetector(model).eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".part"
    names = [DETECTNET_COV, DETECTNET_BBOX]
    torch.onnx.export(wrapper, (torch.rand(2, 3, cfg.input_height, cfg.input_width),), tmp, dynamo=False,
                      opset_version=opset, input_names=[DETECTNET_INPUT], output_names=names,
                      dynamic_axes=dict([(DETECTNET_INPUT, {0: "batch"})] + [(n, {0: "batch"}) for n in names]),
                      do_constant_folding=True)
    os.replace(tmp, path)
    return path


def check_export(model, path, images, threshold=0.3, nms_iou=0.3, box_tolerance=1.0):
    """images uint8 [N,H,W,3] at the model's input size -> (max abs difference of the outputs, problems):
    problems lists the images whose decoded boxes differ (count, or a corner by more than box_tolerance px)."""
    import onnxruntime as ort

    cfg = model.config
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    cov_o, bbox_o = sess.run([DETECTNET_COV, DETECTNET_BBOX], {DETECTNET_INPUT: x})
    with torch.no_grad():
        cov_t, bbox_t = DeployableDetector(model.eval())(torch.from_numpy(x))
    cov_t, bbox_t = cov_t.numpy(), bbox_t.numpy()
    diff = float(max(np.abs(cov_o - cov_t).max(), np.abs(bbox_o - bbox_t).max()))
    problems = []
    for i in range(len(x)):
        a = decode_detectnet(cov_o[i], bbox_o[i], cfg.input_height, cfg.input_width, threshold, nms_iou)
        b = decode_detectnet(cov_t[i], bbox_t[i], cfg.input_height, cfg.input_width, threshold, nms_iou)
        if len(a) != len(b):
            problems.append("image %d: %d boxes from ONNX Runtime, %d from PyTorch" % (i, len(a), len(b)))
        elif len(a) and np.abs(a[:, :4] - b[:, :4]).max() > box_tolerance:
            problems.append("image %d: boxes differ by %.2f px" % (i, np.abs(a[:, :4] - b[:, :4]).max()))
    return diff, problems, sum(1 for i in range(len(x)) for _ in
                               decode_detectnet(cov_o[i], bbox_o[i], cfg.input_height, cfg.input_width, threshold,
                                                nms_iou))
