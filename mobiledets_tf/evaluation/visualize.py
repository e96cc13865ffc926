"""Pictures of detections: boxes and "name 0.87" labels drawn on images, and a PNG grid of several.

Uses Pillow only (no TensorFlow), so it works on outputs of Keras and TFLite models alike. Boxes are
normalised (ymin, xmin, ymax, xmax), classes are 0-based class indices into `class_names` (the
detector's output convention); each class has a fixed colour (`class_color`), groundtruth is drawn
thin in white.
"""
import math
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mobiledets_tf.fileio import write_atomically

# Distinct, saturated colours (no white: white is groundtruth).
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
)
GROUNDTRUTH_COLOR = (255, 255, 255)
BACKGROUND_COLOR = (32, 32, 32)

Groundtruths = Union[Mapping[str, Any], Sequence[Any]]


def class_color(class_index: int) -> Tuple[int, int, int]:
    """The RGB colour of a 0-based class index."""
    return PALETTE[int(class_index) % len(PALETTE)]


def _check_image(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    return image


def _boxes(boxes: Any) -> np.ndarray:
    """[N, 4] float boxes (an empty input gives [0, 4])."""
    return np.asarray(boxes, np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros([0, 4])


def _pixel_rect(box: np.ndarray, height: int, width: int) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) inclusive pixel corners of a normalised yxyx box."""
    ymin, xmin, ymax, xmax = np.clip(box, 0.0, 1.0)
    left, top = int(round(xmin * width)), int(round(ymin * height))
    right, bottom = int(round(xmax * width)) - 1, int(round(ymax * height)) - 1
    left, top = min(left, width - 1), min(top, height - 1)
    return left, top, max(left, right), max(top, bottom)


def _font(height: int, width: int) -> ImageFont.ImageFont:
    size = max(10, min(height, width) // 30)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def draw_detections(
    image: Any,
    boxes: Any,
    classes: Any,
    scores: Any,
    class_names: Sequence[str],
    score_threshold: float = 0.3,
    groundtruth_boxes: Optional[Any] = None,
) -> np.ndarray:
    """A copy of `image` (uint8 HxWx3) with the detections scoring >= `score_threshold` drawn.

    Each box has its class colour and a "name 0.87" label (the class index when it is beyond
    `class_names`); `groundtruth_boxes` [N, 4] normalised yxyx, if given, are drawn thin in white
    underneath. `scores` may be None (every box drawn, no score in the label).
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    boxes = _boxes(boxes)
    classes = np.asarray(classes).reshape(-1)
    scores = None if scores is None else np.asarray(scores, np.float64).reshape(-1)
    if len(classes) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(f"boxes, classes and scores must have the same length, got {len(boxes)}, "
                         f"{len(classes)} and {None if scores is None else len(scores)}")

    canvas = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(canvas)
    if groundtruth_boxes is not None:
        for box in _boxes(groundtruth_boxes):
            draw.rectangle(_pixel_rect(box, height, width), outline=GROUNDTRUTH_COLOR, width=1)

    line = max(1, round(min(height, width) / 160))
    font = _font(height, width)
    keep = np.arange(len(boxes)) if scores is None else np.flatnonzero(scores >= score_threshold)
    if scores is not None:
        keep = keep[np.argsort(scores[keep], kind="stable")]  # best drawn last, on top
    for i in keep:
        class_index = int(round(float(classes[i])))
        color = class_color(class_index)
        left, top, right, bottom = _pixel_rect(boxes[i], height, width)
        draw.rectangle((left, top, right, bottom), outline=color, width=line)
        name = class_names[class_index] if 0 <= class_index < len(class_names) else f"class {class_index}"
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = x1 - x0 + 4, y1 - y0 + 2
        label_top = top - text_h if top - text_h >= 0 else min(top + line, max(0, height - text_h))
        label_left = min(left, max(0, width - text_w))
        draw.rectangle((label_left, label_top, label_left + text_w - 1, label_top + text_h - 1), fill=color)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        draw.text((label_left + 2 - x0, label_top + 1 - y0), text, font=font,
                  fill=(0, 0, 0) if luminance > 140 else (255, 255, 255))
    return np.asarray(canvas, np.uint8)


def _groundtruth_boxes(groundtruths: Optional[Groundtruths], index: int) -> Optional[np.ndarray]:
    if groundtruths is None:
        return None
    if isinstance(groundtruths, Mapping):  # the batched groundtruth dict of coco_metrics
        boxes = np.asarray(groundtruths["groundtruth_boxes"][index])
        if "groundtruth_classes" in groundtruths:
            boxes = boxes[np.asarray(groundtruths["groundtruth_classes"][index]) > 0]
        return boxes
    return np.asarray(groundtruths[index])


def save_detection_grid(
    images: Any,
    detections: Mapping[str, Any],
    class_names: Sequence[str],
    path: str,
    columns: int = 4,
    score_threshold: float = 0.3,
    groundtruths: Optional[Groundtruths] = None,
    spacing: int = 2,
) -> np.ndarray:
    """Draws each image's detections and writes them as one PNG grid to `path`, atomically.

    Args:
      images: uint8 [N, H, W, 3] (or a list of HxWx3 images; cells take the largest size).
      detections: batched `boxes` [N, M, 4], `classes` [N, M], `scores` [N, M] and optionally
        `num_detections` [N].
      groundtruths: optional; the batched groundtruth dict of `coco_metrics` (`groundtruth_boxes`,
        entries with `groundtruth_classes` <= 0 are padding) or a list of [K, 4] box arrays.
      columns: images per row; the grid is min(columns, N) cells wide and ceil(N / columns) high,
        cells `spacing` pixels apart, so its size is
        (rows * H + (rows - 1) * spacing) x (cols * W + (cols - 1) * spacing).

    Returns:
      The grid image, uint8.
    """
    images = [_check_image(im) for im in images]
    if not images:
        raise ValueError("no images to draw")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    missing = [k for k in ("boxes", "classes", "scores") if k not in detections]
    if missing:
        raise ValueError(f"detections is missing {missing}")
    boxes, classes, scores = (np.asarray(detections[k]) for k in ("boxes", "classes", "scores"))
    if len(boxes) != len(images):
        raise ValueError(f"{len(images)} images but detections for {len(boxes)}")
    num = (np.asarray(detections["num_detections"]).reshape(-1) if "num_detections" in detections
           else np.full([len(images)], boxes.shape[1]))

    cell_h, cell_w = max(im.shape[0] for im in images), max(im.shape[1] for im in images)
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    grid = np.empty([rows * cell_h + (rows - 1) * spacing, cols * cell_w + (cols - 1) * spacing, 3], np.uint8)
    grid[:] = BACKGROUND_COLOR
    for i, image in enumerate(images):
        n = int(num[i])
        drawn = draw_detections(image, boxes[i, :n], classes[i, :n], scores[i, :n], class_names,
                                score_threshold, _groundtruth_boxes(groundtruths, i))
        top, left = (i // cols) * (cell_h + spacing), (i % cols) * (cell_w + spacing)
        grid[top:top + image.shape[0], left:left + image.shape[1]] = drawn
    write_atomically(path, lambda f: Image.fromarray(grid).save(f, format="PNG"))
    return grid
