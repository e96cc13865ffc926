"""Inverted bottleneck (IBN): [1x1 expand + BN + act] -> kxk depthwise + BN + act -> [SE] -> 1x1 linear.

With expansion 1 the expand conv is absent (MobileNet's first "expanded_conv"). The expanded width is
exactly `in_channels * expansion` (no channel rounding), as in TF1 MobileDets.
"""
from mobiledets_tf.layers.bottleneck import Bottleneck


def expanded_width(in_channels: int, expansion: float) -> int:
    return int(round(in_channels * expansion))


class InvertedBottleneck(Bottleneck):
    def __init__(self, in_channels: int, filters: int, expansion: float = 4.0, **kwargs):
        super().__init__(in_channels, filters, **kwargs)
        self.expansion = expansion
        self.expanded = expanded_width(in_channels, expansion)
        self.expand = None
        if expansion != 1:
            self.expand = self._conv(self.expanded, 1, 1, "expand")
            self.expand_bn = self._bn("expand_bn")
            self.expand_act = self._act(self.activation, "expand_act")
        self.depthwise = self._depthwise(self.kernel_size, self.strides, "depthwise")
        self.depthwise_bn = self._bn("depthwise_bn")
        self.depthwise_act = self._act(self.activation, "depthwise_act")
        self._build_tail(self.expanded)

    def _body(self, inputs):
        tensors = {}
        x = inputs
        if self.expand is not None:
            x = self.expand_act(self.expand_bn(self.expand(x)))
            tensors["expansion"] = x
        tensors["body"] = self.depthwise_act(self.depthwise_bn(self.depthwise(x)))
        return tensors

    def get_config(self):
        return {**super().get_config(), "expansion": self.expansion}
