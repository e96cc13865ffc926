"""The SSDLite detector: a flat Functional Keras model plus its anchors, targets, losses and postprocess.

`SSDLiteDetector` owns everything a training step, an evaluation and an export need:
- `model`: images in [-1, 1], shape [B, S, S, 3] -> [box_encodings [B, A, 4], class_logits [B, A, C+1]]
  (column 0 of the class logits is the background slot);
- `anchors`: [A, 4] normalised (ymin, xmin, ymax, xmax), in the order of the predictions;
- `preprocess`, `assign_targets`, `losses` and `postprocess`.
The Keras model is flat (builtin layers plus hard-swish and the SE gate), so tfmot can quantize it:
with `quantization="qat"` `model` is the fake-quantized copy and `float_model` the float one it was
made from. Float weights to start from (`float_checkpoint`) are restored before the wrapping,
because tfmot copies the weights when it quantizes; a checkpoint with another class count fits too
(its class-prediction convs start fresh, or keep the columns `init_class_slots` maps).
"""
from typing import Dict, Optional, Sequence, Union

import tensorflow as tf

from mobiledets_tf.arch import ArchSpec, load_arch
from mobiledets_tf.detection import anchors as anchor_lib
from mobiledets_tf.detection import losses as loss_lib
from mobiledets_tf.detection import postprocess as postprocess_lib
from mobiledets_tf.detection import targets as target_lib
from mobiledets_tf.keras import keras
from mobiledets_tf.layers import defaults
from mobiledets_tf.models.backbone import wire_backbone
from mobiledets_tf.models.fine_tuning import restore_initial_weights
from mobiledets_tf.models.ssdlite_head import wire_box_predictor, wire_extra_layers
from mobiledets_tf.quantization.qat import quantize_model

DEFAULT_INPUT_SIZE = 320
DEFAULT_NUM_CLASSES = 90
QUANTIZATION_MODES = ("", "qat")


def build_ssdlite_model(arch: ArchSpec, num_classes: int, input_size: int,
                        depth_multiplier: float = 1.0, min_depth: int = 16,
                        batch_size: Optional[int] = None,
                        l2_weight: float = defaults.L2_WEIGHT) -> keras.Model:
    """The Functional SSDLite model of `arch` (see the module docstring for inputs and outputs);
    `l2_weight` is the TF1 L2 weight of the regularised kernels."""
    anchor_lib.feature_map_sizes_for_input(input_size)  # validates the input size
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    images = keras.Input((input_size, input_size, 3), batch_size=batch_size, name="image")
    with defaults.l2_weight(l2_weight):
        endpoints, _ = wire_backbone(arch, images, depth_multiplier)
        feature_maps = [endpoints["C4"], endpoints["C5"]]
        feature_maps += wire_extra_layers(endpoints["C5"], depth_multiplier, min_depth)
        box_encodings, class_logits = wire_box_predictor(
            feature_maps, anchor_lib.num_anchors_per_location(), num_classes)
    return keras.Model(images, [box_encodings, class_logits], name=f"ssdlite_{arch.name}")


class SSDLiteDetector:
    """An SSDLite detector over a backbone ArchSpec (a name from configs/architectures or a path)."""

    def __init__(self, arch: Union[str, ArchSpec], num_classes: int = DEFAULT_NUM_CLASSES,
                 input_size: int = DEFAULT_INPUT_SIZE, depth_multiplier: float = 1.0,
                 min_depth: int = 16, batch_size: Optional[int] = None, quantization: str = "",
                 float_checkpoint: Optional[str] = None, anchor_min_scale: float = 0.2,
                 anchor_max_scale: float = 0.95, l2_weight: float = defaults.L2_WEIGHT,
                 match_threshold: float = target_lib.MATCH_THRESHOLD,
                 init_class_slots: Optional[Sequence[Optional[int]]] = None,
                 qat_activation_form: str = "decomposed"):
        if quantization not in QUANTIZATION_MODES:
            raise ValueError(f"quantization must be one of {QUANTIZATION_MODES}, got {quantization!r}")
        self.arch = load_arch(arch)
        self.quantization = quantization
        self.num_classes = num_classes
        self.input_size = input_size
        self.depth_multiplier = depth_multiplier
        self.match_threshold = match_threshold
        self.feature_map_sizes = anchor_lib.feature_map_sizes_for_input(input_size)
        self.anchors = anchor_lib.generate_anchors(self.feature_map_sizes, min_scale=anchor_min_scale,
                                                   max_scale=anchor_max_scale)
        self.float_model = build_ssdlite_model(self.arch, num_classes, input_size, depth_multiplier,
                                               min_depth, batch_size, l2_weight)
        if float_checkpoint:
            restore_initial_weights(self.float_model, float_checkpoint,
                                    f"float {self.arch.name} detector", init_class_slots)
        self.model = (quantize_model(self.float_model, qat_activation_form) if quantization == "qat"
                      else self.float_model)
        num_predictions = self.model.outputs[0].shape[1]
        if num_predictions != len(self.anchors):
            raise AssertionError(f"{num_predictions} predictions but {len(self.anchors)} anchors")

    @classmethod
    def from_config(cls, model_config, batch_size: Optional[int] = None,
                    float_checkpoint: Optional[str] = None,
                    init_class_slots: Optional[Sequence[Optional[int]]] = None) -> "SSDLiteDetector":
        """The detector described by a `ModelConfig` (the `model` section of an experiment)."""
        m = model_config
        return cls(m.arch, num_classes=m.num_classes, input_size=m.input_size,
                   depth_multiplier=m.depth_multiplier, min_depth=m.min_depth, batch_size=batch_size,
                   quantization=m.quantization, float_checkpoint=float_checkpoint,
                   anchor_min_scale=m.anchor_min_scale, anchor_max_scale=m.anchor_max_scale,
                   l2_weight=m.l2_weight, match_threshold=m.match_threshold,
                   init_class_slots=init_class_slots, qat_activation_form=m.qat_activation_form)

    @staticmethod
    def preprocess(images) -> tf.Tensor:
        """Maps pixel values in [0, 255] to [-1, 1] (`x * 2/255 - 1`)."""
        return tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0

    def assign_targets(self, gt_boxes, gt_classes) -> Dict[str, tf.Tensor]:
        """Batched targets for padded groundtruth (class -1 marks padding rows)."""
        return target_lib.assign_targets(self.anchors, gt_boxes, gt_classes, self.num_classes,
                                         self.match_threshold)

    def losses(self, predictions, targets, normalizer=None) -> Dict[str, tf.Tensor]:
        box_encodings, class_logits = predictions
        return loss_lib.detection_losses(
            class_logits, box_encodings, targets["cls_targets"], targets["box_targets"],
            targets["positive_mask"], normalizer=normalizer)

    def postprocess(self, predictions, **nms_kwargs) -> Dict[str, tf.Tensor]:
        box_encodings, class_logits = predictions
        return postprocess_lib.postprocess(box_encodings, class_logits, self.anchors, **nms_kwargs)

    def detect(self, images, **nms_kwargs) -> Dict[str, tf.Tensor]:
        """Images with pixels in [0, 255] (already resized) -> postprocessed detections."""
        return self.postprocess(self.model(self.preprocess(images), training=False), **nms_kwargs)

