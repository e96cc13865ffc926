"""Initialisers, regularisers and BatchNorm settings of the MobileDets backbone and SSDLite head.

Values are those of the TF1 Object Detection API MobileDets feature extractor and SSDLite configs.
TF1's `l2_regularizer { weight: w }` computes `w * sum(x^2) / 2`; Keras' `l2(w)` computes
`w * sum(x^2)`, so the Keras factor is half the config weight. Depthwise kernels are not regularised
(the configs leave `regularize_depthwise` at its default, false).
"""
import contextlib
import math

from mobiledets_tf.keras import keras

L2_WEIGHT = 4e-5

BACKBONE_BN = {"momentum": 0.99, "epsilon": 0.01}
HEAD_BN = {"momentum": 0.97, "epsilon": 0.001}

_batch_norm_options = {"synchronized": False}


@contextlib.contextmanager
def synchronized_batch_norm(enabled: bool = True):
    """Within this context, new BatchNorm layers compute batch statistics across all replicas."""
    previous = _batch_norm_options["synchronized"]
    _batch_norm_options["synchronized"] = enabled
    try:
        yield
    finally:
        _batch_norm_options["synchronized"] = previous


def batch_norm(params: dict, name: str) -> keras.layers.BatchNormalization:
    """A BatchNorm layer with `params` (BACKBONE_BN or HEAD_BN), synchronized if so configured."""
    return keras.layers.BatchNormalization(
        **params, synchronized=_batch_norm_options["synchronized"], name=name)


def l2_regularizer(weight: float = L2_WEIGHT):
    return keras.regularizers.l2(weight / 2.0)


def conv_initializer():
    return keras.initializers.HeNormal()


def depthwise_initializer(kernel_size: int):
    # Truncated normal with the stddev of he_normal corrected for truncation (0.8796 = stddev of a
    # standard normal truncated at two sigmas), as in TF1 MobileDets.
    return keras.initializers.TruncatedNormal(stddev=math.sqrt(2.0 / kernel_size**2) / 0.8796)


def head_initializer():
    return keras.initializers.TruncatedNormal(stddev=0.03)
