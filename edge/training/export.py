"""Export a trained LPRNet to ONNX with NVIDIA's deployable contract: input `image_input` [N,3,48,96]
(dynamic batch), outputs `tf_op_layer_ArgMax` (class id per timestep) and `tf_op_layer_Max` (its
probability). The file is written to a temporary name and renamed, so a crash leaves no half file."""
import os

import numpy as np
import torch

from edge.recognize.decode import decode_batch
from edge.training.model import DeployableLPRNet
from edge.training.train import to_tensor

INPUT_NAME = "image_input"
OUTPUT_NAMES = ("tf_op_layer_ArgMax", "tf_op_layer_Max")
OPSET = 13  # ONNX Runtime 1.10 (last for Python 3.6, JetPack 4.6) and TensorRT 8.0/8.2 parse up to 13


def export_onnx(model, path, opset=OPSET):
    model.eval()
    wrapper = DeployableLPRNet(model).eval()
    dummy = torch.rand(2, 3, 48, 96)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".part"
    torch.onnx.export(
        wrapper, (dummy,), tmp, dynamo=False, opset_version=opset,
        input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAMES[0]: {0: "batch"}, OUTPUT_NAMES[1]: {0: "batch"}},
        do_constant_folding=True,
    )
    os.replace(tmp, path)
    return path


def save_weights(model, characters, path):
    """The weights a user fine-tunes from (`lpr-edge-train train --init-from M.pt`): state dict in FP16
    (half the size; upcast at load), model config and characters list. Written atomically."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    tmp = path + ".part"
    torch.save({"model": state, "config": model.config.__dict__, "characters": list(characters),
                "format": "lpr-edge-weights/1"}, tmp)
    os.replace(tmp, path)
    return path


def check_same_reads(model, onnx_path, images, characters):
    """Decode `images` (uint8 [N,48,96,3]) with PyTorch and with ONNX Runtime; return the mismatches."""
    import onnxruntime as ort

    model.eval()
    with torch.no_grad():
        prob = model(to_tensor(images)).softmax(-1)
        best, ids = prob.max(-1)
    torch_reads = decode_batch(ids.numpy(), best.numpy(), characters)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ort_ids, ort_best = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: to_tensor(images).numpy()})
    ort_reads = decode_batch(ort_ids, ort_best, characters)
    return [(i, a.text, b.text) for i, (a, b) in enumerate(zip(torch_reads, ort_reads)) if a.text != b.text]


def random_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 96, 3), dtype=np.uint8)
