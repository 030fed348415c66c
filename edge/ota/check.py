"""What a device checks in an unpacked package before it may serve: the I/O contract through the real
backend (the one the config names; ONNX Runtime before a TensorRT build), the characters list against the
output width, the golden set through the real recognizer, and (where TensorRT is the backend) the engine
build, with its progress. The same code measures the
contract and the accuracy when a package is packed, so pack and install cannot disagree on what they mean."""
import logging
import os

import numpy as np

from edge.ota import OtaError
from edge.recognize.model import ModelError, load_model_info

log = logging.getLogger("edge.ota")


def default_recognizer_config():
    from edge.config.model import RecognizerConfig

    return RecognizerConfig()


def load_recognizer(model_path, characters_path, name=None, version=None, plate_format=None, recognizer_config=None):
    """A Recognizer on the configured backend, or OtaError('not_onnx' | 'contract') saying why not."""
    from edge.recognize.backends import create_backend
    from edge.recognize.recognizer import Recognizer, plate_format_for

    rc = recognizer_config or default_recognizer_config()
    if not os.path.isfile(model_path):
        raise OtaError("no_model", "%s: no such model file" % model_path)
    try:
        with open(model_path, "rb") as f:
            head = f.read(64)
        info = load_model_info(model_path, characters_path, name, version)
        fmt = plate_format_for(info, plate_format or "")
        backend = create_backend(rc.backend, info, rc)
    except ModelError as exc:
        text = str(exc)
        if "cannot load it" in text or not head:
            code = "not_onnx"
        elif "characters" in text and "class" in text:  # the backend's own check of the output width
            code = "characters_mismatch"
        else:
            code = "contract"
        raise OtaError(code, str(exc))
    except (IOError, OSError) as exc:
        raise OtaError("contract", "%s: %s" % (model_path, exc))
    return Recognizer(info, backend, fmt)


def measure_contract(recognizer):
    """The contract a manifest records, measured on the loaded model (the backend session's view of it)."""
    backend = recognizer.backend
    n_chars = len(recognizer.model.characters)
    session = getattr(backend, "session", None)
    contract = {"outputs": list(getattr(backend, "outputs", [])), "classes": n_chars + 1}
    if session is not None:  # an edge.infer Session: inputs/outputs as TensorSpec (name, shape, dtype)
        inp = session.inputs[0]
        contract["input"] = {"name": inp.name, "shape": [d if isinstance(d, int) else "N" for d in inp.shape],
                             "dtype": "float32"}
        widths = [o.shape[2] for o in session.outputs if o.name == "class_probs" and o.shape and len(o.shape) == 3]
        if widths and isinstance(widths[0], int):
            contract["classes"] = widths[0]
    else:
        contract["input"] = {"name": "image_input", "shape": ["N", backend.input_channels, 48, 96],
                             "dtype": "float32"}
    timesteps = getattr(backend, "timesteps", None)
    if timesteps:
        contract["timesteps"] = int(timesteps)
    return contract


def check_contract(recognizer, declared=None):
    """The loaded model must keep LPRNet's contract with this characters list, and match what the manifest
    declares (a package whose manifest describes another model than the one it holds is refused)."""
    measured = measure_contract(recognizer)
    n_chars = len(recognizer.model.characters)
    if measured["classes"] != n_chars + 1:
        raise OtaError("characters_mismatch", "the characters list has %d characters but the model's output has %d "
                                              "classes (%d expected: the characters and the CTC blank)"
                       % (n_chars, measured["classes"], n_chars + 1))
    # a probe on noise: every class id must name a character or the blank
    probe = np.random.default_rng(0).random((2, recognizer.backend.input_channels, 48, 96)).astype(np.float32)
    ids = recognizer.backend.infer(probe)[0]
    if ids.size and (int(ids.max()) > n_chars or int(ids.min()) < 0):
        raise OtaError("characters_mismatch", "the model gives class id %d but the characters list has only %d "
                                              "characters (the blank is %d)" % (int(ids.max()), n_chars, n_chars))
    if declared is not None:
        for key in ("input", "outputs", "classes", "timesteps"):
            if key in declared and key in measured and declared[key] != measured[key]:
                raise OtaError("contract", "the manifest declares %s %s but the model has %s"
                               % (key, declared[key], measured[key]))
    return measured


