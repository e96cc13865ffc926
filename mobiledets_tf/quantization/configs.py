"""tfmot QuantizeConfigs and QAT layers for the package's two custom layers: hard-swish and the
squeeze-and-excite gate.

Both layers have no weights; their output is fake-quantized (8 bits, asymmetric, moving-average
ranges) by `OutputQuantizeConfig`. In the "decomposed" activation form (the default of QAT runs,
`model.qat_activation_form`), they are replaced by `QATHardSwish` / `QATSqueezeExciteGate`, which also
fake-quantize the intermediate tensors at the positions the int8 graph has them:
hard-swish `(x * 1/6) * relu6(x + 3)` after `x * 1/6` and after `relu6(x + 3)`; the hard-sigmoid gate
after `relu6(s + 3)` and after the `/ 6`; the sigmoid gate after `sigmoid(s)`, on the fixed grid of
TFLite's int8 LOGISTIC (k / 256 for k = 0..255, `SIGMOID_OUTPUT_RANGE`). Without that last one the
QAT model multiplies by the exact sigmoid where its int8 file multiplies by the rounded one: the
first difference between the two, which then grows through every later block. The converter then
emits every one of those ops in int8 (MUL, ADD with fused RELU6, MUL, LOGISTIC), all of which the
CPU delegate (XNNPACK) runs. In the "fused" form only the outputs are fake-quantized: hard-swish
converts to one int8 HARD_SWISH op and the hard-sigmoid gate's inner ops stay float. The scheme's
layout transform (`layout.py`) keeps the weight quantization of convolutions followed by a ReLU.
"""
import tensorflow as tf
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_registry import (
    Default8BitConvQuantizeConfig, Default8BitQuantizeRegistry)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit.default_8bit_quantize_scheme import (
    Default8BitQuantizeScheme)

from mobiledets_tf.keras import keras
from mobiledets_tf.layers.activations import HardSwish, hard_swish
from mobiledets_tf.layers.squeeze_excite import SqueezeExciteGate
from mobiledets_tf.layers.concatenation import AnchorConcatenate
from mobiledets_tf.quantization.layout import QuantizeLayoutTransform

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


# TFLite's int8 LOGISTIC always writes scale 1/256, zero point -128: the values k / 256, k = 0..255.
SIGMOID_OUTPUT_RANGE = (0.0, 255.0 / 256.0)


def sigmoid_output_quantizer() -> "quantizers.Quantizer":
    """The fixed 8-bit grid of TFLite's int8 LOGISTIC output (`SIGMOID_OUTPUT_RANGE`)."""
    return quantizers.FixedQuantizer(num_bits=8, init_min=SIGMOID_OUTPUT_RANGE[0],
                                     init_max=SIGMOID_OUTPUT_RANGE[1], narrow_range=False)


class IntermediateFakeQuant:
    """Fake-quantization of named intermediate tensors of a weightless layer: moving-average ranges
    (variables `{name}_min` / `{name}_max` owned by that layer) for `names`, fixed quantizers for
    `fixed` (name -> quantizer)."""

    def __init__(self, layer: keras.layers.Layer, names, fixed=None):
        self.quantizer = activation_quantizer()
        self.ranges = {name: self.quantizer.build(None, name, layer) for name in names}
        self.fixed = dict(fixed or {})

    def hook(self, training):
        """A `quantize(name, tensor)` function for the activations' formulas (training None: inference)."""
        training = False if training is None else training

        def quantize(name, tensor):
            if name in self.fixed:
                return self.fixed[name](tensor, training, weights={})
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
    """The squeeze-and-excite gate with the hard-sigmoid's intermediate tensors, or the sigmoid's
    output, fake-quantized."""

    def build(self, input_shape):
        if self.gate == "hard_sigmoid":
            self.intermediates = IntermediateFakeQuant(self, ("shifted", "gate"))
        else:
            self.intermediates = IntermediateFakeQuant(self, (), {"sigmoid": sigmoid_output_quantizer()})
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.gated(inputs, self.intermediates.hook(training))


class DepthwiseKernelQuantizer(quantizers.LastValueQuantizer):
    """Per-channel 8-bit symmetric ranges of a depthwise kernel [h, w, C, m], one per output channel
    (C * m), as TFLite quantizes it.

    tfmot's conv weight quantizer keeps one range per entry of the kernel's last axis, which for a
    depthwise kernel is the depth multiplier m (1 here), so tfmot quantizes every depthwise kernel
    per tensor. The int8 file quantizes the BN-folded kernel per channel; BN scales differ widely
    between channels, so per-tensor ranges of the unfolded kernel zero whole channels the int8 file
    keeps (in MobileDet-CPU they put a quarter of the float activations' size into the error). Per
    channel, the unfolded and the folded kernel quantize alike (a channel's scale cancels). The
    kernel is viewed as [h, w, 1, C * m] for tfmot's per-channel fake quantization, as tfmot's
    Conv2DTranspose quantizer transposes its kernel.
    """

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        return {"min_var": layer.add_weight(name + "_min", shape=(channels,), trainable=False,
                                            initializer=keras.initializers.Constant(-6.0)),
                "max_var": layer.add_weight(name + "_max", shape=(channels,), trainable=False,
                                            initializer=keras.initializers.Constant(6.0))}

    def __call__(self, inputs, training, weights, **kwargs):
        shape = tf.shape(inputs)
        per_channel = tf.reshape(inputs, tf.concat([shape[:2], [1, shape[2] * shape[3]]], 0))
        quantized = super().__call__(per_channel, training, weights, **kwargs)
        return tf.reshape(quantized, shape)

    def get_config(self):
        return {}


class DepthwiseConvQuantizeConfig(Default8BitConvQuantizeConfig):
    """tfmot's DepthwiseConv2D config with the kernel quantized per channel (`DepthwiseKernelQuantizer`)."""

    def __init__(self, weight_attrs=("depthwise_kernel",), activation_attrs=("activation",),
                 quantize_output=False):
        super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)
        self.weight_quantizer = DepthwiseKernelQuantizer()


class QuantizeRegistry(Default8BitQuantizeRegistry):
    """tfmot's default 8-bit registry, but for depthwise convolutions (`DepthwiseConvQuantizeConfig`)."""

    def get_quantize_config(self, layer):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return DepthwiseConvQuantizeConfig()
        return super().get_quantize_config(layer)


class QuantizeScheme(Default8BitQuantizeScheme):
    """tfmot's default 8-bit scheme with `QuantizeRegistry` and `layout.QuantizeLayoutTransform`
    (convolutions before a ReLU keep their weight quantization)."""

    def get_layout_transformer(self):
        return QuantizeLayoutTransform()

    def get_quantize_registry(self):
        return QuantizeRegistry()


QAT_LAYERS = {HardSwish: QATHardSwish, SqueezeExciteGate: QATSqueezeExciteGate}
CUSTOM_LAYER_CONFIGS = {HardSwish: OutputQuantizeConfig, SqueezeExciteGate: OutputQuantizeConfig,
                        AnchorConcatenate: OutputQuantizeConfig,
                        QATHardSwish: OutputQuantizeConfig, QATSqueezeExciteGate: OutputQuantizeConfig}


def custom_objects():
    """Everything `quantize_scope` needs to deserialize a QAT model of this package."""
    objects = {cls.__name__: cls for cls in CUSTOM_LAYER_CONFIGS}
    objects.update({cfg.__name__: cfg for cfg in CUSTOM_LAYER_CONFIGS.values()})
    objects.update({cls.__name__: cls for cls in (DepthwiseConvQuantizeConfig, DepthwiseKernelQuantizer)})
    return objects
