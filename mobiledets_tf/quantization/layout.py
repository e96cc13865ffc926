"""The QAT scheme's layout transform: tfmot's default 8-bit one, with its ReLU transforms fixed so
that a convolution (or Dense layer) followed directly by a ReLU keeps its weight quantization.

tfmot keeps the fake quantization out from between a layer and the ReLU after it by giving the layer
`NoOpQuantizeConfig` (`LayerReLUQuantize`, `LayerReluActivationQuantize`). For an Add that is right;
for a Conv2D, DepthwiseConv2D or Dense it also drops the layer's weight quantizer, so the QAT model
multiplies by float weights where its int8 file multiplies by int8 ones: the squeeze-and-excite
reduce convolution (bias, then ReLU) of MobileNetV3 and MnasNet, for one. `ConvReLUQuantize` treats
such a layer as tfmot's Conv+BatchNorm transforms treat a convolution: only its output quantization
is switched off (`NoOpActivation`), its weights stay quantized per channel; an Add still gets
`NoOpQuantizeConfig`. tfmot builds its transform list inside `apply`, so the two classes are swapped
in for the duration of that call.
"""
from tensorflow_model_optimization.python.core.quantization.keras import quantize_aware_activation
from tensorflow_model_optimization.python.core.quantization.keras import utils as quantize_utils
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_transforms
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_layout_transform import (  # noqa: E501
    Default8BitQuantizeLayoutTransform)

from mobiledets_tf.quantization.patching import patched_attributes

WEIGHTED_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")


class ConvReLUQuantize(default_8bit_transforms.LayerReLUQuantize):
    """Layer + ReLU with no fake quantization between them; a weighted layer keeps its weight quantizer."""

    def replacement(self, match_layer):
        layer_node = match_layer.input_layers[0]
        if layer_node.layer["class_name"] not in WEIGHTED_LAYERS:
            return super().replacement(match_layer)
        if layer_node.metadata.get("quantize_config") is None:
            layer_node.layer["config"]["activation"] = quantize_utils.serialize_activation(
                quantize_aware_activation.NoOpActivation(), use_legacy_format=True)
        return match_layer

    def custom_objects(self):
        return {**super().custom_objects(), "NoOpActivation": quantize_aware_activation.NoOpActivation}


class ConvReluActivationQuantize(ConvReLUQuantize):
    """`ConvReLUQuantize` for `Activation("relu")` layers."""

    pattern = default_8bit_transforms.LayerReluActivationQuantize.pattern


class QuantizeLayoutTransform(Default8BitQuantizeLayoutTransform):
    """tfmot's default 8-bit layout transform with `ConvReLUQuantize` (see the module docstring)."""

    def apply(self, model, layer_quantize_map):
        with patched_attributes(default_8bit_transforms, {"LayerReLUQuantize": ConvReLUQuantize,
                                                          "LayerReluActivationQuantize": ConvReluActivationQuantize}):
            return super().apply(model, layer_quantize_map)
