"""Tucker convolution (generalised bottleneck): 1x1 conv to r_in + BN + act -> full kxk conv to r_out
(carries the stride) + BN + act -> 1x1 linear conv to the output width.

Ranks follow TF1 MobileDets (`block_rules.tucker_ranks`): `r_in = round8(in_channels * input_rank_ratio)`
from the input width, `r_out = round8(filters * output_rank_ratio)` from the output width. The
sequence is `block_plans.block_plan("tucker", ...)`; Tucker convolutions have no squeeze-and-excite.
"""
from mobiledets_tf.layers.planned_block import PlannedBlock


class TuckerConv(PlannedBlock):
    block_type = "tucker"

    def __init__(self, in_channels: int, filters: int, input_rank_ratio: float = 0.25,
                 output_rank_ratio: float = 0.25, **kwargs):
        super().__init__(in_channels, filters, plan_fields={"input_rank_ratio": input_rank_ratio,
                                                            "output_rank_ratio": output_rank_ratio}, **kwargs)
        self.input_rank, self.output_rank = self.step("core").in_channels, self.step("core").out_channels
