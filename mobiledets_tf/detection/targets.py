"""SSD target assignment: matches anchors to groundtruth boxes and builds training targets.

Follows the TF1 Object Detection API SSDLite setup: IoU similarity, argmax matching with
matched = unmatched threshold (by default 0.5: IoU >= 0.5 positive, < 0.5 negative, no ignore band),
a forced match for every groundtruth box, background encoded as zeros and box targets encoded
with the (10, 10, 5, 5) Faster R-CNN box coder.

The work is done by Model Garden ops (`IouSimilarity`, `BoxMatcher`, `TargetGather`); this module
only removes the padding rows first (as the TF1 API unpads groundtruth before assignment; with
padding present, `force_match_for_each_col` would force-match padding columns to some anchor)
and lays the results out as dense per-anchor targets.
"""
from typing import Dict

import tensorflow as tf
from official.vision.ops import box_matcher
from official.vision.ops import iou_similarity
from official.vision.ops import target_gather

from mobiledets_tf.detection import box_coding

MATCH_THRESHOLD = 0.5
_NEGATIVE, _POSITIVE = 0, 1


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def _check_match_threshold(match_threshold: float) -> None:
    if not 0.0 < match_threshold <= 1.0:
        raise ValueError(f"match_threshold must be in (0, 1], got {match_threshold!r}")


def _make_matcher(match_threshold: float) -> box_matcher.BoxMatcher:
    """IoU < threshold -> negative, IoU >= threshold -> positive; each groundtruth gets its best anchor."""
    return box_matcher.BoxMatcher(
        thresholds=[match_threshold],
        indicators=[_NEGATIVE, _POSITIVE],
        force_match_for_each_col=True,
    )


def _target_signature(num_anchors: int, num_classes: int) -> Dict[str, tf.TensorSpec]:
    return dict(
        cls_targets=tf.TensorSpec([num_anchors, num_classes + 1], tf.float32),
        box_targets=tf.TensorSpec([num_anchors, 4], tf.float32),
        positive_mask=tf.TensorSpec([num_anchors], tf.float32),
    )


def assign_targets_single(
    anchors: tf.Tensor,
    gt_boxes: tf.Tensor,
    gt_classes: tf.Tensor,
    num_classes: int,
    match_threshold: float = MATCH_THRESHOLD,
) -> Dict[str, tf.Tensor]:
    """Targets for one image.

    Args:
      anchors: [A, 4] normalized (ymin, xmin, ymax, xmax); A must be known statically.
      gt_boxes: [N, 4] normalized (ymin, xmin, ymax, xmax); N may be 0.
      gt_classes: [N] int class ids in [0, num_classes), -1 for padding rows (never matched).
      num_classes: number of object classes (without background).
      match_threshold: anchors with IoU >= this with a groundtruth box are its positives.

    Returns:
      dict with `cls_targets` [A, num_classes + 1] float one-hot (column 0 = background, always 0;
      class c at column c + 1; negatives all zeros), `box_targets` [A, 4] encoded boxes (zeros
      for negatives) and `positive_mask` [A] float 1/0.
    """
    _check_num_classes(num_classes)
    _check_match_threshold(match_threshold)
    anchors = tf.convert_to_tensor(anchors, dtype=tf.float32)
    if anchors.shape.rank != 2 or anchors.shape[-1] != 4 or anchors.shape[0] is None:
        raise ValueError(f"anchors must have static shape [A, 4], got {anchors.shape}")
    gt_boxes = tf.reshape(tf.cast(gt_boxes, tf.float32), [-1, 4])
    gt_classes = tf.reshape(tf.cast(gt_classes, tf.int32), [-1])

    check = tf.debugging.assert_less(
        gt_classes, num_classes, message=f"gt_classes must be < num_classes={num_classes}"
    )
    with tf.control_dependencies([check]):
        is_real = tf.greater_equal(gt_classes, 0)
    boxes = tf.boolean_mask(gt_boxes, is_real)
    classes = tf.boolean_mask(gt_classes, is_real)

    similarity = iou_similarity.IouSimilarity()(anchors, boxes)  # [A, N_real]
    match_indices, match_indicators = _make_matcher(match_threshold)(similarity)  # [A], [A]
    positive = tf.equal(match_indicators, _POSITIVE)
    negative = tf.logical_not(positive)

    gather = target_gather.TargetGather()
    anchor_classes = gather(classes, match_indices, negative, mask_val=-1)  # [A]
    matched_boxes = gather(
        boxes, match_indices, tf.tile(negative[:, None], [1, 4]), mask_val=0.0
    )  # [A, 4]

    encoded = box_coding.encode(matched_boxes, anchors)
    box_targets = tf.where(positive[:, None], encoded, tf.zeros_like(encoded))
    # one_hot of -1 is all zeros, so negatives get no class; column 0 (background) stays 0.
    class_one_hot = tf.one_hot(anchor_classes, num_classes, dtype=tf.float32)
    cls_targets = tf.pad(class_one_hot, [[0, 0], [1, 0]])
    return dict(
        cls_targets=cls_targets,
        box_targets=box_targets,
        positive_mask=tf.cast(positive, tf.float32),
    )


def assign_targets(
    anchors: tf.Tensor,
    gt_boxes: tf.Tensor,
    gt_classes: tf.Tensor,
    num_classes: int,
    match_threshold: float = MATCH_THRESHOLD,
) -> Dict[str, tf.Tensor]:
    """Batched `assign_targets_single`: gt_boxes [B, N, 4], gt_classes [B, N] (-1 = padding).

    Returns `cls_targets` [B, A, num_classes + 1], `box_targets` [B, A, 4], `positive_mask` [B, A].
    """
    _check_num_classes(num_classes)
    _check_match_threshold(match_threshold)
    anchors = tf.convert_to_tensor(anchors, dtype=tf.float32)
    if anchors.shape.rank != 2 or anchors.shape[-1] != 4 or anchors.shape[0] is None:
        raise ValueError(f"anchors must have static shape [A, 4], got {anchors.shape}")
    gt_boxes = tf.cast(gt_boxes, tf.float32)
    gt_classes = tf.cast(gt_classes, tf.int32)
    if gt_boxes.shape.rank != 3 or gt_classes.shape.rank != 2:
        raise ValueError(
            "assign_targets expects gt_boxes [B, N, 4] and gt_classes [B, N], got "
            f"{gt_boxes.shape} and {gt_classes.shape}; use assign_targets_single for one image"
        )
    return tf.map_fn(
        lambda image: assign_targets_single(anchors, image[0], image[1], num_classes, match_threshold),
        (gt_boxes, gt_classes),
        fn_output_signature=_target_signature(int(anchors.shape[0]), num_classes),
    )
