"""Base class of every TDB block: one implementation used as a layer and wired into a flat graph.

A block owns builtin Keras sublayers (convs, BatchNorm, activations, Add) and defines `forward`,
which applies them in order. `forward` works on eager/graph tensors (when the block is called as a
layer, e.g. inside a supernet) and on Keras symbolic tensors: `wire` calls it while building a
Functional model, so the sublayers themselves become nodes of that model. The standalone detector
is therefore a flat Functional graph of builtin layers (plus hard-swish and the SE gate, which carry
their own QuantizeConfig), which is what tensorflow-model-optimization can quantize. Both paths share
the same weights.
"""
from typing import Dict

from mobiledets_tf.keras import keras
from mobiledets_tf.layers import defaults
from mobiledets_tf.layers.activations import activation_layer


class Block(keras.layers.Layer):
    """A block of builtin sublayers. Subclasses implement `forward(inputs) -> {"output": ..., ...}`.

    Besides "output", `forward` may return named intermediate tensors (e.g. "expansion", the
    activated output of an expansion conv) that a detector can use as a feature endpoint.
    """

    def forward(self, inputs) -> Dict[str, object]:
        raise NotImplementedError

    def call(self, inputs):
        return self.forward(inputs)["output"]

    def wire(self, inputs) -> Dict[str, object]:
        """Applies the sublayers to Keras symbolic tensors and returns the tensors of `forward`."""
        return self.forward(inputs)

    # Builders of the sublayers shared by all block types.
    def _conv(self, filters: int, kernel_size: int, strides: int, suffix: str, use_bias=False,
              kernel_initializer=None):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", use_bias=use_bias,
            kernel_initializer=kernel_initializer or defaults.conv_initializer(),
            kernel_regularizer=defaults.l2_regularizer(), name=f"{self.name}_{suffix}")

    def _depthwise(self, kernel_size: int, strides: int, suffix: str):
        return keras.layers.DepthwiseConv2D(
            kernel_size, strides=strides, padding="same", use_bias=False,
            depthwise_initializer=defaults.depthwise_initializer(kernel_size),
            name=f"{self.name}_{suffix}")

    def _bn(self, suffix: str):
        return defaults.batch_norm(defaults.BACKBONE_BN, f"{self.name}_{suffix}")

    def _act(self, activation: str, suffix: str):
        return activation_layer(activation, f"{self.name}_{suffix}")

    def _residual_add(self):
        return keras.layers.Add(name=f"{self.name}_add")
