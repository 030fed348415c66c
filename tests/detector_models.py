"""Small ONNX detectors of each contract, built at test time with boxes known in advance, so the decoders
are checked against those boxes (and the pipeline runs a real ONNX file through the real backend).

The outputs are constants (what a trained model would say about a frame with the plates at `boxes`), tied
to the input through 0 * mean(input) so ONNX Runtime cannot fold the input away."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.detect import contracts


def _graph(name, input_name, input_shape, outputs, path, per_image=True):
    """outputs: [(name, constant array, declared shape)]; each = constant + 0 * mean(input), the mean taken
    per image ([N,1,1,1]: the outputs get the input's batch) or over everything (a scalar)."""
    mean = helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1, 2, 3], keepdims=1) if per_image else \
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0)
    nodes = [mean,
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for i, (out_name, value, shape) in enumerate(outputs):
        const = "const%d" % i
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), const))
        nodes.append(helper.make_node("Add", [const, "nothing"], [out_name]))
        outs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6  # ONNX Runtime on Python 3.6 reads IR 6
    onnx.save(model, str(path))
    return str(path)


def detectnet_model(path, boxes, net_h=288, net_w=512, score=0.9, batch="N"):
    """A DetectNet_v2 (LPDNet contract) file whose outputs cover `boxes` (x1, y1, x2, y2 in input pixels):
    the cells around each box centre say `score` and hold that box's regression."""
    gh, gw = net_h // 16, net_w // 16
    cov = np.zeros((1, 1, gh, gw), np.float32)
    bbox = np.zeros((1, 4, gh, gw), np.float32)
    for box in boxes:
        target = contracts.encode_detectnet(box, gh, gw, net_h, net_w)
        cx, cy = (box[0] + box[2]) / 32.0, (box[1] + box[3]) / 32.0
        for r in range(max(0, int(cy) - 1), min(gh, int(cy) + 2)):
            for c in range(max(0, int(cx) - 1), min(gw, int(cx) + 2)):
                cov[0, 0, r, c] = score if (r, c) == (int(cy), int(cx)) else score * 0.8
                bbox[0, :, r, c] = target[:, r, c]
    return _graph("detectnet", contracts.DETECTNET_INPUT, [batch, 3, net_h, net_w],
                  [(contracts.DETECTNET_COV, cov, [batch, 1, gh, gw]), (contracts.DETECTNET_BBOX, bbox, [batch, 4, gh, gw])],
                  path)


def yolo_e2e_model(path, boxes, size=640, score=0.85):
    """A YOLO end-to-end file (NMS inside, batch 1): rows [0, x1, y1, x2, y2, 0, score] in letterboxed input pixels."""
    rows = np.array([[0] + list(b[:4]) + [0, score] for b in boxes], np.float32).reshape(-1, 7)
    return _graph("yolo_e2e", "images", [1, 3, size, size], [("output", rows, ["num_dets", 7])], path,
                  per_image=False)


def other_model(path):
    """A model of no detector contract (one [N,10] output)."""
    return _graph("other", "x", ["N", 3, 64, 64], [("logits", np.zeros((1, 10), np.float32), ["N", 10])], path,
                  per_image=False)
