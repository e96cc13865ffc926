"""Faster R-CNN center-size box coder with the SSD scale factors (y, x, h, w) = (10, 10, 5, 5).

Encoding is a thin wrapper around `official.vision.ops.box_ops.encode_boxes`. Decoding is written
out here: Model Garden's `decode_boxes` caps the height and width terms at log(1000 / 16) (a
Faster R-CNN guard), while the TF1 Object Detection API's `FasterRcnnBoxCoder` and TFLite's SSD
postprocess op do not, so its boxes of large encodings differ from theirs (the parity test checks
this). Boxes and anchors are (ymin, xmin, ymax, xmax); anchors [A, 4] broadcast over any leading
batch dimensions of boxes/encodings [..., A, 4].

`anchors_to_center_size` is a few lines of numpy rather than `box_ops.yxyx_to_cycxhw` because its
result is needed as a numpy constant (the anchors input of the TFLite detection postprocess op),
also outside eager mode.
"""
from typing import Sequence

import numpy as np
import tensorflow as tf
from official.vision.ops import box_ops

BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)


def _check_scales(scales: Sequence[float]) -> None:
    if len(scales) != 4 or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be 4 positive numbers (y, x, h, w), got {scales!r}")


def _check_last_dim(name: str, tensor: tf.Tensor) -> None:
    if tensor.shape.rank is not None and tensor.shape[-1] != 4:
        raise ValueError(f"{name} must have last dimension 4, got shape {tensor.shape}")


def encode(
    boxes: tf.Tensor,
    anchors: tf.Tensor,
    scales: Sequence[float] = BOX_CODER_SCALES,
) -> tf.Tensor:
    """Encodes boxes [..., 4] relative to anchors (broadcastable, e.g. [A, 4]) as (ty, tx, th, tw)."""
    _check_scales(scales)
    boxes = tf.convert_to_tensor(boxes, dtype=tf.float32)
    anchors = tf.convert_to_tensor(anchors, dtype=tf.float32)
    _check_last_dim("boxes", boxes)
    _check_last_dim("anchors", anchors)
    return box_ops.encode_boxes(boxes, anchors, weights=list(scales))


def decode(
    encodings: tf.Tensor,
    anchors: tf.Tensor,
    scales: Sequence[float] = BOX_CODER_SCALES,
) -> tf.Tensor:
    """Decodes (ty, tx, th, tw) encodings [..., 4] back to (ymin, xmin, ymax, xmax) boxes."""
    _check_scales(scales)
    encodings = tf.convert_to_tensor(encodings, dtype=tf.float32)
    anchors = tf.convert_to_tensor(anchors, dtype=tf.float32)
    _check_last_dim("encodings", encodings)
    _check_last_dim("anchors", anchors)
    ty, tx, th, tw = tf.unstack(encodings / tf.constant(scales, tf.float32), axis=-1)
    ymin, xmin, ymax, xmax = tf.unstack(anchors, axis=-1)
    anchor_h, anchor_w = ymax - ymin, xmax - xmin
    center_y, center_x = ty * anchor_h + ymin + 0.5 * anchor_h, tx * anchor_w + xmin + 0.5 * anchor_w
    half_h, half_w = 0.5 * tf.exp(th) * anchor_h, 0.5 * tf.exp(tw) * anchor_w
    return tf.stack([center_y - half_h, center_x - half_w, center_y + half_h, center_x + half_w], axis=-1)


def anchors_to_center_size(anchors: np.ndarray) -> np.ndarray:
    """Converts anchors [A, 4] (ymin, xmin, ymax, xmax) to float32 [A, 4] (ycenter, xcenter, h, w)."""
    anchors = np.asarray(anchors, dtype=np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f"anchors must have shape [A, 4], got {anchors.shape}")
    ymin, xmin, ymax, xmax = (anchors[:, i] for i in range(4))
    return np.stack(
        [(ymin + ymax) / 2.0, (xmin + xmax) / 2.0, ymax - ymin, xmax - xmin], axis=1
    ).astype(np.float32)
