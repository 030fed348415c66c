"""Small real ONNX files with LPRNet's outward shape (or deliberately wrong ones) for contract tests."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_lprnet_like(path, n_classes=36, input_shape=("N", 3, 48, 96), output_names=("tf_op_layer_ArgMax", "tf_op_layer_Max"),
                     force_class=None, timesteps=24, input_name="image_input", class_probs=False, bias=None):
    """Mean over the image -> MatMul -> reshape [N, T, n_classes] -> softmax -> ArgMax / ReduceMax (and the
    softmax itself as `class_probs` when asked). `bias` [T, n_classes]: logits every plate gets."""
    features = input_shape[1]
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((features, timesteps * n_classes)) * 0.01).astype(np.float32)
    bias = np.zeros(timesteps * n_classes, np.float32) if bias is None else np.asarray(bias, np.float32).ravel()
    if force_class is not None:
        bias.reshape(timesteps, n_classes)[:, force_class] = 50.0
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["flat"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
        helper.make_node("Reshape", ["logits", "shape"], ["seq"]),
        helper.make_node("Softmax", ["seq"], ["prob"], axis=2),
        helper.make_node("ArgMax", ["prob"], [output_names[0]], axis=2, keepdims=0),
        helper.make_node("ReduceMax", ["prob"], [output_names[1]], axes=[2], keepdims=0),
    ]
    outputs = [helper.make_tensor_value_info(output_names[0], TensorProto.INT64, [input_shape[0], timesteps]),
               helper.make_tensor_value_info(output_names[1], TensorProto.FLOAT, [input_shape[0], timesteps])]
    if class_probs:
        nodes.append(helper.make_node("Identity", ["prob"], ["class_probs"]))
        outputs.append(helper.make_tensor_value_info("class_probs", TensorProto.FLOAT,
                                                     [input_shape[0], timesteps, n_classes]))
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B"),
             numpy_helper.from_array(np.array([0, timesteps, n_classes], np.int64), "shape")]
    graph = helper.make_graph(
        nodes, "lprnet_like",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)
