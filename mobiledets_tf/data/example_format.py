"""Builds `tf.train.Example` records in the TF Object Detection API format.

The keys are the ones the Object Detection API and tf-models-official read
(`official.vision.dataloaders.tf_example_decoder.TfExampleDecoder` decodes these records):

    image/encoded, image/format (b'jpeg' or b'png'), image/height, image/width, image/filename,
    image/source_id (the COCO image id as a string), image/key/sha256,
    image/object/bbox/{xmin,xmax,ymin,ymax} (floats normalised to [0, 1]),
    image/object/class/label (int64 category id), image/object/class/text (bytes name),
    image/object/is_crowd (int64 0/1), image/object/area (float, in pixels).

The image features come from `official.vision.data.tfrecord_lib.image_info_to_feature_dict` and every
feature is made by its `convert_to_feature`; this module only adds the object features with explicit
types (so an image without objects gets empty lists) and checks the values.
"""
from typing import Sequence, Union

import numpy as np

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
from official.vision.data import tfrecord_lib

IMAGE_FORMATS = ("jpeg", "png")


def make_detection_example(*, encoded_image: bytes, image_format: str, height: int, width: int,
                           filename: str, source_id: Union[int, str], boxes, classes: Sequence[int],
                           class_texts: Sequence[str], is_crowd: Sequence[int],
                           areas: Sequence[float]) -> tf.train.Example:
    """Returns one Object Detection API `tf.train.Example`.

    Args:
      encoded_image: the JPEG or PNG bytes, stored as they are.
      image_format: 'jpeg' or 'png'.
      height, width: the size of the encoded image in pixels.
      filename: the image's file name (stored for reference).
      source_id: the image id (COCO image id); stored as its decimal string.
      boxes: [N, 4] boxes as (ymin, xmin, ymax, xmax), normalised to [0, 1] — the order
        `TfExampleDecoder` returns them in.
      classes: N category ids (>= 1).
      class_texts: N category names.
      is_crowd: N values 0 or 1.
      areas: N object areas in pixels.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"{filename}: image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    if not isinstance(encoded_image, bytes) or not encoded_image:
        raise ValueError(f"{filename}: encoded_image must be non-empty bytes")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"{filename}: image size {width}x{height} must be positive")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if len(boxes) else np.zeros((0, 4))
    n = len(boxes)
    for name, values in (("classes", classes), ("class_texts", class_texts), ("is_crowd", is_crowd),
                         ("areas", areas)):
        if len(values) != n:
            raise ValueError(f"{filename}: {n} boxes but {len(values)} {name}")
    if n:
        if not np.all(np.isfinite(boxes)) or boxes.min() < 0.0 or boxes.max() > 1.0:
            raise ValueError(f"{filename}: box coordinates must be finite and normalised to [0, 1]")
        if np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
            raise ValueError(f"{filename}: boxes must be (ymin, xmin, ymax, xmax) with min <= max")
        if min(int(c) for c in classes) < 1:
            raise ValueError(f"{filename}: category ids must be >= 1")
        if any(int(c) not in (0, 1) for c in is_crowd):
            raise ValueError(f"{filename}: is_crowd values must be 0 or 1")

    feature = tfrecord_lib.image_info_to_feature_dict(int(height), int(width), filename, source_id,
                                                      encoded_image, image_format)
    convert = tfrecord_lib.convert_to_feature
    feature.update({
        "image/object/bbox/ymin": convert(boxes[:, 0].tolist(), "float_list"),
        "image/object/bbox/xmin": convert(boxes[:, 1].tolist(), "float_list"),
        "image/object/bbox/ymax": convert(boxes[:, 2].tolist(), "float_list"),
        "image/object/bbox/xmax": convert(boxes[:, 3].tolist(), "float_list"),
        "image/object/class/label": convert([int(c) for c in classes], "int64_list"),
        "image/object/class/text": convert([t.encode("utf8") for t in class_texts], "bytes_list"),
        "image/object/is_crowd": convert([int(c) for c in is_crowd], "int64_list"),
        "image/object/area": convert([float(a) for a in areas], "float_list"),
    })
    return tf.train.Example(features=tf.train.Features(feature=feature))
