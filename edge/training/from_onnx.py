"""Fine-tune from a shipped ONNX instead of a second copy of the weights: read an lpr-edge LPRNet ONNX (as
edge/training/export.py writes it, FP32 or with FP16-stored weights) back into the PyTorch model.

The exporter folded each BatchNorm into the convolution before it, so the folded weight goes into the
convolution and the folded bias into the BatchNorm's shift, with the BatchNorm made an identity (scale 1,
mean 0, variance 1 - eps). Such a model must be fine-tuned with its BatchNorm statistics frozen (train.py does
so for an ONNX start): batch statistics would undo the folding. A file of another graph (NVIDIA's TAO ONNX, a
detector) is refused naming what does not fit."""
import numpy as np
import torch
from torch import nn

from edge.dataset import DatasetError
from edge.training.model import LPRNet, LPRNetConfig


def _constants(graph):
    """name -> float32 array of every initializer, and of every Cast of one (FP16-stored weights)."""
    from onnx import numpy_helper

    values = dict((i.name, numpy_helper.to_array(i)) for i in graph.initializer)
    for node in graph.node:
        if node.op_type == "Cast" and node.input and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
        elif node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return dict((k, np.asarray(v, dtype=np.float32) if v.dtype.kind == "f" else v) for k, v in values.items())


def _read_graph(path):
    """(graph, its constants, its Conv nodes in file order) of an ONNX file, or a one-line DatasetError."""
    import onnx

    try:
        graph = onnx.load(path).graph
    except Exception as exc:
        raise DatasetError("%s: not an ONNX file: %s" % (path, exc))
    return graph, _constants(graph), [n for n in graph.node if n.op_type == "Conv"]


def _conv_params(path, convs, consts):
    """Each convolution's (folded) weight and bias, all constants of the file."""
    weights = [consts.get(n.input[1]) for n in convs]
    biases = [consts.get(n.input[2]) if len(n.input) > 2 else None for n in convs]
    if any(w is None for w in weights) or any(b is None for b in biases):
        raise DatasetError("%s: a convolution's weights are not constants of the file" % path)
    return weights, biases


def _gates_onnx_to_torch(w, hidden):
    """ONNX LSTM gates are ordered i, o, f, c; PyTorch's i, f, g(c), o."""
    i, o, f, c = (w[k * hidden:(k + 1) * hidden] for k in range(4))
    return np.concatenate([i, f, c, o])


def _conv_call_order(model, input_hw=(48, 96)):
    """The model's convolutions in the order its forward pass runs them (the exporter's node order)."""
    order, hooks = [], []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(lambda m, _i, _o: order.append(m)))
    with torch.no_grad():
        model.eval()(torch.zeros((1, 3) + tuple(input_hw)))
    for h in hooks:
        h.remove()
    return order


