"""Squeeze-and-excite: global average pool -> 1x1 conv (bias) + activation -> 1x1 conv (bias) -> gate.

The gate (`x * sigmoid(s)` for MobileDets, `x * hard_sigmoid(s)` for MobileNetV3) is one small custom
layer so that the whole block quantizes with tfmot: its QuantizeConfig (in
`mobiledets_tf.quantization.configs`) fake-quantizes the gated output, and the TFLite converter lowers
it to LOGISTIC + MUL (MobileNetV3: ADD with fused RELU6, MUL, MUL) in int8. `gated` takes the
`quantize(name, tensor)` hook of `mobiledets_tf.layers.activations.hard_sigmoid` for QAT (which
also sees the sigmoid's output, as "sigmoid").
"""
import tensorflow as tf

from mobiledets_tf.keras import keras
from mobiledets_tf.layers.activations import Quantize, hard_sigmoid, unquantized
from mobiledets_tf.layers.block import Block
from mobiledets_tf.layers.block_rules import SE_GATES


class SqueezeExciteGate(keras.layers.Layer):
    """Multiplies a feature map by the gated squeeze-and-excite logits: `[x, s] -> x * gate(s)`."""

    def __init__(self, gate: str = "sigmoid", **kwargs):
        super().__init__(**kwargs)
        if gate not in SE_GATES:
            raise ValueError(f"unknown squeeze-and-excite gate {gate!r}; expected one of {SE_GATES}")
        self.gate = gate

    def call(self, inputs):
        return self.gated(inputs)

    def gated(self, inputs, quantize: Quantize = unquantized):
        features, logits = inputs
        if self.gate == "sigmoid":
            weights = quantize("sigmoid", tf.sigmoid(logits))
        else:
            weights = hard_sigmoid(logits, quantize)
        return features * weights

    def get_config(self):
        return {**super().get_config(), "gate": self.gate}


class SqueezeExcite(Block):
    """SE over `channels` channels with `hidden` bottleneck units (`block_rules.se_hidden_width`)."""

    def __init__(self, channels: int, hidden: int, activation: str = "relu6", gate: str = "sigmoid", **kwargs):
        super().__init__(**kwargs)
        self.channels, self.hidden, self.activation, self.gate = channels, hidden, activation, gate
        self.pool = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{self.name}_pool")
        self.reduce = self._conv(self.hidden, 1, 1, "reduce", use_bias=True)
        self.reduce_act = self._act(activation, "reduce_act")
        self.expand = self._conv(channels, 1, 1, "expand", use_bias=True)
        self.gate_layer = SqueezeExciteGate(gate, name=f"{self.name}_gate")

    def forward(self, inputs):
        logits = self.expand(self.reduce_act(self.reduce(self.pool(inputs))))
        return {"output": self.gate_layer([inputs, logits])}

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "hidden": self.hidden,
                "activation": self.activation, "gate": self.gate}
