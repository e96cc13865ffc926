"""The vocabulary and channel rules of the TDB blocks, stated once and importable without TensorFlow.

ArchSpecs and search spaces (plain data) validate against these names; the Keras blocks, the
supernet's shared-weight ops, the statistics and the TF1 name tables derive every width from these
functions. All follow TF1 MobileDets:
- `round_filters`: round half up to a multiple of 8, never below 8 (stage widths, SE and Tucker).
- `expanded_width`: an IBN's or fused IBN's body is exactly `in_channels * expansion` (no rounding);
  an IBN with expansion 1 has no expansion conv (`has_expansion_conv`).
- `se_hidden_width`: squeeze-and-excite reduces to round8(channels * ratio) units.
- `tucker_ranks`: round8(in_channels * input_rank_ratio), round8(filters * output_rank_ratio).
- `can_be_residual`: every block but the plain conv and the no-expansion IBN may have a shortcut
  (where its stride is 1 and its input and output widths are equal).
"""
from typing import Optional, Tuple

BLOCK_TYPES = ("conv", "ibn", "fused", "tucker")
ACTIVATIONS = ("relu6", "relu", "hard_swish")
SE_GATES = ("sigmoid", "hard_sigmoid")


def round_filters(filters: float, multiplier: float = 1.0, divisor: int = 8, min_value: int = 8) -> int:
    """Returns `max(min_value, int(filters * multiplier / divisor + 0.5) * divisor)`.

    This is the TF1 MobileDets rounding (`_scale_filters` / `round8`): round half up, floor 8, and no
    "do not go below 90%" correction.
    """
    if filters <= 0 or multiplier <= 0:
        raise ValueError(f"filters and multiplier must be positive, got {filters} and {multiplier}")
    return max(min_value, int(filters * multiplier / divisor + 0.5) * divisor)


def expanded_width(in_channels: int, expansion: float) -> int:
    """The body width of an IBN or fused IBN: `in_channels * expansion`, not rounded to 8."""
    return int(round(in_channels * expansion))


def has_expansion_conv(expansion: float) -> bool:
    """An IBN with expansion 1 starts with its depthwise conv (MobileNet's first "expanded_conv")."""
    return expansion != 1


def se_hidden_width(channels: int, ratio: float) -> int:
    """The bottleneck width of squeeze-and-excite over `channels` channels."""
    return round_filters(channels * ratio)


def tucker_ranks(in_channels: int, filters: int, input_rank_ratio: float,
                 output_rank_ratio: float) -> Tuple[int, int]:
    """(r_in, r_out) of a Tucker conv: r_in from the input width, r_out from the output width."""
    return round_filters(in_channels * input_rank_ratio), round_filters(filters * output_rank_ratio)


def can_be_residual(block_type: str, expansion: Optional[float] = None) -> bool:
    """Whether a block of this type may carry a shortcut at all (stride and widths aside)."""
    return block_type != "conv" and not (block_type == "ibn" and not has_expansion_conv(expansion))
