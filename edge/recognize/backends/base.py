"""The recognizer's backend interface (LPRNet's contract over an edge.infer session, see lprnet.py).

    backend.infer(batch)  float32 [N, C, 48, 96] in [0, 1]
        ->  (ids int [N, T], probs float32 [N, T], class_probs float32 [N, T, n_chars + 1] or None)

`ids` may be int32 (TensorRT) or int64 (ONNX ArgMax); decoding casts. `class_probs` comes from models that
have the optional `class_probs` output (lpr-edge's own exports; NVIDIA's files have only the first two) and
lets the recognizer hold a read to the plate format. `input_channels` is 3 for NVIDIA's
deployables (1 for grayscale variants). `max_batch` is what one call takes; None means unlimited.
"""
from edge.recognize.model import ModelError

INPUT_NAME = "image_input"
OUTPUT_IDS = "tf_op_layer_ArgMax"
OUTPUT_PROBS = "tf_op_layer_Max"
OUTPUT_CLASS_PROBS = "class_probs"


class Backend:
    name = "base"
    input_channels = 3
    max_batch = None
    providers = ()
    has_class_probs = False
    fallback_reason = None  # why this runs on another backend than the config asked for (edge.infer)

    def infer(self, batch):
        raise NotImplementedError

    def close(self):
        pass


def check_probe(model_path, ids, probs, n_chars, batch):
    """Outputs of a probe inference must be [N, T] with class ids no larger than the blank."""
    if ids.ndim != 2 or probs.ndim != 2 or ids.shape != probs.shape or ids.shape[0] != batch:
        raise ModelError("%s: outputs have shapes %s and %s; LPRNet gives [N, T] for both"
                         % (model_path, list(ids.shape), list(probs.shape)))
    top = int(ids.max()) if ids.size else 0
    if top > n_chars or int(ids.min()) < 0:
        raise ModelError("%s: class id %d is outside 0..%d: the characters list (%d characters) does not match "
                         "the model" % (model_path, top, n_chars, n_chars))


def check_class_probs(model_path, class_probs, ids, n_chars):
    """The optional per-class output must be [N, T, n_chars + 1] beside ids [N, T]: plate-format decoding
    reads class k as characters[k], so the list must match the model class for class."""
    if class_probs is None:
        return
    if class_probs.ndim != 3 or class_probs.shape[:2] != ids.shape or class_probs.shape[2] != n_chars + 1:
        raise ModelError("%s: output %s has shape %s; it must be [N, T, %d] (the %d characters of the list and "
                         "the blank) beside %s %s" % (model_path, OUTPUT_CLASS_PROBS, list(class_probs.shape),
                                                      n_chars + 1, n_chars, OUTPUT_IDS, list(ids.shape)))
