"""Inference backends behind one small interface (see base.Backend)."""


def create_backend(name, model_info, recognizer_config):
    if name == "onnxruntime":
        from edge.recognize.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_info, recognizer_config.providers, recognizer_config.threads)
    raise ValueError("unknown recognizer backend %r (known: onnxruntime)" % name)
