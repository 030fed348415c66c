"""Training spec: a YAML file mirroring NVIDIA TAO's LPRNet spec (lpr_config, training_config,
dataset_config, augmentation_config), checked against a JSON Schema so that an unknown key or a wrong
value is a clear error naming the file and the key."""
import io

import jsonschema
import yaml

from edge.config.yamlload import load_yaml_text

_NUM = {"type": "number"}
_DIR_SOURCE = {
    "type": "object", "additionalProperties": False,
    "description": "A folder in the TAO layout (image/ and label/), or the two folders named apart.",
    "properties": {
        "path": {"type": "string", "description": "Dataset folder holding image/ and label/."},
        "image_directory_path": {"type": "string", "description": "Folder of plate crops."},
        "label_directory_path": {"type": "string", "description": "Folder of one-line label files."},
        "normalize": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": "Character substitutions applied to labels, e.g. {O: '0'}."},
        "exclude_ids_from": {"type": "string",
                             "description": "A file of sample ids (one per line) to leave out, e.g. an eval split."},
        "only_ids_from": {"type": "string", "description": "A file of sample ids to use, all others left out."},
        "repeat": {"type": "integer", "minimum": 1, "description": "How many times per epoch to use each sample."},
    },
}
SPEC_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object", "additionalProperties": False,
    "required": ["lpr_config", "training_config", "dataset_config"],
    "properties": {
        "random_seed": {"type": "integer", "description": "Seed for data generation and weight init."},
        "model_name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$",
                       "description": "File stem of the exported ONNX, e.g. us_lprnet_baseline18."},
        "output_dir": {"type": "string", "description": "Where checkpoints and logs go."},
        "lpr_config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "hidden_units": {"type": "integer", "minimum": 8, "description": "LSTM size (NVIDIA: 512)."},
                "max_label_length": {"type": "integer", "minimum": 1, "maximum": 11,
                                     "description": "Longest label; 24 timesteps need 4*(2L+1) <= 96."},
                "arch": {"enum": ["baseline"], "description": "Backbone; only NVIDIA's baseline."},
                "nlayers": {"enum": [10, 18], "description": "baseline10 or baseline18."},
                "width": {"type": "number", "exclusiveMinimum": 0, "maximum": 1,
                          "description": "Channel multiplier over 64/128/256/300 (1.0 = NVIDIA's)."},
            },
        },
        "training_config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "batch_size_per_gpu": {"type": "integer", "minimum": 1, "description": "Batch size."},
                "num_epochs": {"type": "integer", "minimum": 1, "description": "Epochs over the training set."},
                "optimizer": {"enum": ["adam", "sgd"],
                              "description": "adam (fast on a CPU budget) or sgd with momentum 0.9 (TAO)."},
                "learning_rate": {
                    "type": "object", "additionalProperties": False,
                    "description": "TAO's soft_start_annealing_schedule.",
                    "properties": {
                        "min_learning_rate": _NUM, "max_learning_rate": _NUM,
                        "soft_start": {"type": "number", "minimum": 0, "maximum": 1},
                        "annealing": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                },
                "regularizer": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"type": {"enum": ["L2", "NO_REG"]}, "weight": _NUM},
                },
                "checkpoint_interval": {"type": "integer", "minimum": 1, "description": "Epochs between checkpoints."},
                "time_budget_minutes": {"type": "number", "exclusiveMinimum": 0,
                                        "description": "Stop (and save) when this much wall time has passed."},
                "threads": {"type": "integer", "minimum": 1, "description": "torch CPU threads."},
                "freeze_batchnorm": {"type": "boolean",
                                     "description": "Keep BatchNorm statistics fixed while fine-tuning (always so "
                                                    "when --init-from is an ONNX, whose BatchNorms are folded)."},
                "device": {"enum": ["auto", "cpu", "cuda"],
                           "description": "Where to train: auto (a CUDA GPU when torch sees one, else the CPU; "
                                          "default), cpu or cuda. The command line's --device overrides it."},
            },
        },
        "eval_config": {
            "type": "object", "additionalProperties": False,
            "properties": {"batch_size": {"type": "integer", "minimum": 1},
                           "validation_period_during_training": {"type": "integer", "minimum": 1}},
        },
        "augmentation_config": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "strength": {"type": "number", "minimum": 0, "maximum": 1.5,
                             "description": "Scales pose and margin ranges of the synthetic augmentation."},
                "clean_prob": {"type": "number", "minimum": 0, "maximum": 1,
                               "description": "Share of synthetic plates left un-augmented."},
                "real_augment_prob": {"type": "number", "minimum": 0, "maximum": 1,
                                      "description": "Share of real crops given light pose/blur/noise each epoch."},
                "real_augment_strength": {"type": "number", "minimum": 0, "maximum": 1.5,
                                          "description": "Pose and margin scale for real crops (default 0.3)."},
                "detector_cut_prob": {"type": "number", "minimum": 0, "maximum": 1,
                                      "description": "Share of real crops cut each epoch as a plate detector's box "
                                                     "would (jittered sides, margin, low resolution upscaled); "
                                                     "taken before real_augment_prob (the two add up to at most 1)."},
                "detector_cut_jitter": {"type": "number", "minimum": 0, "maximum": 0.25,
                                        "description": "Largest shift of each side of that box, as a share of the "
                                                       "plate's size (default 0.08)."},
                "detector_cut_margin": {"type": "number", "minimum": -0.2, "maximum": 0.5,
                                        "description": "Margin the box is grown by around the plate (default 0.05, "
                                                       "as detector.margin)."},
                "tight_crop_prob": {"type": "number", "minimum": 0, "maximum": 1,
                                    "description": "Share of crops cut at the plate's own box, as a detector "
                                                   "delivers them; the rest get a loose margin (default 0.4)."},
                "capture_size": {"type": "array", "items": {"type": "integer", "minimum": 8}, "minItems": 2,
                                 "maxItems": 2,
                                 "description": "[width, height] every augmented crop passes through before "
                                                "the 96x48 resize, to match a dataset stored small (CCPD 94x24)."},
                "side_text_prob": {"type": "number", "minimum": 0, "maximum": 1,
                                   "description": "US: share of plates with small stacked letters beside the "
                                                  "number (as MA, VT, WV plates), which the label leaves out "
                                                  "(default 0)."},
                "letter_i_weight": {"type": "number", "minimum": 0, "maximum": 1,
                                    "description": "US: how often I is drawn against other letters (1 = as "
                                                   "often; real US plates use it far less than 1; default 1)."},
                "province_bold": {"type": "number", "minimum": 0, "maximum": 0.2,
                                  "description": "CH: thicken the province glyph by up to this share of its "
                                                 "height, as the plate font's strokes are (default 0)."},
            },
        },
        "dataset_config": {
            "type": "object", "additionalProperties": False, "required": ["characters_list_file"],
            "properties": {
                "characters_list_file": {"type": "string", "description": "One character per line."},
                "synthetic": {
                    "type": "object", "additionalProperties": False, "required": ["region", "count"],
                    "properties": {"region": {"enum": ["us", "ch"]},
                                   "count": {"type": "integer", "minimum": 1}},
                },
                "data_sources": {"type": "array", "items": _DIR_SOURCE},
                "validation_synthetic": {"type": "integer", "minimum": 0,
                                         "description": "Synthetic validation plates (a seed apart from training)."},
                "validation_data_sources": {"type": "array", "items": _DIR_SOURCE},
            },
        },
    },
}


class SpecError(ValueError):
    pass


def load_yaml_spec(path, schema):
    """A training spec from YAML, checked against `schema`; SpecError naming the file and every problem."""
    try:
        with io.open(path, encoding="utf-8") as f:
            text = f.read()
    except (IOError, OSError) as exc:
        raise SpecError("%s: cannot read spec: %s" % (path, exc))
    try:
        spec = load_yaml_text(text, path)
    except (yaml.YAMLError, ValueError) as exc:
        raise SpecError("%s: %s" % (path, exc))
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(spec), key=lambda e: list(e.path))
    if errors:
        lines = []
        for err in errors:
            where = "/".join(str(p) for p in err.path) or "(top level)"
            lines.append("%s: %s: %s" % (path, where, err.message))
        raise SpecError("\n".join(lines))
    return spec


def load_spec(path):
    spec = load_yaml_spec(path, SPEC_SCHEMA)
    lpr = spec["lpr_config"]
    if 4 * (2 * lpr.get("max_label_length", 8) + 1) > 96:
        raise SpecError("%s: lpr_config/max_label_length: %d needs more than 24 timesteps (4*(2L+1) > 96)"
                        % (path, lpr["max_label_length"]))
    return spec
