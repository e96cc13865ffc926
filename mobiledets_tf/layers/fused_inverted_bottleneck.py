"""Fused inverted bottleneck: full kxk conv to `in_channels * expansion` (carries the stride) + BN + act
-> [SE] -> 1x1 linear projection. The 1x1 expansion and the depthwise conv of an IBN fused into one
full convolution, which uses accelerators (EdgeTPU, DSP, GPU) far better than a depthwise one.
"""
from mobiledets_tf.layers.bottleneck import Bottleneck
from mobiledets_tf.layers.inverted_bottleneck import expanded_width


class FusedInvertedBottleneck(Bottleneck):
    def __init__(self, in_channels: int, filters: int, expansion: float = 4.0, **kwargs):
        super().__init__(in_channels, filters, **kwargs)
        self.expansion = expansion
        self.expanded = expanded_width(in_channels, expansion)
        self.fused = self._conv(self.expanded, self.kernel_size, self.strides, "fused")
        self.fused_bn = self._bn("fused_bn")
        self.fused_act = self._act(self.activation, "fused_act")
        self._build_tail(self.expanded)

    def _body(self, inputs):
        x = self.fused_act(self.fused_bn(self.fused(inputs)))
        return {"body": x, "expansion": x}

    def get_config(self):
        return {**super().get_config(), "expansion": self.expansion}
