"""The detector's training spec (configs/training/detect_*.yaml), checked against a JSON Schema: an unknown
key or a wrong value is an error naming the file and the key."""
from edge.training.spec import SpecError, load_yaml_spec  # noqa: F401 (SpecError: callers catch it here)

_NUM = {"type": "number"}
_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_PAIR = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 2, "maxItems": 2}
_SIZE = {"type": "array", "items": {"type": "integer", "minimum": 16, "multipleOf": 16}, "minItems": 2, "maxItems": 2}

DETECT_SPEC_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object", "additionalProperties": False,
    "required": ["model_config", "training_config", "dataset_config"],
    "properties": {
        "random_seed": {"type": "integer"},
        "model_name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "description": "Stem of the exported ONNX."},
        "output_dir": {"type": "string", "description": "Checkpoints, history.json (default runs/<model_name>)."},
        "model_config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "input_size": dict(_SIZE, description="[W, H] of the network input (multiples of 16); the frame "
                                                      "is stretched to it, as DeepStream does for LPDNet."),
                "channels": {"type": "array", "items": {"type": "integer", "minimum": 4}, "minItems": 4,
                             "maxItems": 4, "description": "Channels at stride 2, 4, 8, 16."},
                "blocks": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 4,
                           "maxItems": 4, "description": "Residual blocks per stage."},
                "dilations": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
                              "description": "Dilation of the stride-16 stage's blocks, cycled."},
            },
        },
        "training_config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "batch_size": {"type": "integer", "minimum": 1},
                "num_epochs": {"type": "integer", "minimum": 1,
                               "description": "Epochs over the train split; the learning-rate schedule spans them."},
                "crop_size": dict(_SIZE, description="[W, H] of the training crops, cut from the scene stretched "
                                                     "to input_size (fully convolutional: the same cells)."),
                "learning_rate": {
                    "type": "object", "additionalProperties": False,
                    "description": "TAO's soft_start_annealing_schedule over the run's steps.",
                    "properties": {"min_learning_rate": _NUM, "max_learning_rate": _NUM,
                                   "soft_start": _PROB, "annealing": _PROB},
                },
                "weight_decay": {"type": "number", "minimum": 0},
                "checkpoint_minutes": {"type": "number", "exclusiveMinimum": 0,
                                       "description": "Wall minutes between checkpoints (each validated)."},
                "time_budget_minutes": {"type": "number", "exclusiveMinimum": 0,
                                        "description": "Stop (checkpoint, validate) after this much wall time in "
                                                       "one invocation; --resume goes on."},
                "max_steps": {"type": "integer", "minimum": 1, "description": "Stop after this many steps in all."},
                "threads": {"type": "integer", "minimum": 1, "description": "torch CPU threads."},
                "workers": {"type": "integer", "minimum": 0, "description": "Data-loading processes (0: inline)."},
                "device": {"enum": ["auto", "cpu", "cuda"]},
            },
        },
        "loss_config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "coverage": {"enum": ["focal", "bce"]},
                "focal_gamma": {"type": "number", "minimum": 0},
                "focal_alpha": _PROB,
                "bbox_weight": {"type": "number", "minimum": 0, "description": "L1 on covered cells' bbox planes."},
                "iou_weight": {"type": "number", "minimum": 0,
                               "description": "1 - GIoU of covered cells' decoded boxes (0: none)."},
                "coverage_shrink": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                                    "description": "Positive cells: centre in the box shrunk to this share."},
            },
        },
        "eval_config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "batch_size": {"type": "integer", "minimum": 1},
                "coverage_threshold": dict(_PROB, description="Operating point for recall/precision (DeepStream's "
                                                              "pre-cluster-threshold)."),
                "ap_threshold": dict(_PROB, description="Decode threshold for the AP curve."),
                "nms_iou": _PROB,
                "iou": dict(_PROB, description="IoU for a match (0.5)."),
                "min_box_px": dict(_PAIR, description="[w, h] in input pixels: smaller plates are don't care "
                                                      "(neither misses nor false alarms), in training and eval."),
                "max_images": {"type": "integer", "minimum": 1, "description": "Validate on the first N only."},
            },
        },
        "augmentation_config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "zoom": dict(_PAIR, description="Scale range over the stretched frame (log-uniform)."),
                "aspect_jitter": {"type": "number", "minimum": 0, "maximum": 1},
                "flip_prob": _PROB, "plate_crop_prob": _PROB, "color_prob": _PROB, "blur_prob": _PROB,
                "noise_prob": _PROB, "jpeg_prob": _PROB,
                "synthetic_plate_width": dict(_PAIR, description="Pasted plates' width range in crop pixels."),
                "synthetic_max_plates": {"type": "integer", "minimum": 1},
            },
        },
        "dataset_config": {
            "type": "object", "additionalProperties": False, "required": ["path", "splits"],
            "properties": {
                "path": {"type": "string", "description": "Root holding <source>/{images,labels,manifest.tsv}."},
                "splits": {
                    "type": "object", "additionalProperties": False, "required": ["train", "val"],
                    "properties": {"train": {"type": "string"}, "val": {"type": "string"},
                                   "eval": {"type": "string"}},
                    "description": "Files of '<source>/<id>' ids (lpr-edge-train detect-split writes them).",
                },
                "max_train_scenes": {"type": "integer", "minimum": 1, "description": "Use the first N (tests)."},
                "synthetic_fraction": dict(_PROB, description="Share of each batch that is synthetic composites."),
                "synthetic_regions": {"type": "array", "items": {"enum": ["us", "ch"]}, "minItems": 1},
                "synthetic_pool": {"type": "integer", "minimum": 1,
                                   "description": "Synthetic plates rendered once and reused."},
            },
        },
    },
}


def load_detect_spec(path):
    return load_yaml_spec(path, DETECT_SPEC_SCHEMA)
