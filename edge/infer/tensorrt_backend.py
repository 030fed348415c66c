"""TensorRT backend (tensorrt + pycuda): builds an engine for this GPU from the ONNX model (or loads it from
the engine cache) and runs it.

One thread owns everything CUDA: it makes the context (`retain_primary_context()` + push, never
pycuda.autoinit, whose context is current only in the importing thread), builds or loads the engine,
allocates page-locked host buffers and device buffers once for the profile's max batch, and serves run()
calls from any thread over a queue: host -> device copy, execute, device -> host copy on one stream, async.
On close it frees the buffers, pops the context and detaches it, in that thread.

One code path for the TensorRT versions in the field, chosen by feature probing (hasattr), never by parsing
version strings (../shared/docs/tensorrt-ota-detector.md 1.5-1.6):
  8.2 (JetPack 4.6)      EXPLICIT_BATCH flag, max_workspace_size, binding indices, execute_async_v2
  8.5 / 8.6 (JP 5, 6.0)  set_memory_pool_limit, tensor names, set_input_shape, execute_async_v3
  10.x (JP 6.1+, x86)    the same; EXPLICIT_BATCH ignored; no binding API
  11.x (x86, JP 7)       no BuilderFlag.FP16, no EXPLICIT_BATCH: FP16 only from an FP16 ONNX variant
                         (<model>.fp16.onnx, FP16 inside, FP32 inputs and outputs), else FP32 with a warning
tf_op_layer_ArgMax comes back int32 (ONNX says int64): outputs keep the engine's dtype.
"""
import logging
import os
import queue
import threading

import numpy as np

from edge.infer import engine_cache, progress
from edge.infer.base import BackendUnavailable, ModelError, Session, TensorSpec
from edge.infer.device import detect

log = logging.getLogger("edge.infer")

INSTALL_HINT = ("install it: on a Jetson use JetPack's TensorRT (python3-libnvinfer) in a venv made with "
                "--system-site-packages and `pip install pycuda` (needs nvcc: PATH=/usr/local/cuda/bin:$PATH); "
                "on x86 `pip install tensorrt pycuda` with an NVIDIA driver (README: Jetson and TensorRT)")
FP16_SUFFIX = ".fp16.onnx"


def import_tensorrt():
    """(tensorrt, pycuda.driver), or BackendUnavailable naming what is missing."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or an OSError from a libnvinfer that does not load
        raise BackendUnavailable("TensorRT does not import (%s); %s" % (exc, INSTALL_HINT))
    try:
        import pycuda.driver as cuda
    except Exception as exc:
        raise BackendUnavailable("pycuda does not import (%s); %s" % (exc, INSTALL_HINT))
    return trt, cuda


# --- feature probes: one per API difference between TensorRT generations ------------------------------
def network_flags(trt):
    """EXPLICIT_BATCH where the enum has it (8.x needs it for ONNX, 10.x ignores it, 11.x lacks it)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    return 1 << int(flag) if flag is not None else 0


def set_workspace(trt, config, nbytes):
    if hasattr(config, "set_memory_pool_limit"):  # 8.4+
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, nbytes)
    else:  # 8.2
        config.max_workspace_size = nbytes


def has_tensor_api(obj):
    """Engines and contexts of 8.5+ address tensors by name; 8.2's by binding index."""
    return hasattr(obj, "num_io_tensors") or hasattr(obj, "set_input_shape")


def fp16_variant(model_path):
    stem = model_path[:-len(".onnx")] if model_path.endswith(".onnx") else model_path
    return stem + FP16_SUFFIX


def _sha256(path):
    from edge.recognize.model import sha256_file  # late: edge.recognize imports this layer

    return sha256_file(path)


def _pad(array, size):
    if array.shape[0] >= size:
        return array
    return np.concatenate([array, np.zeros((size - array.shape[0],) + array.shape[1:], array.dtype)])


