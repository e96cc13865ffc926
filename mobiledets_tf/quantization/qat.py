"""Wraps a flat Functional detector for quantization-aware training with tfmot's default 8-bit scheme.

Builtin layers get tfmot's own configs (per-channel conv weights, Conv/BN/ReLU folding patterns),
except depthwise convolutions, whose kernels `configs.QuantizeScheme` quantizes per channel; the
package's custom layers get theirs from `configs.py`, and in the "decomposed" activation form (the
default) are swapped for the QAT layers there, which fake-quantize the intermediate tensors of
hard-swish and of the hard-sigmoid gate. The trained weights are kept.

The input's quantization range is set to [-1, 1], the range of the normalised images, before any
step: tfmot's input quantizer keeps the running min/max of everything it has seen starting from 0, so
the range stays exactly [-1, 1] and a uint8 pixel p of the converted model means (p - 127.5) / 127.5,
as the model metadata states (also for a model exported before it saw extreme pixels).
"""
import tensorflow_model_optimization as tfmot

from mobiledets_tf.keras import keras
from mobiledets_tf.quantization.configs import (CUSTOM_LAYER_CONFIGS, QAT_ACTIVATION_FORMS, QAT_LAYERS,
                                                QuantizeScheme, custom_objects)

_tfmot_keras = tfmot.quantization.keras


def quantize_scope():
    """Context manager under which QAT models are built, saved and loaded."""
    return _tfmot_keras.quantize_scope(custom_objects())


def annotate(model: keras.Model, activation_form: str = "decomposed") -> keras.Model:
    """Marks every layer for quantization, giving custom layers their QuantizeConfig (and, in the
    "decomposed" activation form, their QAT layer)."""
    if activation_form not in QAT_ACTIVATION_FORMS:
        raise ValueError(f"unknown QAT activation form {activation_form!r}; expected one of "
                         f"{', '.join(QAT_ACTIVATION_FORMS)}")

    def annotate_layer(layer):
        qat_layer = QAT_LAYERS.get(type(layer)) if activation_form == "decomposed" else None
        if qat_layer is not None:
            layer = qat_layer.from_config(layer.get_config())
        config_cls = CUSTOM_LAYER_CONFIGS.get(type(layer))
        if config_cls is not None:
            return _tfmot_keras.quantize_annotate_layer(layer, config_cls())
        return _tfmot_keras.quantize_annotate_layer(layer)

    return keras.models.clone_model(model, clone_function=annotate_layer)


INPUT_RANGE = (-1.0, 1.0)


def set_input_range(qat_model: keras.Model, low: float, high: float) -> None:
    """Sets the min/max of the quantizers that read the model inputs."""
    inputs = {id(t) for t in qat_model.inputs}
    found = 0
    for layer in qat_model.layers:
        if type(layer).__name__ == "QuantizeLayer" and id(layer.input) in inputs:
            for variable in layer.weights:
                name = variable.name.split(":")[0]
                if name.endswith("min"):
                    variable.assign(low)
                elif name.endswith("max"):
                    variable.assign(high)
            found += 1
    if found != len(qat_model.inputs):
        raise ValueError(f"found {found} input quantizers for {len(qat_model.inputs)} inputs")


def quantize_model(model: keras.Model, activation_form: str = "decomposed") -> keras.Model:
    """Returns the QAT (fake-quantized) version of a flat Functional model, weights preserved."""
    with quantize_scope():
        qat_model = _tfmot_keras.quantize_apply(annotate(model, activation_form), scheme=QuantizeScheme())
    set_input_range(qat_model, *INPUT_RANGE)
    return qat_model