def run_golden(recognizer, golden_dir):
    """Full-plate accuracy on the golden set (count, accuracy)."""
    from edge.dataset import DatasetError
    from edge.evaluate import evaluate

    try:
        result = evaluate(recognizer, golden_dir, batch_size=32)
    except DatasetError as exc:
        raise OtaError("golden", "golden set: %s" % exc)
    if not result["count"]:
        raise OtaError("golden", "golden set: no crop could be read (%s)" % result["skipped_reasons"])
    return result["count"], result["plate_accuracy"]


def check_golden(recognizer, folder, golden, tolerance=0.0):
    """Run the package's golden set; OtaError('golden_failed') below the manifest's accuracy."""
    if golden is None:
        return None
    count, accuracy = run_golden(recognizer, os.path.join(folder, golden["path"]))
    if accuracy + 1e-9 < golden["plate_accuracy"] - tolerance:
        raise OtaError("golden_failed", "golden set: %.1f%% full-plate accuracy on %d crops; the package expects "
                                        "at least %.1f%%" % (100 * accuracy, count, 100 * golden["plate_accuracy"]))
    return accuracy


def tensorrt_usable(recognizer_config):
    """The config asks for TensorRT and it imports here. Where it does not, the daemon runs on ONNX
    Runtime (the fallback, one warning) and an update's candidate does the same: nothing to build."""
    if recognizer_config.backend != "tensorrt":
        return False
    from edge.infer.base import BackendUnavailable
    from edge.infer.tensorrt_backend import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailable:
        return False
    return True


def reference_config(recognizer_config):
    """The recognizer config a candidate is checked on before its TensorRT engine is built: ONNX Runtime
    (CUDA where this build has it, else CPU) with the same threads."""
    import onnxruntime as ort

    from edge.config.model import RecognizerConfig
    from edge.infer import FALLBACK_PROVIDERS

    available = ort.get_available_providers()  # only these: a check needs no warning about a missing one
    return RecognizerConfig(backend="onnxruntime", providers=[p for p in FALLBACK_PROVIDERS if p in available],
                            threads=recognizer_config.threads)


def build_engine(recognizer_config, model_path, progress=None, tick_s=0.5):
    """Build the candidate's TensorRT engine into the engine cache before the switch, so the swap never
    waits on a build and a model TensorRT cannot build is refused while the old one serves. Engines are
    built here from the ONNX, never taken from a package. Returns the TensorRT session (the engine
    loaded), or None where the backend is not TensorRT; OtaError('build_failed') naming why otherwise.

    The build runs in a thread of its own so that `progress(elapsed seconds)` is called every tick_s while
    it runs: the state topic says `building` with a count that goes up, not a silent wait of minutes."""
    if recognizer_config.backend != "tensorrt":
        return None
    import threading
    import time

    from edge.infer.tensorrt_backend import TensorRTSession
    from edge.recognize.backends import infer_options

    result = {}

    def build():
        try:
            # no fallback here: an engine that cannot be built must refuse the update, not serve on the CPU
            result["session"] = TensorRTSession(model_path, infer_options(recognizer_config))
        except Exception as exc:  # BackendUnavailable, ModelError, or whatever TensorRT raised
            result["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=build, name="ota-engine-build", daemon=True)
    thread.start()
    while True:
        thread.join(tick_s)
        if not thread.is_alive():
            break
        if progress is not None:
            progress(time.monotonic() - started)
    if "error" in result:
        raise OtaError("build_failed", "the TensorRT engine for %s could not be built: %s"
                       % (os.path.basename(model_path), result["error"]))
    return result["session"]


def recognizer_on(session, checked):
    """The checked candidate's model and plate format on another session (its built TensorRT engine)."""
    from edge.recognize.backends.lprnet import LprnetBackend
    from edge.recognize.recognizer import Recognizer

    try:
        backend = LprnetBackend(session, checked.model)
    except Exception as exc:
        session.close()
        raise OtaError("contract", "the TensorRT engine of %s: %s" % (checked.model.path, exc))
    return Recognizer(checked.model, backend, checked.plate_format)
