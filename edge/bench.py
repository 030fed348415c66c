"""`lpr-edge bench [model]`: the recognizer's throughput and latency per batch size, measured in one run so the
figures compare as ratios (absolute numbers on a shared machine are noisy), against what the same runtime
reaches, in the same run and with the same threads, on a plain large matrix product and a plain 3x3
convolution: the model's FLOP/s as a share of the machine's. Crops are random pixels: LPRNet's cost does not
depend on content. MACs are counted from the ONNX graph (convolutions, matrix products, LSTMs) with the
`onnx` package where it is installed."""
import time

import numpy as np

REFERENCE_SECONDS = 2.0


def bench(recognizer, batch_sizes, seconds, warmup=3):
    """Per batch size: plates/s, median, p50 and p99 batch latency (ms), runs, and the speed-up over the first."""
    rng = np.random.default_rng(0)

    def crops(batch):
        return [rng.integers(0, 256, (48, 96, 3), dtype=np.uint8) for _ in range(batch)]

    return _bench(recognizer.read, crops, batch_sizes, seconds, warmup, "plates_per_s")


def bench_detector(detector, batch_sizes, seconds, frame_size=(1280, 720), warmup=2):
    """The same for the detector: frames/s (preprocessing, inference, decoding) for frames of `frame_size`.
    Frames are random pixels: its cost does not depend on content (a few more boxes to decode, at most)."""
    rng = np.random.default_rng(0)
    w, h = frame_size

    def frames(batch):
        return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(batch)]

    return _bench(detector.detect, frames, batch_sizes, seconds, warmup, "frames_per_s")


def _bench(run, make_batch, batch_sizes, seconds, warmup, rate_key):
    rows = []
    for batch in batch_sizes:
        items = make_batch(batch)
        for _ in range(warmup):
            run(items)
        latencies = _timed(lambda: run(items), seconds)
        total = sum(latencies)
        rows.append({"batch": batch, rate_key: round(batch * len(latencies) / total, 1),
                     "batch_ms_median": round(1000 * float(np.median(latencies)), 2),
                     "latency_ms_p50": round(1000 * float(np.percentile(latencies, 50)), 2),
                     "latency_ms_p99": round(1000 * float(np.percentile(latencies, 99)), 2),
                     "runs": len(latencies)})
    base = rows[0][rate_key]
    for row in rows:
        row["speedup_vs_first"] = round(row[rate_key] / base, 2) if base else None
    return rows


def _timed(fn, seconds, min_runs=3):
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end or len(latencies) < min_runs:
        t0 = time.monotonic()
        fn()
        latencies.append(time.monotonic() - t0)
    return latencies


# --- MACs from the graph ---------------------------------------------------------------------------
def count_macs(onnx_path):
    """Multiply-accumulates per sample (batch 1) by op kind, from the ONNX graph: weight shapes from its
    initializers, activation shapes measured by running it once (at batch 1) with those tensors exposed, since
    shape inference cannot follow the reshape before the LSTM. None where the `onnx` package is not installed
    (the device's runtime does not need it)."""
    try:
        import onnx
    except ImportError:
        return None
    import onnxruntime as ort

    model = onnx.load(onnx_path)
    wanted = [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm", "LSTM")]
    weights = dict((i.name, list(i.dims)) for i in model.graph.initializer)
    names = set()
    for node in wanted:  # weights too where they are computed (a quantized model's DequantizeLinear)
        used = [node.input[0], node.output[0]] + list(node.input[1:3] if node.op_type in ("Conv", "LSTM") else [])
        names.update(t for t in used if t and t not in weights)
    existing = set(o.name for o in model.graph.output)
    for name in sorted(names - existing):
        model.graph.output.extend([onnx.ValueInfoProto(name=name)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    outs = sess.run(None, {inp.name: np.zeros(shape, np.float32)})
    shapes = dict(weights)
    shapes.update((o.name, list(v.shape)) for o, v in zip(sess.get_outputs(), outs))
    macs = {"conv": 0, "matmul": 0, "lstm": 0, "uncounted_nodes": 0}
    for node in wanted:
        out, first = shapes.get(node.output[0]), shapes.get(node.input[0])
        if out is None or first is None or any(shapes.get(t) is None for t in node.input[1:3] if t):
            macs["uncounted_nodes"] += 1
            continue
        if node.op_type == "Conv":
            macs["conv"] += int(np.prod(out)) * int(np.prod(shapes[node.input[1]][1:]))  # Cin/groups * kh * kw
        elif node.op_type in ("MatMul", "Gemm"):
            macs["matmul"] += int(np.prod(out)) * first[-1]
        else:  # LSTM: per step and direction, the four gates over the input and the hidden state
            w, r = shapes[node.input[1]], shapes[node.input[2]]
            macs["lstm"] += first[0] * w[0] * w[1] * (w[2] + r[2])
    macs["total"] = macs["conv"] + macs["matmul"] + macs["lstm"]
    return macs


# --- what the runtime reaches on plain work -------------------------------------------------------------
def reference_gflops(threads=0, seconds=REFERENCE_SECONDS):
    """GFLOP/s (2 FLOP per MAC) ONNX Runtime reaches on the CPU on a 1024^3 matrix product and on a 3x3
    convolution (16 x 128 -> 128 channels, 24x48), with `threads` intra-op threads (0: its default); None
    without the `onnx` package to build them."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    out = {}
    cases = {
        "matmul": ((1024, 1024), (1024, 1024), "MatMul", 1024 ** 3, {}),
        "conv3x3": ((16, 128, 24, 48), (128, 128, 3, 3), "Conv", 16 * 128 * 128 * 9 * 24 * 48,
                    {"pads": [1, 1, 1, 1]}),
    }
    for name, (x_shape, w_shape, op, macs, attrs) in cases.items():
        weight = numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "w")
        node = helper.make_node(op, ["x", "w"], ["y"], **attrs)
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 7
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        x = rng.standard_normal(x_shape).astype(np.float32)
        for _ in range(2):
            sess.run(None, {"x": x})
        latencies = _timed(lambda: sess.run(None, {"x": x}), seconds)
        out[name] = round(2.0 * macs / float(np.median(latencies)) / 1e9, 1)
    return out


def add_flops(rows, macs, reference):
    """The model's GFLOP/s per row and its share of the plain conv's and matmul's (None where unknown)."""
    for row in rows:
        gflops = 2.0 * macs["total"] * row["plates_per_s"] / 1e9 if macs else None
        row["gflops"] = round(gflops, 2) if gflops is not None else None
        for name in ("conv3x3", "matmul"):
            ref = (reference or {}).get(name)
            row["vs_%s" % name] = round(gflops / ref, 3) if gflops is not None and ref else None
    return rows
