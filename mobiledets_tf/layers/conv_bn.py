"""A plain kxk convolution + BatchNorm + activation block (the stem, and 1x1 heads of baselines)."""
from mobiledets_tf.layers.planned_block import PlannedBlock


class ConvBnAct(PlannedBlock):
    block_type = "conv"

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1,
                 activation: str = "relu6", **kwargs):
        super().__init__(None, filters, kernel_size, strides, activation, **kwargs)

    def get_config(self):
        config = super().get_config()
        return {key: config[key] for key in config
                if key not in ("in_channels", "residual", "se_ratio", "se_gate", "se_activation", "se_width")}
