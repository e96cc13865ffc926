"""The TFLite SSD postprocess op (`TFLite_Detection_PostProcess`) as a TensorFlow composite.

TensorFlow has no such op. The TFLite converter recognises a `tf.function` annotated with
`experimental_implements` (a NameAttrList text proto naming the op and its attributes) and replaces
the whole function by the custom op, so the body here only has to exist. Model Garden builds the
same composite only inside a private helper bound to RetinaNet's multi-level outputs, hence this
module. The op decodes box encodings against center-size anchors with the box coder's scales, keeps
the top class of each anchor (fast NMS) or runs per-class NMS (regular NMS), and returns float32
boxes [1, N, 4] (ymin, xmin, ymax, xmax), classes [1, N] (0-based, background excluded), scores
[1, N] and num_detections [1].
"""
import dataclasses
from typing import Sequence, Tuple

import tensorflow as tf

from mobiledets_tf.export.flatbuffer_model import POSTPROCESS_OP

OP_NAME = POSTPROCESS_OP


@dataclasses.dataclass(frozen=True)
class NmsSettings:
    """Settings of the postprocess op (defaults are the Object Detection API's TFLite export)."""
    max_detections: int = 100
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    use_regular_nms: bool = False
    detections_per_class: int = 100      # regular NMS only
    max_classes_per_detection: int = 1

    def __post_init__(self):
        if self.max_detections < 1 or self.detections_per_class < 1 or self.max_classes_per_detection < 1:
            raise ValueError(f"max_detections, detections_per_class and max_classes_per_detection "
                             f"must be >= 1: {self}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not 0.0 <= self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")


def implements_signature(num_classes: int, nms: NmsSettings, scales: Sequence[float]) -> str:
    """The NameAttrList text proto that the converter turns into the custom op."""
    y_scale, x_scale, h_scale, w_scale = scales
    attrs = [
        ("max_detections", f"i: {nms.max_detections}"),
        ("max_classes_per_detection", f"i: {nms.max_classes_per_detection}"),
        ("detections_per_class", f"i: {nms.detections_per_class}"),
        ("use_regular_nms", f"b: {str(nms.use_regular_nms).lower()}"),
        ("nms_score_threshold", f"f: {nms.score_threshold!r}"),
        ("nms_iou_threshold", f"f: {nms.iou_threshold!r}"),
        ("y_scale", f"f: {float(y_scale)!r}"),
        ("x_scale", f"f: {float(x_scale)!r}"),
        ("h_scale", f"f: {float(h_scale)!r}"),
        ("w_scale", f"f: {float(w_scale)!r}"),
        ("num_classes", f"i: {num_classes}"),
    ]
    return " ".join([f'name: "{OP_NAME}"'] + [f'attr {{ key: "{k}" value {{ {v} }} }}' for k, v in attrs])


def detection_postprocess(box_encodings: tf.Tensor, class_scores: tf.Tensor, anchors_center_size,
                          num_classes: int, nms: NmsSettings, scales: Sequence[float]
                          ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(boxes, classes, scores, num_detections) of the TFLite op; only meaningful once converted.

    `box_encodings` [1, A, 4], `class_scores` [1, A, num_classes + 1] after the sigmoid (column 0 is
    the background), `anchors_center_size` [A, 4] (ycenter, xcenter, h, w), a constant.
    """
    n = nms.max_detections

    @tf.function(experimental_implements=implements_signature(num_classes, nms, scales))
    def postprocess_op(boxes, scores, anchors):  # noqa: ARG001 (replaced by the converter)
        del boxes, scores, anchors
        return (tf.zeros([1, n, 4], tf.float32, name="boxes"), tf.zeros([1, n], tf.float32, name="classes"),
                tf.zeros([1, n], tf.float32, name="scores"), tf.zeros([1], tf.float32, name="num_detections"))

    return postprocess_op(box_encodings, class_scores, tf.constant(anchors_center_size, tf.float32))
