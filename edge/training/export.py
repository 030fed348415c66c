"""Export a trained LPRNet to ONNX with NVIDIA's deployable contract: input `image_input` [N,3,48,96]
(dynamic batch), outputs `tf_op_layer_ArgMax` (class id per timestep) and `tf_op_layer_Max` (its
probability), plus `class_probs` [N,T,n_chars+1] for plate-format decoding (a consumer of NVIDIA's two
outputs, such as DeepStream's LPR parser, reads those by name and ignores it). The file is written to a temporary name and renamed, so a crash leaves no half file."""
import copy
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


FP16_SUFFIX = ".fp16.onnx"  # what edge/infer/tensorrt_backend.py looks for beside a model


class _Fp16Inside(torch.nn.Module):
    """The deployable contract with an FP16 body: FP32 image in, FP16 convolutions and LSTM, softmax and the
    three outputs in FP32. TensorRT 11 builds strongly typed networks only (no FP16 builder flag): the
    precision is the graph's own."""

    def __init__(self, net):
        super().__init__()
        self.net = copy.deepcopy(net).half().eval()

    def forward(self, image_input):
        prob = torch.softmax(self.net(image_input.half()).float(), dim=-1)
        best, ids = prob.max(dim=-1)
        return ids, best, prob


def fp16_variant_path(path):
    return os.path.splitext(path)[0] + FP16_SUFFIX


def export_fp16_variant(model, path, images, opset=OPSET, min_same=0.97):
    """Write `<model>.fp16.onnx` beside `path`; checked by reads (the FP16 body, run by PyTorch on the CPU,
    must read at least `min_same` of `images` as the FP32 model does) and structurally (FP16 weights, FP32
    inputs and outputs). ONNX Runtime's CPU build cannot run the FP16 graph, so the file itself is first run
    by TensorRT (tests/test_tensorrt_gpu.py on a GPU). Returns (path, share read the same); ValueError when
    a check fails (nothing is left at the path then)."""
    import onnx
    from onnx import TensorProto

    model.eval()
    wrapper = _Fp16Inside(model)
    with torch.no_grad():  # before the export: tracing leaves a half-precision LSTM module changed
        x = to_tensor(images)
        ids32 = model(x).softmax(-1).max(-1)[1]
        ids16 = wrapper(x)[0]
    same = float((ids32 == ids16).all(dim=-1).float().mean())
    if same < min_same:
        raise ValueError("FP16 variant reads %.1f%% of the check plates as FP32 does (needs %.0f%%)"
                         % (100 * same, 100 * min_same))
    out = fp16_variant_path(path)
    tmp = out + ".part"
    dummy = torch.rand(2, 3, 48, 96)
    torch.onnx.export(wrapper, (dummy,), tmp, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                      output_names=list(OUTPUT_NAMES), do_constant_folding=True,
                      dynamic_axes=dict([(INPUT_NAME, {0: "batch"})] + [(n, {0: "batch"}) for n in OUTPUT_NAMES]))
    try:
        graph = onnx.load(tmp)
        onnx.checker.check_model(graph)
        fp32 = [i.name for i in graph.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) > 1]
        if fp32:
            raise ValueError("FP16 variant still has FP32 weights: %s" % ", ".join(fp32[:5]))
        kinds = dict((o.name, o.type.tensor_type.elem_type) for o in list(graph.graph.input) + list(graph.graph.output))
        if kinds.get(INPUT_NAME) != TensorProto.FLOAT or kinds.get("class_probs") != TensorProto.FLOAT:
            raise ValueError("FP16 variant must keep FP32 inputs and outputs: %s" % kinds)
    except Exception:
        os.remove(tmp)
        raise
    os.replace(tmp, out)
    return out, same


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
