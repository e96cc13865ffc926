"""The vocabulary and channel rules of the TDB blocks, stated once and importable without TensorFlow.

ArchSpecs and search spaces (plain data) validate against these names; the Keras blocks, the
supernet's shared-weight ops, the statistics and the TF1 name tables derive every width from these
functions. All follow TF1 MobileDets:
- `round_filters`: round half up to a multiple of 8, never below 8 (stage widths, SE and Tucker).
- `expanded_width`: an IBN's or fused IBN's body is exactly `in_channels * expansion` (no rounding);
  an IBN with expansion 1 has no expansion conv (`has_expansion_conv`).
- `se_hidden_width`: squeeze-and-excite reduces to round8(channels * ratio) units, or by the rule of
  the network an ArchSpec reproduces (`SE_WIDTH_RULES`: TF-slim's and Model Garden's MobileNetV3 use
  `make_divisible`, MnasNet `int(block input * ratio)`).
- `tucker_ranks`: round8(in_channels * input_rank_ratio), round8(filters * output_rank_ratio).
- `can_be_residual`: every block but the plain conv and the no-expansion IBN may have a shortcut
  (where its stride is 1 and its input and output widths are equal).
"""
from typing import Optional, Tuple

BLOCK_TYPES = ("conv", "ibn", "fused", "tucker")
ACTIVATIONS = ("relu6", "relu", "hard_swish")
SE_GATES = ("sigmoid", "hard_sigmoid")
# How squeeze-and-excite picks its bottleneck width from the body width (and the block's input width):
# round8 (TF1 MobileDets), make_divisible (TF-slim / Model Garden MobileNetV3), mnasnet (MnasNet's TPU code).
SE_WIDTH_RULES = ("round8", "make_divisible", "mnasnet")
DEFAULT_SE_WIDTH = "round8"   # every ArchSpec's, block's and search space's unless it names another


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


def make_divisible(value: float, divisor: int = 8) -> int:
    """TF-slim's and Model Garden's `make_divisible`: round half up to a multiple of `divisor` (at
    least `divisor`), then add one `divisor` if that lost more than 10% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def se_hidden_width(channels: int, ratio: float, rule: str = DEFAULT_SE_WIDTH,
                    block_input: Optional[int] = None) -> int:
    """The bottleneck width of squeeze-and-excite over `channels` channels (a block's body).

    - round8: `round_filters(channels * ratio)` (TF1 MobileDets);
    - make_divisible: `make_divisible(int(channels * ratio))` (TF-slim's `squeeze_excite` and Model
      Garden's `SqueezeExcitation`: the first SE block of MobileNetV3-Large gets 24 units, not 16);
    - mnasnet: `max(1, int(block_input * ratio))`, from the block's input width, not rounded
      (MnasNet's `MnasBlock`).
    """
    if rule == "round8":
        return round_filters(channels * ratio)
    if rule == "make_divisible":
        return make_divisible(max(1, int(channels * ratio)))
    if rule == "mnasnet":
        if block_input is None:
            raise ValueError("the mnasnet squeeze-and-excite width needs the block's input width")
        return max(1, int(block_input * ratio))
    raise ValueError(f"unknown squeeze-and-excite width rule {rule!r}; expected one of {', '.join(SE_WIDTH_RULES)}")


def tucker_ranks(in_channels: int, filters: int, input_rank_ratio: float,
                 output_rank_ratio: float) -> Tuple[int, int]:
    """(r_in, r_out) of a Tucker conv: r_in from the input width, r_out from the output width."""
    return round_filters(in_channels * input_rank_ratio), round_filters(filters * output_rank_ratio)


def can_be_residual(block_type: str, expansion: Optional[float] = None) -> bool:
    """Whether a block of this type may carry a shortcut at all (stride and widths aside)."""
    return block_type != "conv" and not (block_type == "ibn" and not has_expansion_conv(expansion))
