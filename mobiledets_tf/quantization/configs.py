"""tfmot QuantizeConfigs and QAT layers for the package's two custom layers: hard-swish and the
squeeze-and-excite gate.

Both layers have no weights; their output is fake-quantized (8 bits, asymmetric, moving-average
ranges) by `OutputQuantizeConfig`. In the "decomposed" activation form (the default of QAT runs,
`model.qat_activation_form`), they are replaced by `QATHardSwish` / `QATSqueezeExciteGate`, which also
fake-quantize the intermediate tensors at the positions the int8 graph has them:
hard-swish `(x * 1/6) * relu6(x + 3)` after `x * 1/6` and after `relu6(x + 3)`; the hard-sigmoid gate
after `relu6(s + 3)` and after the `/ 6`. The converter then emits every one of those ops in int8
(MUL, ADD with fused RELU6, MUL), all of which the CPU delegate (XNNPACK) runs. In the "fused" form
only the outputs are fake-quantized: hard-swish converts to one int8 HARD_SWISH op and the
hard-sigmoid gate's inner ops stay float.
"""
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from mobiledets_tf.layers.activations import HardSwish, hard_swish
from mobiledets_tf.layers.squeeze_excite import SqueezeExciteGate

quantizers = tfmot.quantization.keras.quantizers
QAT_ACTIVATION_FORMS = ("decomposed", "fused")


def activation_quantizer() -> "quantizers.Quantizer":
    """8-bit asymmetric per-tensor moving-average ranges: tfmot's default for activations."""
    return quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)


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
        return [activation_quantizer()]

    def get_config(self):
        return {}


class IntermediateFakeQuant:
    """Fake-quantization of named intermediate tensors of a weightless layer, with range variables
    `{name}_min` / `{name}_max` owned by that layer."""

    def __init__(self, layer: tf.keras.layers.Layer, names):
        self.quantizer = activation_quantizer()
        self.ranges = {name: self.quantizer.build(None, name, layer) for name in names}

    def hook(self, training):
        """A `quantize(name, tensor)` function for the activations' formulas (training None: inference)."""
        training = False if training is None else training

        def quantize(name, tensor):
            if isinstance(training, bool):
                return self.quantizer(tensor, training, weights=self.ranges[name])
            return tf.cond(tf.cast(training, tf.bool),
                           lambda: self.quantizer(tensor, True, weights=self.ranges[name]),
                           lambda: self.quantizer(tensor, False, weights=self.ranges[name]))
        return quantize


class QATHardSwish(HardSwish):
    """Hard-swish in the decomposed form, its intermediate tensors fake-quantized (see the module)."""

    def build(self, input_shape):
        self.intermediates = IntermediateFakeQuant(self, ("scaled", "gate"))
        super().build(input_shape)

    def call(self, inputs, training=None):
        return hard_swish(inputs, "decomposed", self.intermediates.hook(training))


class QATSqueezeExciteGate(SqueezeExciteGate):
    """The squeeze-and-excite gate with the hard-sigmoid's intermediate tensors fake-quantized."""

    def build(self, input_shape):
        names = ("shifted", "gate") if self.gate == "hard_sigmoid" else ()
        self.intermediates = IntermediateFakeQuant(self, names)
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.gated(inputs, self.intermediates.hook(training))


QAT_LAYERS = {HardSwish: QATHardSwish, SqueezeExciteGate: QATSqueezeExciteGate}
CUSTOM_LAYER_CONFIGS = {HardSwish: OutputQuantizeConfig, SqueezeExciteGate: OutputQuantizeConfig,
                        QATHardSwish: OutputQuantizeConfig, QATSqueezeExciteGate: OutputQuantizeConfig}


def custom_objects():
    """Everything `quantize_scope` needs to deserialize a QAT model of this package."""
    objects = {cls.__name__: cls for cls in CUSTOM_LAYER_CONFIGS}
    objects.update({cfg.__name__: cfg for cfg in CUSTOM_LAYER_CONFIGS.values()})
    return objects