def _bn_after(model):
    """conv -> the BatchNorm that follows it."""
    pairs = {}
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            mods = list(module)
            for a, b in zip(mods, mods[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    pairs[a] = b
        for name in ("1", "2"):
            conv, bn = getattr(module, "conv" + name, None), getattr(module, "bn" + name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                pairs[conv] = bn
    return pairs


def load_onnx_weights(path, characters, config_hint=None):
    """(LPRNet with the file's weights, its LPRNetConfig). `config_hint` (an LPRNetConfig) is checked against
    the file's shapes; without it the architecture is read from them."""
    graph, consts, convs = _read_graph(path)
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    if not convs or len(lstms) != 1:
        raise DatasetError("%s: not an lpr-edge LPRNet ONNX (%d Conv, %d LSTM nodes; needs an LSTM head as "
                           "edge/training/export.py writes it)" % (path, len(convs), len(lstms)))
    weights, biases = _conv_params(path, convs, consts)
    hidden = int(lstms[0].attribute[[a.name for a in lstms[0].attribute].index("hidden_size")].i)
    n_layers = 10 if len(convs) == 13 else 18 if len(convs) == 21 else None
    if n_layers is None:
        raise DatasetError("%s: %d convolutions fit neither baseline10 (13) nor baseline18 (21)" % (path, len(convs)))
    width = weights[0].shape[0] / 64.0
    config = config_hint or LPRNetConfig(n_chars=len(characters), nlayers=n_layers, hidden_units=hidden, width=width)
    model = LPRNet(config)
    order = _conv_call_order(model)
    if len(order) != len(convs):
        raise DatasetError("%s: %d convolutions, the spec's model has %d" % (path, len(convs), len(order)))
    _load_folded_convs(path, model, order, weights, biases)
    with torch.no_grad():
        node = lstms[0]
        w_ih, w_hh = consts[node.input[1]][0], consts[node.input[2]][0]
        b = consts[node.input[3]][0] if len(node.input) > 3 and node.input[3] else np.zeros(8 * hidden, np.float32)
        lstm = model.lstm
        if tuple(lstm.weight_ih_l0.shape) != w_ih.shape or lstm.hidden_size != hidden:
            raise DatasetError("%s: its LSTM is %s, the spec's model has %s"
                               % (path, list(w_ih.shape), list(lstm.weight_ih_l0.shape)))
        lstm.weight_ih_l0.copy_(torch.from_numpy(_gates_onnx_to_torch(w_ih, hidden)))
        lstm.weight_hh_l0.copy_(torch.from_numpy(_gates_onnx_to_torch(w_hh, hidden)))
        lstm.bias_ih_l0.copy_(torch.from_numpy(_gates_onnx_to_torch(b[:4 * hidden], hidden)))
        lstm.bias_hh_l0.copy_(torch.from_numpy(_gates_onnx_to_torch(b[4 * hidden:], hidden)))
        dense_w = _dense_weight(graph, consts, hidden, config.n_chars + 1)
        dense_b = consts.get("net.td_dense.bias")
        if dense_w is None or dense_b is None:
            raise DatasetError("%s: no dense head of %d classes after the LSTM (characters list of %d?)"
                               % (path, config.n_chars + 1, len(characters)))
        model.td_dense.weight.copy_(torch.from_numpy(np.array(dense_w)))
        model.td_dense.bias.copy_(torch.from_numpy(np.array(dense_b)))
    return model.eval(), config


def _load_folded_convs(path, model, order, weights, biases):
    """Each convolution's folded weight into the convolution; its folded bias into the BatchNorm after it (made
    an identity), or into the convolution's own bias where none follows (a head)."""
    pairs = _bn_after(model)
    with torch.no_grad():
        for conv, w, b in zip(order, weights, biases):
            if tuple(conv.weight.shape) != w.shape:
                raise DatasetError("%s: a convolution is %s, the spec's model has %s (another width or layers)"
                                   % (path, list(w.shape), list(conv.weight.shape)))
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            bn = pairs.get(conv)
            if bn is None:
                if conv.bias is None:
                    raise DatasetError("%s: a convolution of the file has a bias the spec's model lacks" % path)
                conv.bias.copy_(torch.from_numpy(np.array(b)))
                continue
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(np.array(b)))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)


def load_detector_onnx(path, config):
    """An lpr-edge plate detector ONNX (edge/training/detect/export.py's graph, the DetectNet_v2 contract) back
    into PlateDetector(config), BatchNorm folded as above: fine-tune it with the statistics frozen."""
    from edge.training.detect.model import PlateDetector

    graph, consts, convs = _read_graph(path)
    model = PlateDetector(config)
    order = _conv_call_order(model, (config.input_height, config.input_width))
    if len(convs) != len(order) or any(n.op_type == "LSTM" for n in graph.node):
        raise DatasetError("%s: %d convolutions; the spec's detector (%s) has %d: not an lpr-edge detector of "
                           "this model_config" % (path, len(convs), config.to_dict(), len(order)))
    weights, biases = _conv_params(path, convs, consts)
    _load_folded_convs(path, model, order, weights, biases)
    return model.eval()


def _dense_weight(graph, consts, hidden, classes):
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            for name in node.input[1:2]:
                w = consts.get(name)
                if w is not None and w.shape == (hidden, classes):
                    return np.ascontiguousarray(w.T)
                if w is not None and w.shape == (classes, hidden):
                    return w
    return None


def freeze_batchnorm(model):
    """BatchNorm layers to eval mode (running statistics fixed, scale and shift still learn); call after
    every model.train()."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return model
