"""Export a trained LPRNet to ONNX with NVIDIA's deployable contract: input `image_input` [N,3,48,96]
(dynamic batch), outputs `tf_op_layer_ArgMax` (class id per timestep) and `tf_op_layer_Max` (its
probability), plus `class_probs` [N,T,n_chars+1] for plate-format decoding (a consumer of NVIDIA's two
outputs, such as DeepStream's LPR parser, reads those by name and ignores it). The file is written to a temporary name and renamed, so a crash leaves no half file."""
import os

import numpy as np
import torch

from edge.recognize.decode import decode_batch
from edge.training.model import DeployableLPRNet
from edge.training.train import to_tensor

INPUT_NAME = "image_input"
OUTPUT_NAMES = ("tf_op_layer_ArgMax", "tf_op_layer_Max", "class_probs")
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
        dynamic_axes=dict([(INPUT_NAME, {0: "batch"})] + [(name, {0: "batch"}) for name in OUTPUT_NAMES]),
        do_constant_folding=True,
    )
    os.replace(tmp, path)
    return path


def store_weights_fp16(path, min_elements=1024):
    """Rewrite an exported ONNX so that its large FP32 weights are stored as FP16, each followed by a Cast
    back to FP32: half the file, while inputs, outputs and arithmetic stay FP32 (ONNX Runtime and TensorRT
    fold the casts at load, so inference costs the same). For models that would not fit models/' budget
    in FP32. Rewritten atomically; returns (bytes before, bytes after)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    before = os.path.getsize(path)
    model = onnx.load(path)
    graph = model.graph
    casts, keep = [], []
    inputs = set(i.name for i in graph.input)  # older exporters list initializers as inputs: leave those be
    for init in graph.initializer:
        if (init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements
                or init.name in inputs):
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_upcast"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)  # the casts first: nodes stay in topological order
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    tmp = path + ".part"
    onnx.save(model, tmp)
    os.replace(tmp, path)
    return before, os.path.getsize(path)


def save_weights(model, characters, path):
    """The weights a user fine-tunes from (`lpr-edge-train train --init-from M.pt`): state dict in FP16
    (half the size; upcast at load), model config and characters list. Written atomically."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    tmp = path + ".part"
    torch.save({"model": state, "config": model.config.__dict__, "characters": list(characters),
                "format": "lpr-edge-weights/1"}, tmp)
    os.replace(tmp, path)
    return path


def check_same_reads(model, onnx_path, images, characters, tolerance=1e-3):
    """Decode `images` (uint8 [N,48,96,3]) with PyTorch and with ONNX Runtime; return the mismatches
    (index, PyTorch's text, ONNX Runtime's text, largest class-probability difference), a plate also counting
    when its class probabilities (what plate-format decoding reads) differ by more than `tolerance`."""
    import onnxruntime as ort

    model.eval()
    with torch.no_grad():
        prob = model(to_tensor(images)).softmax(-1)
        best, ids = prob.max(-1)
    torch_reads = decode_batch(ids.numpy(), best.numpy(), characters)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ort_ids, ort_best, ort_prob = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: to_tensor(images).numpy()})
    ort_reads = decode_batch(ort_ids, ort_best, characters)
    diff = np.abs(ort_prob - prob.numpy()).reshape(len(images), -1).max(1)
    return [(i, a.text, b.text, round(float(diff[i]), 6)) for i, (a, b) in enumerate(zip(torch_reads, ort_reads))
            if a.text != b.text or diff[i] > tolerance]


def random_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 96, 3), dtype=np.uint8)


def write_characters(characters, onnx_path):
    """The characters list beside the ONNX as <stem>.characters.txt, where the daemon looks for it; atomic."""
    path = os.path.splitext(onnx_path)[0] + ".characters.txt"
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(c + "\n" for c in characters))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def export_package(onnx_path, characters_path, out, name, version, serial, key=None, golden=None,
                   min_accuracy=None):
    """A signed model package (edge/ota) of an exported ONNX: what `lpr-edge model install` and the OTA
    commands take. Its contract and golden-set accuracy are measured on ONNX Runtime as a device does."""
    from edge.ota.pack import pack

    return pack(onnx_path, out, name, version, serial, key_path=key, characters_path=characters_path,
                golden_dir=golden, min_accuracy=min_accuracy)