def _make_logger(trt):
    """A TensorRT logger that keeps the warnings (they go to the engine's sidecar) and logs errors."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.warnings = []

        def log(self, severity, msg):
            if severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(str(msg))
                log.debug("TensorRT: %s", msg)
            elif severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                log.error("TensorRT: %s", msg)

    return _Logger()


class BuildPlan:
    """What one engine is built from: the ONNX file chosen, the precision it gets, the profile, DLA."""

    def __init__(self, trt, model_path, options, dla_cores):
        self.model_path = model_path
        self.source_path = model_path
        self.fp16_flag = False
        self.precision = "fp32"
        self.notes = []
        if options.precision == "fp16":
            if hasattr(trt.BuilderFlag, "FP16"):
                self.fp16_flag, self.precision = True, "fp16"
            elif os.path.isfile(fp16_variant(model_path)):
                self.source_path, self.precision = fp16_variant(model_path), "fp16"
            else:
                self.notes.append("TensorRT %s has no FP16 builder flag (strongly typed only) and %s has no FP16 "
                                  "variant %s: building FP32 (lpr-edge-train export writes the variant)"
                                  % (trt.__version__, model_path, os.path.basename(fp16_variant(model_path))))
        self.dla_core = options.dla_core
        if self.dla_core >= 0 and self.dla_core >= dla_cores:
            self.notes.append("the profile asks for DLA core %d but this device has %s; building for the GPU"
                              % (self.dla_core, "%d DLA cores" % dla_cores if dla_cores else "no DLA"))
            self.dla_core = -1
        elif self.dla_core >= 0 and not self.fp16_flag:  # DLA runs FP16 and INT8 only
            self.notes.append("DLA core %d needs an FP16 build (precision fp16 with the builder's FP16 flag); "
                              "building for the GPU" % self.dla_core)
            self.dla_core = -1
        lo, opt, hi = options.batch_profile()
        if self.dla_core >= 0:  # DLA runs static shapes only (DeepStream builds DLA engines min = max)
            lo = opt = hi
        self.batch_profile = (lo, opt, hi)
        self.workspace_mb = options.workspace_mb


class TensorRTSession(Session):
    name = "tensorrt"

    def __init__(self, model_path, options, device_index=0):
        self.trt, self.cuda = import_tensorrt()
        if not os.path.isfile(model_path):
            raise ModelError("%s: no such model file" % model_path)
        if not options.engine_dir:
            raise BackendUnavailable("no engine cache folder (recognizer.engine_dir) for the TensorRT engine")
        self.path = model_path
        self.options = options
        self.device_index = device_index
        self.providers = ("TensorRT %s" % self.trt.__version__,)
        self.cache = engine_cache.EngineCache(options.engine_dir, options.engines_keep)
        self.record = None
        self._requests = queue.Queue()
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._serve, name="tensorrt", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join(5)
            raise self._error

    # --- the CUDA thread ---------------------------------------------------------------------------
    def _serve(self):
        cuda = self.cuda
        context = None
        try:
            try:
                cuda.init()
                device = cuda.Device(self.device_index)
                context = device.retain_primary_context()
            except Exception as exc:  # pycuda.driver.Error: no GPU, no driver, no permission on /dev/nv*
                raise BackendUnavailable("no usable CUDA GPU (%s); check the NVIDIA driver and that the service "
                                         "user is in the video group" % str(exc).splitlines()[0])
            context.push()
            try:
                self._setup(device)
            except BaseException:
                self._teardown()
                raise
        except BaseException as exc:
            self._error = exc if isinstance(exc, (BackendUnavailable, ModelError)) else \
                BackendUnavailable("TensorRT engine for %s: %s" % (self.path, exc))
            if context is not None:
                context.pop()
                context.detach()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        finally:
            self._teardown()
            context.pop()
            context.detach()

    def _loop(self):
        while True:
            item = self._requests.get()
            if item is None:
                return
            feeds, names, done = item
            try:
                done.result = self._execute(feeds, names)
            except Exception as exc:
                done.error = exc
            done.set()

    def _setup(self, device):
        trt = self.trt
        self.gpu_name = device.name()
        self.compute_capability = "%d.%d" % device.compute_capability()
        self.device = detect()
        self.logger = _make_logger(trt)
        builder = trt.Builder(self.logger)  # raises (TypeError: nullptr) where CUDA cannot start
        self.plan = BuildPlan(trt, self.path, self.options, getattr(builder, "num_DLA_cores", 0) or 0)
        for note in self.plan.notes:
            log.warning("backend tensorrt: %s", note)
        parts = self.key_parts()
        self.runtime = trt.Runtime(self.logger)
        if self.plan.dla_core >= 0:  # a DLA engine deserializes only onto the core it was built for
            self.runtime.DLA_core = self.plan.dla_core
        try:
            # STATUS= while another process holds the cache's lock for its build, then while we build
            with progress.activity("loading TensorRT engine for %s" % os.path.basename(self.path)):
                self.engine, self.record = self.cache.get_or_build(parts, lambda: self._build(builder),
                                                                   self._deserialize)
        except engine_cache.EngineCacheError as exc:
            raise BackendUnavailable(str(exc))
        log.info("TensorRT %s engine for %s: %s (%s, batch %s, %s)", trt.__version__, os.path.basename(self.path),
                 "built in %.1f s" % self.record["build_seconds"] if self.record["built"] else "loaded from the cache",
                 self.plan.precision, "/".join(str(b) for b in self.plan.batch_profile),
                 "DLA core %d" % self.plan.dla_core if self.plan.dla_core >= 0 else "GPU")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable("TensorRT cannot create an execution context (out of GPU memory?)")
        self.stream = self.cuda.Stream()
        self._describe_io()
        self._allocate()

    def key_parts(self):
        device = self.device
        return {"model": os.path.splitext(os.path.basename(self.path))[0],
                "model_sha256": _sha256(self.plan.source_path), "tensorrt": self.trt.__version__,
                "gpu": self.gpu_name, "compute_capability": self.compute_capability,
                "jetson_module": device.module, "l4t": device.l4t, "precision": self.plan.precision,
                "batch_profile": list(self.plan.batch_profile), "dla_core": self.plan.dla_core,
                "workspace_mb": self.plan.workspace_mb, "layout": engine_cache.LAYOUT}

    def _device_parts(self):
        return {"tensorrt": self.trt.__version__, "gpu": self.gpu_name, "compute_capability": self.compute_capability,
                "l4t": self.device.l4t}

    def _deserialize(self, plan):
        engine = self.runtime.deserialize_cuda_engine(plan)
        if engine is None:  # another TensorRT version or GPU: TensorRT logged why
            raise engine_cache.EngineRejected("TensorRT %s could not deserialize it" % self.trt.__version__)
        return engine

    # --- build ------------------------------------------------------------------------------------
    def _build(self, builder):
        with progress.activity("building TensorRT engine for %s" % os.path.basename(self.path)):
            return self._build_now(builder)

    def _build_now(self, builder):
        trt, plan = self.trt, self.plan
        self.logger.warnings = []
        log.info("building a TensorRT %s engine for %s (%s, batch %s, workspace %d MB%s); this takes minutes on "
                 "a Jetson", trt.__version__, plan.source_path, plan.precision,
                 "/".join(str(b) for b in plan.batch_profile), plan.workspace_mb,
                 ", DLA core %d" % plan.dla_core if plan.dla_core >= 0 else "")
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, self.logger)
        with open(plan.source_path, "rb") as f:
            ok = parser.parse(f.read())
        if not ok:
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no error given"
            raise BackendUnavailable("TensorRT %s cannot parse %s: %s" % (trt.__version__, plan.source_path, errors))
        config = builder.create_builder_config()
        set_workspace(trt, config, plan.workspace_mb << 20)
        if plan.fp16_flag:
            if getattr(builder, "platform_has_fast_fp16", True) is False:
                log.warning("backend tensorrt: this GPU has no fast FP16; TensorRT may pick FP32 kernels")
            config.set_flag(trt.BuilderFlag.FP16)
        if plan.dla_core >= 0:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = plan.dla_core
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        timing = config.create_timing_cache(self.cache.read_timing_cache(self._device_parts()))
        config.set_timing_cache(timing, False)  # the second argument is mandatory on 8.2 and 11
        config.add_optimization_profile(self._profile(builder, network))
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailable("TensorRT %s could not build an engine for %s (see the TensorRT errors above; "
                                     "out of memory? try a smaller workspace_mb or max_batch)"
                                     % (trt.__version__, plan.source_path))
        self.cache.write_timing_cache(self._device_parts(), bytes(config.get_timing_cache().serialize()))
        return bytes(serialized), list(self.logger.warnings)

    def _profile(self, builder, network):
        lo, opt, hi = self.plan.batch_profile
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = tuple(tensor.shape)
            if any(d < 0 for d in dims[1:]):
                raise ModelError("%s: input %s has shape %s; only the batch dimension may be dynamic for TensorRT"
                                 % (self.path, tensor.name, list(dims)))
            rest = dims[1:]
            if dims[0] >= 0:  # a fixed-batch export: its own batch only
                lo = opt = hi = dims[0]
            profile.set_shape(tensor.name, (lo,) + rest, (opt,) + rest, (hi,) + rest)
        return profile

    # --- I/O and buffers --------------------------------------------------------------------------
    def _describe_io(self):
        trt, engine = self.trt, self.engine
        self.tensor_api = has_tensor_api(engine)
        specs = []  # (name, is_input, shape, dtype, binding index)
        if self.tensor_api:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                specs.append((name, is_input, tuple(engine.get_tensor_shape(name)),
                              np.dtype(trt.nptype(engine.get_tensor_dtype(name))), i))
        else:
            for i in range(engine.num_bindings):
                specs.append((engine.get_binding_name(i), engine.binding_is_input(i), tuple(engine.get_binding_shape(i)),
                              np.dtype(trt.nptype(engine.get_binding_dtype(i))), i))
        self._io = specs
        hi = self.plan.batch_profile[2]
        fixed = [s[2][0] for s in specs if s[1] and s[2][0] >= 0]
        self._max_batch = fixed[0] if fixed else hi
        self.fixed_batch = bool(fixed) or self.plan.dla_core >= 0
        dyn = lambda shape: tuple(d if d >= 0 else None for d in shape)  # noqa: E731
        self.inputs = [TensorSpec(n, dyn(s), d.name) for n, i, s, d, _ in specs if i]
        self.outputs = [TensorSpec(n, dyn(s), d.name) for n, i, s, d, _ in specs if not i]

    @property
    def max_batch(self):
        return self._max_batch

    def _allocate(self):
        """Page-locked host and device buffers for the max batch, once; addresses bound once on 8.5+."""
        cuda, ctx = self.cuda, self.context
        self._host, self._dev = {}, {}
        for name, is_input, shape, _, index in self._io:  # inputs at the max batch: outputs' shapes follow
            if is_input:
                full = (self._max_batch,) + tuple(shape[1:])
                ctx.set_input_shape(name, full) if self.tensor_api else ctx.set_binding_shape(index, full)
        for name, is_input, shape, dtype, index in self._io:
            if is_input:
                full = (self._max_batch,) + tuple(shape[1:])
            else:
                full = tuple(ctx.get_tensor_shape(name) if self.tensor_api else ctx.get_binding_shape(index))
            if any(d < 0 for d in full):
                raise ModelError("%s: tensor %s has shape %s; only the batch dimension may be dynamic"
                                 % (self.path, name, list(shape)))
            self._host[name] = cuda.pagelocked_empty(int(np.prod(full)), dtype)
            self._dev[name] = cuda.mem_alloc(self._host[name].nbytes)
        if self.tensor_api:
            for name, _, _, _, _ in self._io:
                self.context.set_tensor_address(name, int(self._dev[name]))
        else:
            self._bindings = [int(self._dev[name]) for name, _, _, _, _ in self._io]

    def _execute(self, feeds, names):
        cuda, ctx, stream = self.cuda, self.context, self.stream
        batch = None
        for name, is_input, shape, dtype, index in self._io:
            if not is_input:
                continue
            array = np.ascontiguousarray(feeds[name], dtype)
            batch = array.shape[0]
            if batch > self._max_batch:
                raise ValueError("batch of %d is more than the engine's max %d" % (batch, self._max_batch))
            host = self._host[name][:array.size]
            host[:] = array.ravel()
            if self.tensor_api:
                ctx.set_input_shape(name, array.shape)
            else:
                ctx.set_binding_shape(index, array.shape)
            cuda.memcpy_htod_async(self._dev[name], host, stream)
        if self.tensor_api:
            ok = ctx.execute_async_v3(stream.handle)
        else:
            ok = ctx.execute_async_v2(self._bindings, stream.handle)
        if not ok:
            raise RuntimeError("TensorRT execute failed on a batch of %d" % batch)
        out = {}
        for name, is_input, shape, dtype, index in self._io:
            if is_input or name not in names:
                continue
            shape = tuple(ctx.get_tensor_shape(name) if self.tensor_api else ctx.get_binding_shape(index))
            host = self._host[name][:int(np.prod(shape))]
            cuda.memcpy_dtoh_async(host, self._dev[name], stream)
            out[name] = (host, shape)
        stream.synchronize()
        return [out[name][0].reshape(out[name][1]).copy() for name in names]

    def _teardown(self):
        """Everything CUDA goes while our context is current: device and page-locked buffers, the stream,
        and TensorRT's context, engine and runtime."""
        for dev in getattr(self, "_dev", {}).values():
            dev.free()
        self._dev, self._host = {}, {}
        for attr in ("stream", "context", "engine", "runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)

    # --- the caller's side ------------------------------------------------------------------------
    def run(self, feeds, output_names=None):
        names = list(output_names or [o.name for o in self.outputs])
        unknown = [n for n in names if n not in [o.name for o in self.outputs]]
        if unknown:
            raise ValueError("%s has no output %s" % (self.path, ", ".join(unknown)))
        if not self._thread.is_alive():
            raise RuntimeError("the TensorRT thread has stopped")
        n = None
        if self.fixed_batch:  # a static engine (DLA, a fixed-batch export) runs its whole batch: pad, then cut
            n = next(iter(feeds.values())).shape[0]
            feeds = {k: _pad(v, self._max_batch) for k, v in feeds.items()}
        done = threading.Event()
        done.result, done.error = None, None
        self._requests.put((feeds, names, done))
        done.wait()
        if done.error is not None:
            raise done.error
        return done.result if n is None else [out[:n] for out in done.result]

    def close(self):
        if self._thread.is_alive():
            self._requests.put(None)
            self._thread.join(10)
