"""SSD multiple-grid anchors, as built by the TF1 Object Detection API for SSDLite models.

This reproduces `create_ssd_anchors` / `MultipleGridAnchorGenerator` of the TF1 Object
Detection API (scales, aspect ratios, the reduced lowest layer, the interpolated scale, the
cell-centred offsets and the anchor order). It is hand-written because neither TensorFlow nor
tf-models-official provides it: Model Garden's `official.vision.ops.anchor.Anchor` is the
RetinaNet (FPN level / octave scale) generator, which produces different boxes.

Anchors are computed once in numpy, in normalized (ymin, xmin, ymax, xmax) coordinates, and
are not clipped.
"""
import math
from typing import List, Sequence, Tuple

import numpy as np

DEFAULT_ASPECT_RATIOS: Tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)

# (scale, aspect_ratio) of one anchor shape.
AnchorSpec = Tuple[float, float]


def _check_spec_args(
    num_layers: int,
    min_scale: float,
    max_scale: float,
    aspect_ratios: Sequence[float],
) -> None:
    if not isinstance(num_layers, int) or num_layers < 2:
        raise ValueError(f"num_layers must be an int >= 2, got {num_layers!r}")
    if not 0.0 < min_scale <= max_scale:
        raise ValueError(
            f"need 0 < min_scale <= max_scale, got min_scale={min_scale}, max_scale={max_scale}"
        )
    if len(aspect_ratios) == 0 or any(ar <= 0.0 for ar in aspect_ratios):
        raise ValueError(f"aspect_ratios must be a non-empty list of positive numbers, got {aspect_ratios!r}")


def layer_scales(num_layers: int = 6, min_scale: float = 0.2, max_scale: float = 0.95) -> List[float]:
    """Scales s_0..s_{num_layers-1} linearly spaced in [min_scale, max_scale], plus s_num_layers = 1.0."""
    _check_spec_args(num_layers, min_scale, max_scale, (1.0,))
    scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)]
    return scales + [1.0]


def anchor_specs(
    num_layers: int = 6,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
) -> List[List[AnchorSpec]]:
    """Per-layer lists of (scale, aspect_ratio) anchor shapes, in the order used at each location.

    Lowest layer (when `reduce_boxes_in_lowest_layer`): [(0.1, 1.0), (s_0, 2.0), (s_0, 0.5)].
    Every other layer i: (s_i, ar) for each ar in `aspect_ratios`, then, if
    `interpolated_scale_aspect_ratio` > 0, (sqrt(s_i * s_{i+1}), interpolated_scale_aspect_ratio).
    """
    _check_spec_args(num_layers, min_scale, max_scale, aspect_ratios)
    scales = layer_scales(num_layers, min_scale, max_scale)
    specs: List[List[AnchorSpec]] = []
    for i in range(num_layers):
        scale, next_scale = scales[i], scales[i + 1]
        if i == 0 and reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        layer = [(scale, float(ar)) for ar in aspect_ratios]
        if interpolated_scale_aspect_ratio > 0.0:
            layer.append((math.sqrt(scale * next_scale), float(interpolated_scale_aspect_ratio)))
        specs.append(layer)
    return specs


def num_anchors_per_location(**anchor_spec_kwargs) -> List[int]:
    """Number of anchors at each location of each layer ([3, 6, 6, 6, 6, 6] by default).

    Takes the keyword arguments of `anchor_specs`.
    """
    return [len(layer) for layer in anchor_specs(**anchor_spec_kwargs)]


MIN_INPUT_SIZE = 33  # the TF1 feature extractors' check_min_image_dim


def feature_map_sizes_for_input(input_size: int, num_layers: int = 6) -> List[Tuple[int, int]]:
    """(height, width) of the SSDLite feature maps for a square `input_size` x `input_size` input.

    The first two maps are the backbone's stride-16 and stride-32 outputs; every stride-2 layer is
    SAME-padded, so each halving rounds up: the maps are ceil(size / 16), ceil(size / 32), then
    ceil(previous / 2). E.g. 320 -> 20, 10, 5, 3, 2, 1; 300 -> 19, 10, 5, 3, 2, 1.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < MIN_INPUT_SIZE:
        raise ValueError(f"input_size must be an integer >= {MIN_INPUT_SIZE}, got {input_size!r}")
    if not isinstance(num_layers, int) or num_layers < 2:
        raise ValueError(f"num_layers must be an int >= 2, got {num_layers!r}")
    sizes = [-(-input_size // 16), -(-input_size // 32)]
    while len(sizes) < num_layers:
        sizes.append(-(-sizes[-1] // 2))
    return [(s, s) for s in sizes]


def _grid_anchors(grid_height: int, grid_width: int, specs: Sequence[AnchorSpec]) -> np.ndarray:
    """Anchors of one layer, shape [grid_height * grid_width * len(specs), 4], order (y, x, k)."""
    stride_y, stride_x = 1.0 / grid_height, 1.0 / grid_width
    centers_y = 0.5 * stride_y + np.arange(grid_height, dtype=np.float64) * stride_y
    centers_x = 0.5 * stride_x + np.arange(grid_width, dtype=np.float64) * stride_x
    scales = np.array([s for s, _ in specs], dtype=np.float64)
    sqrt_ratios = np.sqrt(np.array([ar for _, ar in specs], dtype=np.float64))
    heights = scales / sqrt_ratios
    widths = scales * sqrt_ratios

    cy = np.broadcast_to(centers_y[:, None, None], (grid_height, grid_width, len(specs)))
    cx = np.broadcast_to(centers_x[None, :, None], (grid_height, grid_width, len(specs)))
    h = np.broadcast_to(heights[None, None, :], cy.shape)
    w = np.broadcast_to(widths[None, None, :], cy.shape)
    boxes = np.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)
    return boxes.reshape(-1, 4)


def generate_anchors(
    feature_map_sizes: Sequence[Tuple[int, int]],
    num_layers: int = 6,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
) -> np.ndarray:
    """All anchors, float32 [A, 4] normalized (ymin, xmin, ymax, xmax), not clipped.

    Order: layer by layer; within a layer y-major, then x, then the anchor index at the location,
    which matches a box predictor output [B, h, w, k * 4] reshaped to [B, h * w * k, 4] and
    concatenated over layers.
    """
    specs = anchor_specs(
        num_layers, min_scale, max_scale, aspect_ratios,
        interpolated_scale_aspect_ratio, reduce_boxes_in_lowest_layer,
    )
    if len(feature_map_sizes) != num_layers:
        raise ValueError(
            f"got {len(feature_map_sizes)} feature map sizes but num_layers={num_layers}; "
            "they must be equal"
        )
    layers = []
    for size, layer_specs in zip(feature_map_sizes, specs):
        if len(size) != 2 or int(size[0]) <= 0 or int(size[1]) <= 0:
            raise ValueError(f"feature map sizes must be positive (height, width) pairs, got {size!r}")
        layers.append(_grid_anchors(int(size[0]), int(size[1]), layer_specs))
    return np.concatenate(layers, axis=0).astype(np.float32)
