"""SSDLite training losses: sigmoid focal classification loss and smooth L1 localization loss.

As in the TF1 Object Detection API MobileDets configs: focal loss (alpha 0.75, gamma 2.0) summed
over all anchors and all num_classes + 1 columns, smooth L1 (Huber, delta 1.0) summed over the
positive anchors and divided by the code size 4 (`normalize_loc_loss_by_codesize`), both divided
by the number of positive anchors (at least 1) and added with weights 1:1.

The per-element losses come from `official.vision.losses.focal_loss.FocalLoss` and
`tf.compat.v1.losses.huber_loss` (the op the TF1 API uses); only the reductions live here.
"""
from typing import Dict, Optional

import tensorflow as tf
from official.vision.losses import focal_loss

BOX_CODE_SIZE = 4


def _check_loss_args(alpha: float, gamma: float, huber_delta: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if gamma < 0.0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if huber_delta <= 0.0:
        raise ValueError(f"huber_delta must be > 0, got {huber_delta}")


def num_positives(positive_mask: tf.Tensor) -> tf.Tensor:
    """Total number of positive anchors in the batch, float32 scalar."""
    return tf.reduce_sum(tf.cast(positive_mask, tf.float32))


def default_normalizer(positive_mask: tf.Tensor) -> tf.Tensor:
    """max(1, number of positive anchors in the batch)."""
    return tf.maximum(num_positives(positive_mask), 1.0)


def classification_loss_sum(
    cls_logits: tf.Tensor, cls_targets: tf.Tensor, alpha: float = 0.75, gamma: float = 2.0
) -> tf.Tensor:
    """Sigmoid focal loss summed over all images, anchors and columns (unnormalized)."""
    per_element = focal_loss.FocalLoss(alpha=alpha, gamma=gamma, reduction="none")(
        tf.cast(cls_targets, tf.float32), tf.cast(cls_logits, tf.float32)
    )
    return tf.reduce_sum(per_element)


def localization_loss_sum(
    box_encodings: tf.Tensor,
    box_targets: tf.Tensor,
    positive_mask: tf.Tensor,
    huber_delta: float = 1.0,
) -> tf.Tensor:
    """Smooth L1 summed over the 4 coordinates of positive anchors, divided by the code size 4."""
    per_coordinate = tf.compat.v1.losses.huber_loss(
        labels=tf.cast(box_targets, tf.float32),
        predictions=tf.cast(box_encodings, tf.float32),
        delta=huber_delta,
        loss_collection=None,
        reduction=tf.compat.v1.losses.Reduction.NONE,
    )
    per_anchor = tf.reduce_sum(per_coordinate, axis=-1)
    return tf.reduce_sum(per_anchor * tf.cast(positive_mask, tf.float32)) / BOX_CODE_SIZE


def detection_losses(
    cls_logits: tf.Tensor,
    box_encodings: tf.Tensor,
    cls_targets: tf.Tensor,
    box_targets: tf.Tensor,
    positive_mask: tf.Tensor,
    alpha: float = 0.75,
    gamma: float = 2.0,
    huber_delta: float = 1.0,
    normalizer: Optional[tf.Tensor] = None,
) -> Dict[str, tf.Tensor]:
    """Scalar `classification`, `localization` and `total` losses for a batch.

    Args:
      cls_logits: [B, A, C + 1] logits (column 0 = background).
      box_encodings: [B, A, 4] predicted box encodings.
      cls_targets, box_targets, positive_mask: outputs of `targets.assign_targets`.
      alpha, gamma: focal loss parameters.
      huber_delta: smooth L1 transition point.
      normalizer: divisor for both losses; defaults to max(1, number of positives in the batch).
        Under tf.distribute pass the global (all-replica) count instead.
    """
    _check_loss_args(alpha, gamma, huber_delta)
    cls_logits = tf.convert_to_tensor(cls_logits, dtype=tf.float32)
    cls_targets = tf.convert_to_tensor(cls_targets, dtype=tf.float32)
    if not cls_logits.shape.is_compatible_with(cls_targets.shape):
        raise ValueError(
            f"cls_logits {cls_logits.shape} and cls_targets {cls_targets.shape} must have the same shape"
        )
    if normalizer is None:
        normalizer = default_normalizer(positive_mask)
    normalizer = tf.cast(normalizer, tf.float32)

    classification = classification_loss_sum(cls_logits, cls_targets, alpha, gamma) / normalizer
    localization = (
        localization_loss_sum(box_encodings, box_targets, positive_mask, huber_delta) / normalizer
    )
    return dict(
        classification=classification,
        localization=localization,
        total=classification + localization,
    )
