"""Float SSD postprocessing: decode boxes, sigmoid scores, per-class NMS.

Matches the TF1 Object Detection API SSDLite `post_processing` settings (sigmoid score converter,
score threshold 1e-8, IoU threshold 0.6, 100 detections per class and in total). The work is done
by `box_coding.decode` and `tf.image.combined_non_max_suppression`.
"""
from typing import Dict

import tensorflow as tf

from mobiledets_tf.detection import box_coding


def _check_postprocess_args(
    score_threshold: float, iou_threshold: float, max_detections_per_class: int, max_total_detections: int
) -> None:
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if score_threshold < 0.0:
        raise ValueError(f"score_threshold must be >= 0, got {score_threshold}")
    if max_detections_per_class <= 0 or max_total_detections <= 0:
        raise ValueError(
            "max_detections_per_class and max_total_detections must be positive, got "
            f"{max_detections_per_class} and {max_total_detections}"
        )


def postprocess(
    box_encodings: tf.Tensor,
    cls_logits: tf.Tensor,
    anchors: tf.Tensor,
    score_threshold: float = 1e-8,
    iou_threshold: float = 0.6,
    max_detections_per_class: int = 100,
    max_total_detections: int = 100,
) -> Dict[str, tf.Tensor]:
    """Detections from raw SSD head outputs.

    Args:
      box_encodings: [B, A, 4] box coder encodings.
      cls_logits: [B, A, C + 1] logits, column 0 = background (dropped).
      anchors: [A, 4] normalized (ymin, xmin, ymax, xmax).

    Returns:
      dict with `boxes` [B, M, 4] normalized (ymin, xmin, ymax, xmax) clipped to [0, 1],
      `classes` [B, M] float 0-based class index (background excluded), `scores` [B, M] and
      `num_detections` [B] int32, with M = max_total_detections (zero-padded).
    """
    _check_postprocess_args(score_threshold, iou_threshold, max_detections_per_class, max_total_detections)
    cls_logits = tf.convert_to_tensor(cls_logits, dtype=tf.float32)
    if cls_logits.shape.rank != 3 or (cls_logits.shape[-1] is not None and cls_logits.shape[-1] < 2):
        raise ValueError(f"cls_logits must be [B, A, C + 1] with C >= 1, got {cls_logits.shape}")

    boxes = box_coding.decode(box_encodings, anchors)  # [B, A, 4]
    scores = tf.sigmoid(cls_logits)[:, :, 1:]  # [B, A, C]
    nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
        boxes=boxes[:, :, tf.newaxis, :],  # one box per anchor shared by all classes
        scores=scores,
        max_output_size_per_class=max_detections_per_class,
        max_total_size=max_total_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=True,
    )
    return dict(
        boxes=nmsed_boxes,
        classes=nmsed_classes,
        scores=nmsed_scores,
        num_detections=tf.cast(valid, tf.int32),
    )
