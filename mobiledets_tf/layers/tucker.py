"""Tucker convolution (generalised bottleneck): 1x1 conv to r_in + BN + act -> full kxk conv to r_out
(carries the stride) + BN + act -> 1x1 linear conv to the output width.

Ranks follow TF1 MobileDets: `r_in = round8(in_channels * input_rank_ratio)` from the input width,
`r_out = round8(filters * output_rank_ratio)` from the output width.
"""
from mobiledets_tf.layers.bottleneck import Bottleneck
from mobiledets_tf.layers.rounding import round_filters


class TuckerConv(Bottleneck):
    def __init__(self, in_channels: int, filters: int, input_rank_ratio: float = 0.25,
                 output_rank_ratio: float = 0.25, **kwargs):
        super().__init__(in_channels, filters, **kwargs)
        if self.se_ratio:
            raise ValueError(f"{self.name}: Tucker convolutions have no squeeze-and-excite")
        self.input_rank_ratio, self.output_rank_ratio = input_rank_ratio, output_rank_ratio
        self.input_rank = round_filters(in_channels * input_rank_ratio)
        self.output_rank = round_filters(filters * output_rank_ratio)
        self.compress = self._conv(self.input_rank, 1, 1, "compress")
        self.compress_bn = self._bn("compress_bn")
        self.compress_act = self._act(self.activation, "compress_act")
        self.core = self._conv(self.output_rank, self.kernel_size, self.strides, "core")
        self.core_bn = self._bn("core_bn")
        self.core_act = self._act(self.activation, "core_act")
        self._build_tail(self.output_rank)

    def _body(self, inputs):
        x = self.compress_act(self.compress_bn(self.compress(inputs)))
        return {"body": self.core_act(self.core_bn(self.core(x)))}

    def get_config(self):
        return {**super().get_config(), "input_rank_ratio": self.input_rank_ratio,
                "output_rank_ratio": self.output_rank_ratio}
