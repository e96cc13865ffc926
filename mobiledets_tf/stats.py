"""Model statistics: multiply-adds and parameter counts per part (backbone, extra layers, predictor).

Multiply-adds count every Conv2D, DepthwiseConv2D and Dense layer at the model's static input size,
plus one per element for the squeeze-and-excite average pool and gating multiply (the published
MobileDet-CPU figure of 0.45 B counts them: 0.444 B without, 0.451 B with); parameters count every variable (BatchNorm moving statistics included), and trainable ones apart.
A layer belongs to the part its name starts with (see `models/backbone.py` and `models/ssdlite_head.py`).
"""
from typing import Dict

import numpy as np

from mobiledets_tf.keras import keras
from mobiledets_tf.layers.squeeze_excite import SqueezeExciteGate

PARTS = {"backbone": "backbone_", "extra_layers": "extra", "predictor": "predictor"}


def layer_madds(layer: keras.layers.Layer) -> int:
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # subclass of Conv2D: test first
        _, h, w, c_out = layer.output_shape
        kh, kw = layer.kernel_size
        return h * w * kh * kw * c_out
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c_out = layer.output_shape
        kh, kw = layer.kernel_size
        c_in = layer.input_shape[-1] // layer.groups
        return h * w * kh * kw * c_in * c_out
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return int(np.prod(layer.input_shape[1:]))
    if isinstance(layer, SqueezeExciteGate):
        return int(np.prod(layer.output_shape[1:]))
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.output_shape[1:-1] or [1])) * layer.input_shape[-1] * layer.units
    return 0


def _count(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def part_of(layer_name: str) -> str:
    for part, prefix in PARTS.items():
        if layer_name.startswith(prefix):
            return part
    return ""


def model_stats(model: keras.Model) -> Dict[str, Dict[str, int]]:
    """{part: {"madds", "params", "trainable_params"}} for each part and "total"."""
    stats = {part: {"madds": 0, "params": 0, "trainable_params": 0} for part in [*PARTS, "total"]}
    for layer in model.layers:
        counts = {"madds": layer_madds(layer), "params": _count(layer.weights),
                  "trainable_params": _count(layer.trainable_weights)}
        part = part_of(layer.name)
        if not part and any(counts.values()):
            raise ValueError(f"layer {layer.name!r} has weights or compute but belongs to no part")
        for key, value in counts.items():
            if part:
                stats[part][key] += int(value)
            stats["total"][key] += int(value)
    return stats
