"""Wraps a flat Functional detector for quantization-aware training with tfmot's default 8-bit scheme.

Builtin layers get tfmot's own configs (per-channel conv weights, Conv/BN/ReLU folding patterns); the
package's custom layers get theirs from `configs.py`. The trained weights are kept.
"""
import tensorflow_model_optimization as tfmot

from mobiledets_tf.keras import keras
from mobiledets_tf.quantization.configs import CUSTOM_LAYER_CONFIGS, custom_objects

_tfmot_keras = tfmot.quantization.keras


def quantize_scope():
    """Context manager under which QAT models are built, saved and loaded."""
    return _tfmot_keras.quantize_scope(custom_objects())


def annotate(model: keras.Model) -> keras.Model:
    """Marks every layer for quantization, giving custom layers their QuantizeConfig."""

    def annotate_layer(layer):
        config_cls = CUSTOM_LAYER_CONFIGS.get(type(layer))
        if config_cls is not None:
            return _tfmot_keras.quantize_annotate_layer(layer, config_cls())
        return _tfmot_keras.quantize_annotate_layer(layer)

    return keras.models.clone_model(model, clone_function=annotate_layer)


def quantize_model(model: keras.Model) -> keras.Model:
    """Returns the QAT (fake-quantized) version of a flat Functional model, weights preserved."""
    with quantize_scope():
        return _tfmot_keras.quantize_apply(annotate(model))
