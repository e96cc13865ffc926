"""Initialisers, regularisers and BatchNorm settings of the MobileDets backbone and SSDLite head.

Values are those of the TF1 Object Detection API MobileDets feature extractor and SSDLite configs.
TF1's `l2_regularizer { weight: w }` computes `w * sum(x^2) / 2`; Keras' `l2(w)` computes
`w * sum(x^2)`, so the Keras factor is half the config weight. Depthwise kernels are not regularised
(the configs leave `regularize_depthwise` at its default, false). `l2_weight(w)` changes the weight of
the layers built within it (a short run from scratch may fit faster with less).
"""
import contextlib
import math

from mobiledets_tf.keras import keras

L2_WEIGHT = 4e-5

BACKBONE_BN = {"momentum": 0.99, "epsilon": 0.01}
HEAD_BN = {"momentum": 0.97, "epsilon": 0.001}

_batch_norm_options = {"synchronized": False, "backbone_epsilon": BACKBONE_BN["epsilon"]}
_regularizer_options = {"l2_weight": L2_WEIGHT}


@contextlib.contextmanager
def synchronized_batch_norm(enabled: bool = True):
    """Within this context, new BatchNorm layers compute batch statistics across all replicas."""
    previous = _batch_norm_options["synchronized"]
    _batch_norm_options["synchronized"] = enabled
    try:
        yield
    finally:
        _batch_norm_options["synchronized"] = previous


@contextlib.contextmanager
def backbone_batch_norm_epsilon(epsilon: float):
    """Within this context, new backbone BatchNorm layers use `epsilon` (an ArchSpec's)."""
    previous = _batch_norm_options["backbone_epsilon"]
    _batch_norm_options["backbone_epsilon"] = epsilon
    try:
        yield
    finally:
        _batch_norm_options["backbone_epsilon"] = previous


def batch_norm(params: dict, name: str) -> keras.layers.BatchNormalization:
    """A BatchNorm layer with `params` (BACKBONE_BN or HEAD_BN), synchronized if so configured;
    BACKBONE_BN takes the epsilon of the current `backbone_batch_norm_epsilon` context."""
    if params is BACKBONE_BN:
        params = {**params, "epsilon": _batch_norm_options["backbone_epsilon"]}
    return keras.layers.BatchNormalization(
        **params, synchronized=_batch_norm_options["synchronized"], name=name)


@contextlib.contextmanager
def l2_weight(weight: float = L2_WEIGHT):
    """Within this context, new layers get an L2 regulariser of TF1 weight `weight` (0: none)."""
    if weight < 0:
        raise ValueError(f"the L2 weight must be >= 0, got {weight}")
    previous = _regularizer_options["l2_weight"]
    _regularizer_options["l2_weight"] = weight
    try:
        yield
    finally:
        _regularizer_options["l2_weight"] = previous


def l2_regularizer():
    """The L2 regulariser of the current `l2_weight` context (None when the weight is 0)."""
    weight = _regularizer_options["l2_weight"]
    return keras.regularizers.l2(weight / 2.0) if weight > 0 else None


def conv_initializer():
    return keras.initializers.HeNormal()


def depthwise_initializer(kernel_size: int):
    # Truncated normal with the stddev of he_normal corrected for truncation (0.8796 = stddev of a
    # standard normal truncated at two sigmas), as in TF1 MobileDets.
    return keras.initializers.TruncatedNormal(stddev=math.sqrt(2.0 / kernel_size**2) / 0.8796)


def head_initializer():
    return keras.initializers.TruncatedNormal(stddev=0.03)
