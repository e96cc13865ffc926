"""Imports a TF1 Object Detection API checkpoint (a model zoo SSDLite) into an `SSDLiteDetector`.

Every Keras weight is looked up by the explicit TF1 name `variable_names.weight_names` generates from
the ArchSpec; nothing is matched by order or shape. The import stops, naming the variables, when a
model variable is missing or has the wrong shape, or when the checkpoint holds feature-extractor or
box-predictor variables the model does not use (a checkpoint of another architecture or
configuration). What a zoo training checkpoint carries besides the model (global_step, optimizer
slots, moving-average shadows, the quantization ranges of a uint8 checkpoint) is listed and ignored;
a uint8 checkpoint thus imports as float weights, for the package's own QAT to fine-tune.

`save_imported` writes a directory that works wherever a model_dir does: `ckpt-0` (the Keras
detector's weights), `config.yaml` (the config the checkpoint implies: architecture, input size,
classes, the COCO label map), `label_map.pbtxt`, `arch.json` and `import_report.json`.
"""
import dataclasses
import json
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from mobiledets_tf import fileio
from mobiledets_tf.config import ExperimentConfig, save_config
from mobiledets_tf.data.label_map import LabelMap, write_label_map
from mobiledets_tf.detection.anchors import num_anchors_per_location
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.tf1_zoo.coco_labels import coco_label_map
from mobiledets_tf.tf1_zoo.variable_names import (WeightName, arch_of_variables, tf1_extractor,
                                                  weight_names)

# (reason, pattern) of the variables a training checkpoint holds besides the model.
NON_MODEL_VARIABLES: Tuple[Tuple[str, "re.Pattern"], ...] = (
    ("training step", re.compile(r"^global_step$")),
    ("optimizer slot", re.compile(r"/(Momentum|RMSProp|RMSProp_1|Adam|Adam_1)$")),
    ("optimizer state", re.compile(r"^beta[12]_power(_\d+)?$")),
    ("moving-average shadow", re.compile(r"/ExponentialMovingAverage$")),
    ("quantization range", re.compile(r"(^|/)[^/]*quant[^/]*/(min|max)$")),
)
MODEL_SCOPES = ("FeatureExtractor/", "BoxPredictor")
CLASS_BIASES = "BoxPredictor_0/ClassPredictor/biases"
CHECKPOINT_NAME = "ckpt"
REPORT_FILE = "import_report.json"


class TF1ImportError(ValueError):
    """A TF1 checkpoint that does not fit the detector; the message names the variables."""


@dataclasses.dataclass
class ImportReport:
    tf1_checkpoint: str
    arch: str
    input_size: int
    num_classes: int
    mapping: List[Tuple[str, str]]          # (Keras weight, TF1 variable), in the model's order
    ignored: Dict[str, str]                 # TF1 variable -> why it was not imported

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def resolve_tf1_checkpoint(path: str) -> str:
    """A checkpoint prefix from a prefix (`.../model.ckpt-400000`) or a folder holding one."""
    if fileio.exists(f"{path}.index"):   # first: ram:// counts any prefix of a file name as a folder
        return path
    prefix = tf.train.latest_checkpoint(path) if fileio.isdir(path) else path
    if not prefix:   # a folder without a `checkpoint` state file: its only .index file
        indexes = fileio.glob(os.path.join(path, "*.index"))
        if len(indexes) != 1:
            raise TF1ImportError(f"{path}: expected one TF1 checkpoint (model.ckpt-N.index) in the "
                                 f"folder, found {len(indexes)}; give the checkpoint prefix")
        prefix = indexes[0][: -len(".index")]
    if not fileio.exists(f"{prefix}.index"):
        raise TF1ImportError(f"{path}: no TF1 checkpoint found (expected {prefix}.index)")
    return prefix


def classify_unused(names) -> Tuple[Dict[str, str], List[str]]:
    """Splits checkpoint variables the model does not use into (ignored: name -> reason, model-like
    variables that should have been used)."""
    ignored, unexpected = {}, []
    for name in sorted(names):
        reason = next((r for r, pattern in NON_MODEL_VARIABLES if pattern.search(name)), None)
        if reason:
            ignored[name] = reason
        elif name.startswith(MODEL_SCOPES):
            unexpected.append(name)
        else:
            ignored[name] = "not a variable of the SSDLite model"
    return ignored, unexpected


