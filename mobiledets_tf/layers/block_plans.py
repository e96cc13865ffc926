"""The op sequence of every TDB block, stated once: the plan that the standalone Keras blocks wire and
the supernet's shared-weight ops run.

A block's plan is its steps in order, at given widths:
- `ConvStep`: a conv (or depthwise conv) without bias, its BatchNorm, then the block activation
  unless the step is linear (the 1x1 projection);
- `SqueezeExciteStep`: squeeze-and-excite over the body (`SqueezeExcite`);
then, outside the plan, the block's shortcut when it has one. Per block type (reference section 7):
- conv:   kxk conv + BN + act;
- ibn:    [1x1 expand to in * e] -> kxk depthwise (stride) -> [SE] -> 1x1 linear projection;
- fused:  kxk conv to in * e (stride) -> [SE] -> 1x1 linear projection;
- tucker: 1x1 compress to r_in -> kxk core to r_out (stride) -> 1x1 linear projection.
Widths come from `block_rules`. Step names are the suffixes of the standalone block's sublayers
(`{block}_{name}`, `{block}_{bn_name}`, `{block}_{act_name}`; SE: `{block}_se_*`), which the
supernet's weight export, the TF1 variable-name table and checkpoints rely on. Plain data: no
TensorFlow.
"""
from typing import NamedTuple, Optional, Tuple, Union

from mobiledets_tf.layers.block_rules import (BLOCK_TYPES, DEFAULT_SE_WIDTH, expanded_width, has_expansion_conv,
                                              se_hidden_width, tucker_ranks)


class ConvStep(NamedTuple):
    name: str
    kernel_size: int
    strides: int
    in_channels: Optional[int]   # None: not known where the plan is made (a stem conv)
    out_channels: int
    depthwise: bool = False
    linear: bool = False         # BatchNorm only, no activation (the projection)
    spatial: bool = False        # the kxk conv of the block's kernel (a supernet has one per kernel size)
    expansion_output: bool = False  # its activated output is the block's "expansion" endpoint tensor

    @property
    def bn_name(self) -> str:
        return "bn" if self.name == "conv" else f"{self.name}_bn"

    @property
    def act_name(self) -> str:
        return "act" if self.name == "conv" else f"{self.name}_act"


class SqueezeExciteStep(NamedTuple):
    channels: int
    hidden: int                  # bottleneck units (`block_rules.se_hidden_width`)
    name: str = "se"


Step = Union[ConvStep, SqueezeExciteStep]


def block_plan(block_type: str, in_channels: Optional[int], filters: int, kernel_size: int, strides: int,
               expansion: Optional[float] = None, input_rank_ratio: Optional[float] = None,
               output_rank_ratio: Optional[float] = None, se: float = 0.0,
               se_width: str = DEFAULT_SE_WIDTH) -> Tuple[Step, ...]:
    """The steps of one block at these widths (the shortcut, if any, follows them); `se_width` is
    the squeeze-and-excite width rule (`block_rules.SE_WIDTH_RULES`)."""
    if block_type == "conv":
        return (ConvStep("conv", kernel_size, strides, in_channels, filters, spatial=True),)
    if block_type == "ibn":
        body = expanded_width(in_channels, expansion)
        steps = [ConvStep("expand", 1, 1, in_channels, body, expansion_output=True)] if has_expansion_conv(expansion) else []
        steps.append(ConvStep("depthwise", kernel_size, strides, body, body, depthwise=True, spatial=True))
    elif block_type == "fused":
        body = expanded_width(in_channels, expansion)
        steps = [ConvStep("fused", kernel_size, strides, in_channels, body, spatial=True, expansion_output=True)]
    elif block_type == "tucker":
        if se:
            raise ValueError("Tucker convolutions have no squeeze-and-excite")
        rank_in, body = tucker_ranks(in_channels, filters, input_rank_ratio, output_rank_ratio)
        steps = [ConvStep("compress", 1, 1, in_channels, rank_in),
                 ConvStep("core", kernel_size, strides, rank_in, body, spatial=True)]
    else:
        raise ValueError(f"unknown block type {block_type!r}; expected one of {', '.join(BLOCK_TYPES)}")
    if se:
        steps.append(SqueezeExciteStep(body, se_hidden_width(body, se, se_width, in_channels)))
    steps.append(ConvStep("project", 1, 1, body, filters, linear=True))
    return tuple(steps)
