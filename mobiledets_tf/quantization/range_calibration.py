"""Activation ranges of a fresh QAT model, calibrated on data before its first step.

tfmot's activation quantizers start every range at [-6, 6] and move it as an exponential moving
average with decay 0.999, so after a 600-step QAT run 55% of the initial [-6, 6] still weighs on
each range. That hardly matters after ReLU6, whose outputs fill [0, 6]; it matters a great deal for
hard-swish models, whose conv outputs reach beyond 6 (clipped all through QAT and in the int8 file)
and whose `x * 1/6` tensors span about 1 (quantized with 5x too coarse a step). The TF1 Object
Detection API avoided this with `quant_delay`: ranges were collected while the graph still ran in
float. `calibrate_activation_ranges` does the same in one pass: it runs the QAT model on a few
batches in inference mode with fake quantization switched off, and sets each moving-average range
to the min/max its tensor took (0 included, as tfmot requires). The weight ranges, which tfmot sets
from the weights at every training step and leaves at [-6, 6] before the first, are set from the
weights too, so the model is already a faithful int8 simulation before it trains. The input
quantizer (a fixed [-1, 1], see `qat.py`) is left as it is.
"""
from typing import Dict, Iterable

import tensorflow as tf
from absl import logging
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

from mobiledets_tf.keras import keras
from mobiledets_tf.quantization.patching import patched_attributes


class _RangeRecorder:
    """Running (min, max) per moving-average range variable, seen through `MovingAvgQuantize`."""

    def __init__(self):
        self.ranges: Dict[int, tuple] = {}

    def moving_average_quantize(self, inputs, min_var, max_var, per_channel=False, **kwargs):
        if per_channel:
            raise NotImplementedError("per-channel activation ranges are not calibrated")
        low = min(float(tf.reduce_min(inputs)), 0.0)
        high = max(float(tf.reduce_max(inputs)), 0.0)
        _, seen_low, seen_high = self.ranges.get(id(min_var), (None, low, high))
        self.ranges[id(min_var)] = ((min_var, max_var), min(low, seen_low), max(high, seen_high))
        return inputs

    def assign(self) -> int:
        for (min_var, max_var), low, high in self.ranges.values():
            min_var.assign(low)
            max_var.assign(high)
        return len(self.ranges)


def _float_graph_recording_ranges(recorder: _RangeRecorder):
    """A context in which fake quantization is off (weights and inputs pass through), moving-average
    ranges are recorded, and weight ranges are set from the weights (as a training step sets them)."""
    def passthrough(inputs, *args, **kwargs):
        return inputs

    last_value_quantize = quant_ops.LastValueQuantize

    def weight_ranges_from_weights(inputs, *args, **kwargs):
        last_value_quantize(inputs, *args, **dict(kwargs, is_training=True))
        return inputs

    return patched_attributes(quant_ops, {
        "MovingAvgQuantize": recorder.moving_average_quantize, "LastValueQuantize": weight_ranges_from_weights,
        "AllValuesQuantize": passthrough, "FixedQuantize": passthrough})


def calibrate_activation_ranges(qat_model: keras.Model, image_batches: Iterable[tf.Tensor]) -> int:
    """Sets the moving-average activation ranges of `qat_model` (a fresh tfmot QAT model) to the
    min/max of their tensors over `image_batches` (see the module docstring); returns how many
    ranges were set. Runs eagerly, in inference mode."""
    recorder = _RangeRecorder()
    batches = 0
    with _float_graph_recording_ranges(recorder):
        for images in image_batches:
            qat_model(images, training=False)
            batches += 1
    if not batches:
        raise ValueError("no batches to calibrate the QAT activation ranges on")
    count = recorder.assign()
    logging.info("QAT: calibrated %d activation ranges on %d batches", count, batches)
    return count
