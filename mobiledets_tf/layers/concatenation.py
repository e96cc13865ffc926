"""Concatenation in ops of at most 5 inputs, as one Keras layer.

TFLite's XNNPACK delegate runs CONCATENATION with 2 to 5 inputs only and leaves a larger one to the
interpreter, splitting the graph into two delegate partitions; so more inputs are joined in steps,
which gives the same tensor. Doing that inside one layer (rather than nesting Concatenate layers)
keeps tfmot's QAT transforms, which rebuild the graph around each Concatenate layer, from reordering
the inputs of a nested one. Its QuantizeConfig lives in `mobiledets_tf.quantization.configs`.
"""
import tensorflow as tf

from mobiledets_tf.keras import keras

MAX_CONCAT_INPUTS = 5


class AnchorConcatenate(keras.layers.Concatenate):
    """Concatenation that joins at most `MAX_CONCAT_INPUTS` tensors per concat op."""

    def _merge_function(self, inputs):
        parts = list(inputs)
        while len(parts) > MAX_CONCAT_INPUTS:
            groups = [parts[i:i + MAX_CONCAT_INPUTS] for i in range(0, len(parts), MAX_CONCAT_INPUTS)]
            parts = [group[0] if len(group) == 1 else tf.concat(group, axis=self.axis) for group in groups]
        return tf.concat(parts, axis=self.axis)
