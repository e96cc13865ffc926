"""The pieces a search space is made of: op and width choices, decisions, layers, and the error type.

An `OpChoice` is an ArchSpec block without the skeleton's stride, filters and residual; a
`WidthChoice` one width of a stage; a `Decision` a TuNAS `OneOf(choices, tag)` leaf; a `Layer` one
backbone layer with its choices and the decisions that pick them. `mixed_radix` is the one index
helper of joint choices (first digit most significant, which is `itertools.product` and `np.kron`
order). Plain data: no TensorFlow.
"""
import dataclasses
from typing import NamedTuple, Optional, Sequence, Tuple, Union

from mobiledets_tf.arch.spec import BlockSpec
from mobiledets_tf.layers.block_plans import Step, block_plan
from mobiledets_tf.layers.block_rules import can_be_residual


class SearchSpaceError(ValueError):
    """A search space that cannot be used, or an architecture outside it; the message says where."""


def fail(where: str, message: str):
    raise SearchSpaceError(f"{where}: {message}")


def mixed_radix(digits: Sequence[int], radices: Sequence[int]) -> int:
    """The position of a joint choice among all joint choices, the first digit most significant."""
    position = 0
    for digit, radix in zip(digits, radices):
        position = position * radix + digit
    return position


@dataclasses.dataclass(frozen=True)
class OpChoice:
    """One op of a layer: an ArchSpec block without the skeleton's stride, filters and residual."""
    type: str
    kernel: int
    expansion: Optional[float] = None
    input_rank_ratio: Optional[float] = None
    output_rank_ratio: Optional[float] = None
    se: float = 0.0
    activation: Optional[str] = None

    @property
    def label(self) -> str:
        parts = [self.type, f"k{self.kernel}"]
        if self.expansion is not None:
            parts.append(f"e{self.expansion:g}")
        if self.input_rank_ratio is not None:
            parts.append(f"r{self.input_rank_ratio:g}/{self.output_rank_ratio:g}")
        if self.se:
            parts.append(f"se{self.se:g}")
        if self.activation:
            parts.append(self.activation)
        return " ".join(parts)

    def __str__(self) -> str:
        return self.label

    @property
    def can_be_residual(self) -> bool:
        return can_be_residual(self.type, self.expansion)

    def plan(self, in_channels: int, out_channels: int, stride: int) -> Tuple[Step, ...]:
        """The steps of this op at these widths (`block_plans.block_plan`)."""
        return block_plan(self.type, in_channels, out_channels, self.kernel, stride, self.expansion,
                          self.input_rank_ratio, self.output_rank_ratio, self.se)

    def block(self, stride: int, filters: int, residual: bool) -> BlockSpec:
        return BlockSpec(stride=stride, filters=filters, residual=residual, **dataclasses.asdict(self))

    @classmethod
    def of_block(cls, block: BlockSpec) -> "OpChoice":
        return cls(**{f.name: getattr(block, f.name) for f in dataclasses.fields(cls)})


class WidthChoice(NamedTuple):
    multiplier: float
    filters: int

    @property
    def label(self) -> str:
        return f"{self.filters} (x{self.multiplier:g})"

    def __str__(self) -> str:
        return self.label


class Decision(NamedTuple):
    """A `OneOf(choices, tag)` leaf: `layerN/op` (OpChoice values) or `stageS/width` (WidthChoice)."""
    tag: str
    choices: Tuple[Union[OpChoice, WidthChoice], ...]

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(c.label for c in self.choices)


@dataclasses.dataclass(frozen=True)
class Layer:
    """One backbone layer (ArchSpec block `index`) with its choices and the decisions picking them."""
    index: int
    stage: int
    stride: int
    may_be_residual: bool
    endpoint: Optional[str]
    ops: Tuple[OpChoice, ...]
    widths: Tuple[WidthChoice, ...]              # output width choices (the stage's)
    op_decision: Optional[int]                   # index into SearchSpace.decisions; None: fixed
    width_decision: Optional[int]
    input_width_decision: Optional[int]          # the previous layer's width decision

    @property
    def feature_decisions(self) -> Tuple[int, ...]:
        """The distinct decisions this layer's configuration depends on (in, out, op order)."""
        found = []
        for d in (self.input_width_decision, self.width_decision, self.op_decision):
            if d is not None and d not in found:
                found.append(d)
        return tuple(found)

    def residual(self, op: OpChoice) -> bool:
        """Whether this layer has a shortcut with `op`: not a stage's first layer, and an op that can."""
        return self.may_be_residual and op.can_be_residual
