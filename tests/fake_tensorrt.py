"""Recording fakes of TensorRT's Python API (two generations and their variants) and of pycuda.driver, for the
TensorRT backend's tests on a machine without a GPU. They are acceptable only because this machine has none:
tests/test_tensorrt_gpu.py runs the same backend on the real thing.

Each fake offers exactly the names its generation's bindings have (tensorrt-ota-detector.md 1.5):
  "8.2"  EXPLICIT_BATCH, BuilderFlag.FP16, config.max_workspace_size, binding indices, execute_async_v2
  "8.6"  both I/O APIs (the backend must pick tensor names), set_memory_pool_limit, execute_async_v3
  "10"   tensor names only, EXPLICIT_BATCH (ignored), FP16, no max_workspace_size
  "11"   tensor names only, no EXPLICIT_BATCH, no BuilderFlag.FP16, no platform_has_fast_fp16
Engines really compute: a "plan" is a header plus the ONNX bytes, and execution runs them with ONNX Runtime
on what was copied into the fake device memory, writing int32 ArgMax as TensorRT does.
"""
import json
import sys
import threading
import time
import types

import numpy as np
import onnxruntime as ort

VERSIONS = {"8.2": "8.2.1.8", "8.6": "8.6.2.3", "10": "10.3.0.30", "11": "11.4.0.106"}
MAGIC = b"FAKETRT1"


class Recorder:
    def __init__(self):
        self.calls = []  # (name, args, thread name)
        self.lock = threading.Lock()

    def __call__(self, name, *args):
        with self.lock:
            self.calls.append((name, args, threading.current_thread().name))

    def names(self):
        return [c[0] for c in self.calls]

    def count(self, name):
        return self.names().count(name)

    def args(self, name):
        return [c[1] for c in self.calls if c[0] == name]


class _Enum:
    def __init__(self, **members):
        for k, v in members.items():
            setattr(self, k, _Member(k, v))


class _Member:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __eq__(self, other):
        return isinstance(other, _Member) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return self.name


