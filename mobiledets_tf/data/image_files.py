"""Image files (JPEG, PNG, BMP, GIF) read and resized as the input pipelines read and resize images."""
import os
from typing import List

import numpy as np
import tensorflow as tf

from mobiledets_tf import fileio
from mobiledets_tf.data.pipeline import resize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def read_image(path: str) -> np.ndarray:
    """The decoded image, uint8 [H, W, 3] (grey and RGBA images converted), as TensorFlow decodes it."""
    try:
        data = fileio.read_bytes(path)
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.OpError, OSError) as e:
        raise ValueError(f"{path}: cannot read the image: {str(e).splitlines()[0]}") from e


def read_resized_image(path: str, input_size: int) -> np.ndarray:
    """The image resized as the pipelines resize it: float32 [S, S, 3] in [0, 255]."""
    return resize(read_image(path), input_size).numpy()


def image_files(folder: str) -> List[str]:
    """The image files directly in `folder`, sorted by name."""
    if not fileio.isdir(folder):
        raise FileNotFoundError(f"{folder}: no such folder")
    return sorted(os.path.join(folder, name) for name in fileio.listdir(folder)
                  if name.lower().endswith(IMAGE_EXTENSIONS))
