"""Fused inverted bottleneck: full kxk conv to `in_channels * expansion` (carries the stride) + BN + act
-> [SE] -> 1x1 linear projection. The 1x1 expansion and the depthwise conv of an IBN fused into one
full convolution, which uses accelerators (EdgeTPU, DSP, GPU) far better than a depthwise one. The
sequence and widths are `block_plans.block_plan("fused", ...)`.
"""
from mobiledets_tf.layers.planned_block import PlannedBlock


class FusedInvertedBottleneck(PlannedBlock):
    block_type = "fused"

    def __init__(self, in_channels: int, filters: int, expansion: float = 4.0, **kwargs):
        super().__init__(in_channels, filters, plan_fields={"expansion": expansion}, **kwargs)
        self.expanded = self.step("fused").out_channels