def make_fakes(generation, gpu_name="NVIDIA Tegra X1", compute_capability=(5, 3), dla_cores=0, cuda_works=True,
               build_fails=False, version=None, build_seconds=0.0):
    """(tensorrt module, pycuda package, pycuda.driver module, Recorder)."""
    rec = Recorder()
    memory = {}  # device address -> np.uint8 array
    gen = generation
    tensor_api = gen != "8.2"
    binding_api = gen in ("8.2", "8.6")
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version or VERSIONS[gen]
    trt.fake_state = {"parsed": []}

    flags = {"EXPLICIT_BATCH": 0} if gen != "11" else {}
    if gen in ("10", "11"):
        flags["STRONGLY_TYPED"] = 0 if gen == "11" else 1
    trt.NetworkDefinitionCreationFlag = _Enum(**flags)
    builder_flags = {"GPU_FALLBACK": 1, "REFIT": 2}
    if gen != "11":
        builder_flags["FP16"] = 0
    trt.BuilderFlag = _Enum(**builder_flags)
    trt.MemoryPoolType = _Enum(WORKSPACE=0)
    trt.DeviceType = _Enum(GPU=0, DLA=1)
    trt.TensorIOMode = _Enum(NONE=0, INPUT=1, OUTPUT=2)
    trt.DataType = _Enum(FLOAT=0, HALF=1, INT8=2, INT32=3, BOOL=4)
    _np = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "BOOL": np.bool_, "INT8": np.int8}
    trt.nptype = lambda dt: _np[dt.name]

    class ILogger:
        Severity = _Enum(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    trt.ILogger = ILogger

    def _dtype(ort_type):
        return {"tensor(float)": trt.DataType.FLOAT, "tensor(int64)": trt.DataType.INT32,
                "tensor(int32)": trt.DataType.INT32, "tensor(float16)": trt.DataType.HALF}[ort_type]

    class Tensor:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    def _dims(shape):
        return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs, self.onnx = flags, [], [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            rec("OnnxParser")
            self.network, self.logger, self.errors = network, logger, []

        def parse(self, data):
            rec("parse", len(data))
            try:
                session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            except Exception as exc:
                self.errors = ["In node -1 (parseGraph): INVALID_GRAPH: Assertion failed: %s" % str(exc)[:60]]
                return False
            trt.fake_state["parsed"].append(data)
            self.network.onnx = data
            self.network.inputs = [Tensor(i.name, _dims(i.shape), _dtype(i.type)) for i in session.get_inputs()]
            # TensorRT's shape inference: every output dimension but the batch is known after parsing
            probe = {i.name: np.zeros([1 if d < 0 else d for d in _dims(i.shape)], np.float32)
                     for i in session.get_inputs()}
            shapes = [v.shape for v in session.run(None, probe)]
            self.network.outputs = [Tensor(o.name, (-1,) + tuple(shape[1:]), _dtype(o.type))
                                    for o, shape in zip(session.get_outputs(), shapes)]
            self.logger.log(ILogger.Severity.WARNING, "onnx2trt_utils.cpp:366: Your ONNX model has been generated "
                                                      "with INT64 weights, while TensorRT does not natively support "
                                                      "INT64. Attempting to cast down to INT32.")
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            rec("profile.set_shape", name, tuple(lo), tuple(opt), tuple(hi))
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"TIMING:" + trt.__version__.encode()

    class BuilderConfig:
        def __init__(self):
            object.__setattr__(self, "flags", set())
            object.__setattr__(self, "profiles", [])
            object.__setattr__(self, "settings", {})

        def __setattr__(self, name, value):
            if name == "max_workspace_size" and gen != "8.2" and gen != "8.6":
                raise AttributeError("'tensorrt.IBuilderConfig' object has no attribute 'max_workspace_size'")
            rec("config." + name, value)
            self.settings[name] = value

        def set_flag(self, flag):
            rec("config.set_flag", flag)
            self.flags.add(flag)

        def create_timing_cache(self, data):
            rec("config.create_timing_cache", data)
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            rec("config.set_timing_cache", cache.data, ignore_mismatch)
            self.settings["timing"] = cache

        def get_timing_cache(self):
            return self.settings["timing"]

        def add_optimization_profile(self, profile):
            rec("config.add_optimization_profile")
            self.profiles.append(profile)

    if gen != "8.2":
        def set_memory_pool_limit(self, pool, size):
            rec("config.set_memory_pool_limit", pool, size)
            self.settings["workspace"] = size

        BuilderConfig.set_memory_pool_limit = set_memory_pool_limit

    class Builder:
        def __init__(self, logger):
            rec("Builder")
            if not cuda_works:
                raise TypeError("pybind11::init(): factory function returned nullptr")
            self.logger = logger
            self.num_DLA_cores = dla_cores

        def create_network(self, flags):
            rec("create_network", flags)
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec("build_serialized_network")
            time.sleep(build_seconds)
            if build_fails:
                self.logger.log(ILogger.Severity.ERROR, "1: [virtualMemoryBuffer.cpp::resizePhysical] out of memory")
                return None
            header = {"version": trt.__version__, "fp16": "FP16" in [f.name for f in config.flags],
                      "profile": {k: v for k, v in config.profiles[0].shapes.items()},
                      "dla": config.settings.get("DLA_core") if config.settings.get("default_device_type") ==
                      trt.DeviceType.DLA else None,
                      "inputs": [(t.name, t.shape, t.dtype.name) for t in network.inputs],
                      "outputs": [(t.name, t.shape, t.dtype.name) for t in network.outputs]}
            return MAGIC + json.dumps(header).encode() + b"\n" + network.onnx

    if gen != "11":
        Builder.platform_has_fast_fp16 = True

    class Runtime:
        def __init__(self, logger):
            rec("Runtime")
            self.logger = logger

        def __setattr__(self, name, value):
            if name != "logger":
                rec("runtime." + name, value)
            object.__setattr__(self, name, value)

        def deserialize_cuda_engine(self, plan):
            rec("deserialize_cuda_engine", len(plan))
            plan = bytes(plan)
            if not plan.startswith(MAGIC):
                self.logger.log(ILogger.Severity.ERROR, "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error "
                                                        "Code 1: Serialization (Magic tag does not match)")
                return None
            head, onnx_bytes = plan[len(MAGIC):].split(b"\n", 1)
            header = json.loads(head.decode())
            if header["version"] != trt.__version__:
                self.logger.log(ILogger.Severity.ERROR, "The engine plan file is not compatible with this version "
                                                        "of TensorRT, expecting library version %s got %s, please "
                                                        "rebuild." % (trt.__version__, header["version"]))
                return None
            return Engine(header, onnx_bytes)

    class Engine:
        def __init__(self, header, onnx_bytes):
            self.header = header
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self.io = [(n, tuple(s), d, True) for n, s, d in header["inputs"]] + \
                      [(n, tuple(s), d, False) for n, s, d in header["outputs"]]

        def create_execution_context(self):
            rec("create_execution_context")
            return Context(self)

    if tensor_api:
        Engine.num_io_tensors = property(lambda self: len(self.io))
        Engine.get_tensor_name = lambda self, i: self.io[i][0]
        Engine.get_tensor_mode = lambda self, name: trt.TensorIOMode.INPUT if self._find(name)[3] else \
            trt.TensorIOMode.OUTPUT
        Engine.get_tensor_shape = lambda self, name: self._find(name)[1]
        Engine.get_tensor_dtype = lambda self, name: getattr(trt.DataType, self._find(name)[2])
    if binding_api:
        Engine.num_bindings = property(lambda self: len(self.io))
        Engine.get_binding_name = lambda self, i: self.io[i][0]
        Engine.binding_is_input = lambda self, i: self.io[i][3]
        Engine.get_binding_shape = lambda self, i: self.io[i][1]
        Engine.get_binding_dtype = lambda self, i: getattr(trt.DataType, self.io[i][2])
        Engine.get_binding_index = lambda self, name: [x[0] for x in self.io].index(name)
    Engine._find = lambda self, name: [x for x in self.io if x[0] == name][0]

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def _input_set(self, name, shape):
            self.shapes[name] = tuple(shape)
            for out, oshape, _, is_input in self.engine.io:
                if not is_input:
                    self.shapes[out] = (shape[0],) + tuple(oshape[1:])

        def _run(self, addresses):
            feeds = {}
            for name, shape, dtype, is_input in self.engine.io:
                if is_input:
                    n = int(np.prod(self.shapes[name]))
                    feeds[name] = memory[addresses[name]].view(np.float32)[:n].reshape(self.shapes[name])
            outs = self.engine.session.run([x[0] for x in self.engine.io if not x[3]], feeds)
            batch = next(iter(feeds.values())).shape[0]
            for (name, shape, dtype, is_input), value in zip([x for x in self.engine.io if not x[3]], outs):
                value = value.astype(trt.nptype(getattr(trt.DataType, dtype)))  # ArgMax: int64 -> int32
                self.shapes[name] = (batch,) + tuple(shape[1:])
                raw = value.tobytes()
                memory[addresses[name]][:len(raw)] = np.frombuffer(raw, np.uint8)
            return True

    if tensor_api:
        def set_input_shape(self, name, shape):
            rec("context.set_input_shape", name, tuple(shape))
            self._input_set(name, shape)
            return True

        def set_tensor_address(self, name, address):
            rec("context.set_tensor_address", name, address)
            self.addresses[name] = address
            return True

        def get_tensor_shape(self, name):
            return self.shapes[name]

        def execute_async_v3(self, stream_handle):
            rec("context.execute_async_v3", stream_handle)
            return self._run(self.addresses)

        Context.set_input_shape, Context.set_tensor_address = set_input_shape, set_tensor_address
        Context.get_tensor_shape, Context.execute_async_v3 = get_tensor_shape, execute_async_v3
    if binding_api:
        def set_binding_shape(self, index, shape):
            rec("context.set_binding_shape", index, tuple(shape))
            self._input_set(self.engine.io[index][0], shape)
            return True

        def get_binding_shape(self, index):
            return self.shapes[self.engine.io[index][0]]

        def execute_async_v2(self, bindings, stream_handle):
            rec("context.execute_async_v2", list(bindings), stream_handle)
            return self._run({x[0]: bindings[i] for i, x in enumerate(self.engine.io)})

        Context.set_binding_shape, Context.get_binding_shape = set_binding_shape, get_binding_shape
        Context.execute_async_v2 = execute_async_v2

    trt.Builder, trt.Runtime, trt.OnnxParser = Builder, Runtime, OnnxParser

    # --- pycuda.driver ------------------------------------------------------------------------------
    cuda = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    cuda.Error = Error
    cuda.fake_memory = memory

    def init():
        rec("cuda.init")
        if not cuda_works:
            raise Error("cuInit failed: no CUDA-capable device is detected")

    class CudaContext:
        def push(self):
            rec("ctx.push")

        def pop(self):
            rec("ctx.pop")

        def detach(self):
            rec("ctx.detach")

    class Device:
        def __init__(self, index):
            rec("cuda.Device", index)

        @staticmethod
        def count():
            return 1 if cuda_works else 0

        def name(self):
            return gpu_name

        def compute_capability(self):
            return compute_capability

        def retain_primary_context(self):
            rec("retain_primary_context")
            return CudaContext()

        def make_context(self):
            raise AssertionError("the backend must use retain_primary_context")

    class DeviceAllocation:
        next_address = [0x7f0000000000]

        def __init__(self, nbytes):
            self.address = DeviceAllocation.next_address[0]
            DeviceAllocation.next_address[0] += (nbytes + 4095) // 4096 * 4096 + 4096
            memory[self.address] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self.address

        def free(self):
            rec("dev.free", self.address)
            memory.pop(self.address, None)

    class PageLocked(np.ndarray):
        pass

    def pagelocked_empty(shape, dtype):
        rec("cuda.pagelocked_empty", shape, np.dtype(dtype).name)
        return np.zeros(shape, dtype).view(PageLocked)

    def mem_alloc(nbytes):
        rec("cuda.mem_alloc", nbytes)
        return DeviceAllocation(nbytes)

    def _pinned(array):
        base = array
        while base is not None and not isinstance(base, PageLocked):
            base = base.base
        assert isinstance(array, PageLocked) and base is not None, "async copies need page-locked host memory"

    def memcpy_htod_async(dev, host, stream):
        _pinned(host)
        rec("cuda.memcpy_htod_async", int(dev), host.nbytes, stream.handle)
        raw = np.frombuffer(np.ascontiguousarray(host).tobytes(), np.uint8)
        memory[int(dev)][:len(raw)] = raw

    def memcpy_dtoh_async(host, dev, stream):
        _pinned(host)
        rec("cuda.memcpy_dtoh_async", int(dev), host.nbytes, stream.handle)
        host.view(np.uint8)[:] = memory[int(dev)][:host.nbytes]

    class Stream:
        def __init__(self):
            rec("cuda.Stream")
            self.handle = 0xBEEF

        def synchronize(self):
            rec("stream.synchronize")

    cuda.init, cuda.Device, cuda.pagelocked_empty, cuda.mem_alloc = init, Device, pagelocked_empty, mem_alloc
    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async, cuda.Stream = memcpy_htod_async, memcpy_dtoh_async, Stream
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    return trt, pycuda, cuda, rec


def install(monkeypatch, generation, **kwargs):
    """Put the fakes where `import tensorrt` and `import pycuda.driver` find them; returns (trt, Recorder)."""
    trt, pycuda, cuda, rec = make_fakes(generation, **kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return trt, rec
