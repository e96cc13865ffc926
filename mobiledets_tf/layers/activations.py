"""Activations of the TDB search space: ReLU6 (builtin `ReLU(6.)`), ReLU and hard-swish.

Hard-swish is a small custom layer (tfmot has no builtin for it); its QuantizeConfig lives in
`mobiledets_tf.quantization.configs`. The formula `x * relu6(x + 3) / 6` is the one the TFLite
converter fuses into a single HARD_SWISH op.
"""
import tensorflow as tf

from mobiledets_tf.keras import keras

ACTIVATIONS = ("relu6", "relu", "hard_swish")


class HardSwish(keras.layers.Layer):
    """`x * relu6(x + 3) / 6` (MobileNetV3's "h-swish", MobileDets' "swish6")."""

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) / 6.0


def hard_sigmoid(x):
    """`relu6(x + 3) / 6`: the piecewise-linear sigmoid of MobileNetV3's squeeze-and-excite gate."""
    return tf.nn.relu6(x + 3.0) / 6.0


def activation_layer(activation: str, name: str) -> keras.layers.Layer:
    """Returns a fresh Keras layer computing `activation` ("relu6", "relu" or "hard_swish")."""
    if activation == "relu6":
        return keras.layers.ReLU(6.0, name=name)
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    if activation == "hard_swish":
        return HardSwish(name=name)
    raise ValueError(f"unknown activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
