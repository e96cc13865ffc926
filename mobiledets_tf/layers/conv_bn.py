"""A plain kxk convolution + BatchNorm + activation block (the stem, and 1x1 heads of baselines)."""
from mobiledets_tf.layers.block import Block


class ConvBnAct(Block):
    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1,
                 activation: str = "relu6", **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = filters, kernel_size, strides
        self.activation = activation
        self.conv = self._conv(filters, kernel_size, strides, "conv")
        self.bn = self._bn("bn")
        self.act = self._act(activation, "act")

    def forward(self, inputs):
        return {"output": self.act(self.bn(self.conv(inputs)))}

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "activation": self.activation}