def num_classes_of(shapes: Dict[str, List[int]]) -> int:
    if CLASS_BIASES not in shapes:
        raise TF1ImportError(f"the checkpoint has no {CLASS_BIASES}: not an SSD box predictor")
    slots, anchors = shapes[CLASS_BIASES][0], num_anchors_per_location()[0]
    if slots % anchors:
        raise TF1ImportError(f"{CLASS_BIASES} has {slots} values, not a multiple of {anchors} anchors")
    return slots // anchors - 1   # the class slots include the background


def _list(names, limit: int = 20) -> str:
    names = list(names)
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return "; ".join(names[:limit]) + more


def import_tf1_checkpoint(tf1_checkpoint: str, arch: Optional[str] = None,
                          input_size: Optional[int] = None) -> Tuple[SSDLiteDetector, ImportReport]:
    """The float detector holding the TF1 checkpoint's weights, and what was used and ignored.

    `arch` defaults to the architecture the feature-extractor scope names, `input_size` to the zoo
    model's (320 for MobileDets, 300 for MobileNetV2); the class count comes from the class predictor.
    """
    prefix = resolve_tf1_checkpoint(tf1_checkpoint)
    try:
        reader = tf.compat.v1.train.NewCheckpointReader(prefix)   # a prefix: no folder lookup
    except (tf.errors.OpError, ValueError) as e:
        raise TF1ImportError(f"{prefix}: cannot read the checkpoint: {e}") from e
    shapes = reader.get_variable_to_shape_map()
    arch = arch or arch_of_variables(shapes)
    input_size = input_size or tf1_extractor(arch).input_size
    num_classes = num_classes_of(shapes)
    detector = SSDLiteDetector(arch, num_classes=num_classes, input_size=input_size)
    names: List[WeightName] = weight_names(detector.float_model, detector.arch)

    missing = [n.tf1 for n in names if n.tf1 not in shapes]
    wrong = [f"{n.tf1} is {shapes[n.tf1]} in the checkpoint, {n.variable.shape.as_list()} in the "
             f"model ({n.keras})" for n in names
             if n.tf1 in shapes and list(shapes[n.tf1]) != n.variable.shape.as_list()]
    if missing:
        raise TF1ImportError(f"{prefix}: {len(missing)} variables of the {arch} model are not in the "
                             f"checkpoint: {_list(missing)}")
    if wrong:
        raise TF1ImportError(f"{prefix}: {len(wrong)} variables have the wrong shape: {_list(wrong)}")
    used = {n.tf1 for n in names}
    ignored, unexpected = classify_unused(set(shapes) - used)
    if unexpected:
        raise TF1ImportError(f"{prefix}: {len(unexpected)} model variables of the checkpoint have no "
                             f"place in the {arch} model (another architecture or configuration?): "
                             f"{_list(unexpected)}")
    for name in names:
        name.variable.assign(reader.get_tensor(name.tf1).astype(np.float32))
    report = ImportReport(prefix, arch, input_size, num_classes,
                          [(n.keras, n.tf1) for n in names], ignored)
    return detector, report


def implied_config(report: ImportReport, label_map_path: str) -> ExperimentConfig:
    """The experiment config of an imported model (COCO TFRecords to be set by the user)."""
    config = ExperimentConfig()
    config.model.arch = report.arch
    config.model.input_size = report.input_size
    config.model.num_classes = report.num_classes
    config.data.dataset = "tfrecord"
    config.data.label_map = label_map_path
    return config


def save_imported(detector: SSDLiteDetector, report: ImportReport, output_dir: str,
                  label_map: Optional[LabelMap] = None) -> str:
    """Writes the imported model into `output_dir` (see the module docstring); returns the prefix."""
    fileio.makedirs(output_dir)
    label_map_path = os.path.join(fileio.absolute(output_dir), "label_map.pbtxt")
    write_label_map(label_map or coco_label_map(), label_map_path)
    save_config(implied_config(report, label_map_path), os.path.join(output_dir, "config.yaml"))
    detector.arch.save(os.path.join(output_dir, "arch.json"))
    fileio.write_text_atomically(os.path.join(output_dir, REPORT_FILE), report.to_json())
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=detector.float_model), output_dir,
                                         max_to_keep=1, checkpoint_name=CHECKPOINT_NAME)
    return manager.save(checkpoint_number=0)
