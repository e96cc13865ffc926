"""Inverted bottleneck (IBN): [1x1 expand + BN + act] -> kxk depthwise + BN + act -> [SE] -> 1x1 linear.

With expansion 1 the expand conv is absent (MobileNet's first "expanded_conv"). The expanded width is
exactly `in_channels * expansion` (no channel rounding), as in TF1 MobileDets. The sequence and
widths are `block_plans.block_plan("ibn", ...)`.
"""
from mobiledets_tf.layers.planned_block import PlannedBlock


class InvertedBottleneck(PlannedBlock):
    block_type = "ibn"

    def __init__(self, in_channels: int, filters: int, expansion: float = 4.0, **kwargs):
        super().__init__(in_channels, filters, plan_fields={"expansion": expansion}, **kwargs)
        self.expanded = self.step("depthwise").in_channels
