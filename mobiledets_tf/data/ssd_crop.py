"""SSD random crop (the TF1 Object Detection API `ssd_random_crop` default), with stateless randomness.

Neither TensorFlow nor Model Garden ships this augmentation (Model Garden's crops are the
RetinaNet/Mask R-CNN scale jitters), so it is written here on top of
`tf.image.stateless_sample_distorted_bounding_box`. Per image, one of seven operations is drawn
uniformly; each keeps the whole image with probability 0.15, otherwise samples a crop with aspect
ratio in [0.5, 2] and area in [0.1, 1] of the image that covers at least `min_object_covered` of some
box, keeps the boxes whose intersection with the crop covers at least that fraction of the box, and
clips them to the crop.
"""
from typing import Tuple

import tensorflow as tf

MIN_OBJECT_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
ASPECT_RATIO_RANGE = (0.5, 2.0)
AREA_RANGE = (0.1, 1.0)
KEEP_ORIGINAL_PROBABILITY = 0.15


def _intersection_over_box_area(boxes, window):
    ymin = tf.maximum(boxes[:, 0], window[0])
    xmin = tf.maximum(boxes[:, 1], window[1])
    ymax = tf.minimum(boxes[:, 2], window[2])
    xmax = tf.minimum(boxes[:, 3], window[3])
    intersection = tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return intersection / tf.maximum(area, 1e-8)


def ssd_random_crop(image: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor, seed: tf.Tensor
                    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Crops `image` [H, W, 3] and its normalised yxyx `boxes` [N, 4] / `classes` [N].

    `seed` is a shape [2] int tensor; the same seed gives the same crop.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    choice = tf.random.stateless_uniform([], seeds[0], 0, len(MIN_OBJECT_COVERED), dtype=tf.int32)
    min_covered = tf.gather(tf.constant(MIN_OBJECT_COVERED, tf.float32), choice)
    keep_original = tf.random.stateless_uniform([], seeds[1]) < KEEP_ORIGINAL_PROBABILITY
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])

    begin, size, window = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=boxes[None], seed=seeds[2],
        min_object_covered=min_covered, aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE, max_attempts=100, use_image_if_no_bounding_boxes=True)
    window = tf.where(keep_original, tf.constant([0.0, 0.0, 1.0, 1.0]), window[0, 0])

    keep = _intersection_over_box_area(boxes, window) >= tf.maximum(min_covered, 1e-6)
    keep = tf.logical_or(keep, keep_original)
    boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
    height, width = window[2] - window[0], window[3] - window[1]
    boxes = (boxes - tf.stack([window[0], window[1], window[0], window[1]])) / tf.stack(
        [height, width, height, width])
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)

    cropped = tf.cond(keep_original, lambda: image, lambda: tf.slice(image, begin, size))
    return cropped, boxes, classes
