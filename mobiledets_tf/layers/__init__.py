"""Keras layers of the Tensor-Decomposition-Based (TDB) search space and their quantization configs."""
from mobiledets_tf.layers.activations import HardSwish, activation_layer
from mobiledets_tf.layers.block import Block
from mobiledets_tf.layers.conv_bn import ConvBnAct
from mobiledets_tf.layers.fused_inverted_bottleneck import FusedInvertedBottleneck
from mobiledets_tf.layers.inverted_bottleneck import InvertedBottleneck
from mobiledets_tf.layers.rounding import round_filters
from mobiledets_tf.layers.squeeze_excite import SqueezeExcite, SqueezeExciteGate
from mobiledets_tf.layers.tucker import TuckerConv

__all__ = [
    "Block", "ConvBnAct", "FusedInvertedBottleneck", "HardSwish", "InvertedBottleneck",
    "SqueezeExcite", "SqueezeExciteGate", "TuckerConv", "activation_layer", "round_filters",
]
