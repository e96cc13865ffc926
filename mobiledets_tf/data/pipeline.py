"""tf.data input pipelines for training and evaluation, from TF Object Detection API TFRecords.

Training: read shards (interleaved, shuffled with a seed) -> decode (Model Garden's
`TfExampleDecoder`) -> drop crowd boxes -> SSD random crop -> random horizontal flip -> resize to the
input size -> map pixels to [-1, 1] -> assign targets to anchors. Every random choice is stateless and
seeded by (seed, element index), so a seeded pipeline is deterministic while still running in
parallel. Under tf.distribute each input pipeline reads its own shard of the files and yields
per-replica batches.

Evaluation: decode -> resize -> uint8 images plus padded groundtruth in original-image terms, so the
same batches feed Keras and TFLite models.
"""
from typing import Dict, Optional

import tensorflow as tf
from official.vision.dataloaders import tf_example_decoder

from mobiledets_tf import fileio
from mobiledets_tf.data.ssd_crop import ssd_random_crop
from mobiledets_tf.detection import targets as target_lib

AUTOTUNE = tf.data.AUTOTUNE


def _files(pattern: str, shuffle: bool, seed: int) -> tf.data.Dataset:
    if not pattern:
        raise FileNotFoundError("no TFRecord pattern given: set data.train_pattern (training, int8 "
                                "calibration) or data.val_pattern (evaluation)")
    matched = fileio.glob(pattern)
    if not matched:
        raise FileNotFoundError(f"no TFRecord files match {pattern!r}")
    files = tf.data.Dataset.from_tensor_slices(sorted(matched))
    return files.shuffle(len(matched), seed=seed, reshuffle_each_iteration=True) if shuffle else files


def _records(pattern: str, shuffle: bool, seed: int,
             input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
    files = _files(pattern, shuffle, seed)
    if input_context and input_context.num_input_pipelines > 1:
        files = files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return files.interleave(tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=AUTOTUNE,
                            deterministic=True)


def _decode(serialized) -> Dict[str, tf.Tensor]:
    return tf_example_decoder.TfExampleDecoder(regenerate_source_id=False).decode(serialized)


def _pad(tensor, length: int, value):
    tensor = tensor[:length]
    padding = [[0, length - tf.shape(tensor)[0]]] + [[0, 0]] * (len(tensor.shape) - 1)
    padded = tf.pad(tensor, padding, constant_values=value)
    return tf.ensure_shape(padded, [length] + tensor.shape[1:].as_list())


def resize(image, input_size: int) -> tf.Tensor:
    """Fixed-shape bilinear resize (aspect ratio not kept), float32 in [0, 255].

    As the SSDLite configs' `fixed_shape_resizer` resizes (TF1 `resize_images`, no half-pixel
    centres): TF2's `tf.image.resize` samples half a pixel elsewhere, and a zoo model sees the
    difference in its outputs.
    """
    return tf.compat.v1.image.resize_images(tf.cast(image, tf.float32), [input_size, input_size],
                                            method=tf.image.ResizeMethod.BILINEAR,
                                            align_corners=False)


def augment_and_resize(example: Dict[str, tf.Tensor], input_size: int, seed, ssd_crop: bool,
                       flip: bool):
    """Returns (image float [S, S, 3] in [0, 255], boxes [N, 4], class indices [N]) for training."""
    not_crowd = tf.logical_not(tf.cast(example["groundtruth_is_crowd"], tf.bool))
    boxes = tf.boolean_mask(example["groundtruth_boxes"], not_crowd)
    classes = tf.cast(tf.boolean_mask(example["groundtruth_classes"], not_crowd), tf.int32) - 1
    image = example["image"]
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    if ssd_crop:
        image, boxes, classes = ssd_random_crop(image, boxes, classes, crop_seed)
    if flip:
        do_flip = tf.random.stateless_uniform([], flip_seed) < 0.5
        image = tf.cond(do_flip, lambda: tf.image.flip_left_right(image), lambda: image)
        flipped = tf.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2], 1.0 - boxes[:, 1]], axis=1)
        boxes = tf.where(do_flip, flipped, boxes)
    return resize(image, input_size), boxes, classes


def train_dataset(pattern: str, anchors, num_classes: int, input_size: int, batch_size: int,
                  seed: int = 0, max_boxes: int = 100, ssd_crop: bool = True, flip: bool = True,
                  shuffle_buffer: int = 1000, cache: bool = False,
                  match_threshold: float = target_lib.MATCH_THRESHOLD,
                  input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
    """Endless batches of (images [B, S, S, 3] in [-1, 1], targets dict) for `batch_size` images.

    With an `input_context`, `batch_size` is the per-replica batch of that pipeline.
    """
    examples = _records(pattern, shuffle=True, seed=seed, input_context=input_context).map(
        _decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    if cache:  # decoded images in memory: decoding is then paid once, not every epoch
        examples = examples.cache()
    examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    anchors = tf.constant(anchors, tf.float32)

    def prepare(index, example):
        element_seed = tf.stack([tf.cast(seed * 1000 + pipeline_id, tf.int64), index])
        image, boxes, classes = augment_and_resize(example, input_size, element_seed, ssd_crop, flip)
        boxes, classes = _pad(boxes, max_boxes, 0.0), _pad(classes, max_boxes, -1)
        targets = target_lib.assign_targets_single(anchors, boxes, classes, num_classes, match_threshold)
        return image * (2.0 / 255.0) - 1.0, targets

    dataset = examples.enumerate().map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def eval_dataset(pattern: str, input_size: int, batch_size: int, max_boxes: int = 100,
                 max_images: Optional[int] = None) -> tf.data.Dataset:
    """One pass of (images uint8 [B, S, S, 3], groundtruth dict) in file order.

    Groundtruth: `source_id` [B] string, `height`, `width` [B] (original pixels), `groundtruth_boxes`
    [B, max_boxes, 4] normalised yxyx, `groundtruth_classes` [B, max_boxes] category ids (-1 pads),
    `groundtruth_is_crowd`, `groundtruth_area` [B, max_boxes].
    """
    records = _records(pattern, shuffle=False, seed=0, input_context=None)
    if max_images:
        records = records.take(max_images)

    def prepare(serialized):
        example = _decode(serialized)
        image = tf.cast(tf.round(tf.clip_by_value(resize(example["image"], input_size), 0, 255)), tf.uint8)
        groundtruth = {
            "source_id": example["source_id"],
            "height": tf.cast(example["height"], tf.int32),
            "width": tf.cast(example["width"], tf.int32),
            "groundtruth_boxes": _pad(example["groundtruth_boxes"], max_boxes, 0.0),
            "groundtruth_classes": _pad(tf.cast(example["groundtruth_classes"], tf.int32), max_boxes, -1),
            "groundtruth_is_crowd": _pad(tf.cast(example["groundtruth_is_crowd"], tf.int32), max_boxes, 0),
            "groundtruth_area": _pad(tf.cast(example["groundtruth_area"], tf.float32), max_boxes, 0.0),
        }
        return image, groundtruth

    return records.map(prepare, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE)
