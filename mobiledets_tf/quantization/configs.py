"""tfmot QuantizeConfigs for the package's two custom layers: hard-swish and the squeeze-excite gate.

Both layers have no weights; their output is fake-quantized (8 bits, asymmetric, moving-average
ranges), which is what the TFLite converter needs to emit them as int8 HARD_SWISH / LOGISTIC + MUL.
"""
import tensorflow_model_optimization as tfmot

from mobiledets_tf.layers.activations import HardSwish
from mobiledets_tf.layers.squeeze_excite import SqueezeExciteGate

quantizers = tfmot.quantization.keras.quantizers


class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantizes only the output of a weightless layer."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


CUSTOM_LAYER_CONFIGS = {HardSwish: OutputQuantizeConfig, SqueezeExciteGate: OutputQuantizeConfig}


def custom_objects():
    """Everything `quantize_scope` needs to deserialize a QAT model of this package."""
    objects = {cls.__name__: cls for cls in CUSTOM_LAYER_CONFIGS}
    objects.update({cfg.__name__: cfg for cfg in CUSTOM_LAYER_CONFIGS.values()})
    return objects
