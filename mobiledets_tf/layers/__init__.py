"""Keras layers of the Tensor-Decomposition-Based (TDB) search space and their quantization configs.

The names below load on first use, so that `mobiledets_tf.layers.block_rules` (the blocks' names and
channel rules, which ArchSpecs and search spaces use) imports without TensorFlow.
"""
import importlib

_EXPORTS = {
    "Block": "block",
    "ConvBnAct": "conv_bn",
    "FusedInvertedBottleneck": "fused_inverted_bottleneck",
    "HardSwish": "activations",
    "InvertedBottleneck": "inverted_bottleneck",
    "SqueezeExcite": "squeeze_excite",
    "SqueezeExciteGate": "squeeze_excite",
    "TuckerConv": "tucker",
    "activation_layer": "activations",
    "round_filters": "block_rules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
