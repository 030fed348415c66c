"""The recognizer's view of an inference backend: an edge.infer session (ONNX Runtime or TensorRT, shared
with other stages) wrapped in LPRNet's contract (lprnet.LprnetBackend)."""
from edge.infer import BACKENDS, InferOptions, create_session


def infer_options(recognizer_config):
    """InferOptions from a RecognizerConfig (keys it lacks keep InferOptions' defaults)."""
    options = InferOptions()
    for key in ("providers", "threads", "precision", "max_batch", "opt_batch", "workspace_mb", "dla_core",
                "engine_dir", "engines_keep"):
        if getattr(recognizer_config, key, None) is not None:
            setattr(options, key, getattr(recognizer_config, key))
    options.providers = list(options.providers)
    return options


def create_backend(name, model_info, recognizer_config):
    from edge.recognize.backends.lprnet import LprnetBackend

    if name not in BACKENDS:
        raise ValueError("unknown recognizer backend %r (known: %s)" % (name, ", ".join(BACKENDS)))
    session = create_session(name, model_info.path, infer_options(recognizer_config))
    try:
        return LprnetBackend(session, model_info)
    except Exception:
        session.close()
        raise
