"""Search spaces as data: a vector of choice indices <-> an ArchSpec, plus cost-model features.

A search-space file (YAML, `configs/search_spaces/*.yaml`) holds three kinds of plain data:

- `skeletons`: named backbones, an ordered list of stages. A stage is `layers` (default 1)
  consecutive layers of one width: `stride` (its first layer's), `filters` (base width),
  optional `endpoint` (C1..C5, the stage's last layer), `ops` (the name of an op-choice group of
  the space, default `body`, or a list of op choices written inline) and optional
  `filter_multipliers` (default [1.0]; the stage width is `round8(filters * m)`). A stage's first
  layer has no shortcut; its other layers are residual unless the op cannot be (a no-expansion IBN).
- `spaces`: named op-choice groups, each a list of ArchSpec block fields without stride, filters
  and residual (those come from the skeleton); a list value means one choice per element, and an
  entry expands to the cross product of its list fields (last field fastest), e.g.
  `{type: ibn, kernel: [3, 5], expansion: [4, 8]}` -> ibn k3 e4, ibn k3 e8, ibn k5 e4, ibn k5 e8.
- `platforms`: named adaptations: the skeleton to search on, the activation, the kernel sizes kept
  (`kernels`) and fields set on every op choice of a block type (`block_fields`, e.g. SE on CPU).

`load_space(space, platform)` combines one of each into a `SearchSpace`, whose `decisions` are the
TuNAS `OneOf(choices, tag)` leaves in order: per stage with several widths a `stageS/width`
decision, then per layer with several op choices a `layerN/op` decision (N is the ArchSpec block
index). Layers with one possible op are fixed. One walk over the layers (`_resolve`) turns indices
into blocks; sampling, the ArchSpec, its inverse, the description and the features all use it.

Default spaces (`configs/search_spaces/mobiledets.yaml`): the paper's IBN, IBN+Fused and
IBN+Fused+Tucker spaces (reference section 7) on four platforms. Each platform searches on the
skeleton of its own published MobileDet (stage strides, base widths, endpoints and shortcut
positions exactly as in the reference tables), with the published widths fixed. Hence exactly:
MobileDet-CPU is in ibn/cpu, ibn_fused/cpu and ibn_fused_tucker/cpu; MobileDet-EdgeTPU, -DSP and
-GPU are in ibn_fused_tucker on their own platform (they use fused and Tucker blocks). Another
skeleton of the file can be chosen with `load_space(..., skeleton=NAME)`.

Cost-model features (TuNAS linear cost model, reference section 8): for each layer, the one-hot of
the joint choice of the distinct decisions it depends on (input width, output width, op), i.e. the
Kronecker product of their one-hots; a layer inside a stage reads and writes the same width
decision, which then counts once. Layers with a single possible configuration have no features.
Because decisions are independent, `expected_features` computes the expectation exactly as the
Kronecker product of the per-decision probability vectors.
"""
import dataclasses
import functools
import itertools
import json
import math
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from mobiledets_tf import fileio
from mobiledets_tf.arch.spec import (BLOCK_TYPES, ENDPOINT_STRIDES, KERNELS, STRIDES, OPTIONAL_FIELDS,
                                     REQUIRED_FIELDS, ArchSpec, ArchSpecError, BlockSpec, check_number)
from mobiledets_tf.layers.activations import ACTIVATIONS
from mobiledets_tf.layers.rounding import round_filters

SEARCH_SPACES_DIR = os.environ.get(
    "MOBILEDETS_SEARCH_SPACES_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                 "configs", "search_spaces"))
DEFAULT_OPS_GROUP = "body"
INPUT_CHANNELS = 3

_FILE_KEYS = ("description", "skeletons", "spaces", "platforms")
_STAGE_KEYS = ("stride", "filters", "layers", "endpoint", "ops", "filter_multipliers")
_SPACE_KEYS = ("description", "ops")
_PLATFORM_KEYS = ("description", "skeleton", "activation", "kernels", "block_fields")
_LAYOUT_FIELDS = ("stride", "filters", "residual")  # set by the skeleton, never by an op choice


class SearchSpaceError(ValueError):
    """A search space that cannot be used, or an architecture outside it; the message says where."""


def _fail(where: str, message: str):
    raise SearchSpaceError(f"{where}: {message}")


# Choices -------------------------------------------------------------------------------------------
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
        return self.type != "conv" and not (self.type == "ibn" and self.expansion == 1)

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


# File parsing and validation -----------------------------------------------------------------------
def _check_keys(where: str, raw: Any, allowed: Sequence[str], required: Sequence[str] = ()) -> None:
    if not isinstance(raw, dict):
        _fail(where, f"must be a mapping with keys among {', '.join(allowed)}, got {raw!r}")
    for key in raw:
        if key not in allowed:
            _fail(where, f"unknown key {key!r}; allowed: {', '.join(allowed)}")
    for key in required:
        if key not in raw:
            _fail(where, f"missing field '{key}'")


def _check_op_field(where: str, field: str, value: Any) -> None:
    """One value of an op field, checked as the ArchSpec checks it."""
    try:
        if field == "kernel":
            check_number(where, field, value, int, choices=KERNELS)
        elif field == "expansion":
            check_number(where, field, value, float, low=0, low_open=True)
        elif field in ("input_rank_ratio", "output_rank_ratio"):
            check_number(where, field, value, float, low=0, low_open=True, high=1)
        elif field == "se":
            check_number(where, field, value, float, low=0, high=1)
            if value == 1:
                _fail(where, "field 'se' is a bottleneck ratio and must be < 1")
        elif field == "activation" and value not in ACTIVATIONS:
            _fail(where, f"unknown activation {value!r}; expected one of {', '.join(ACTIVATIONS)}")
    except ArchSpecError as e:
        raise SearchSpaceError(str(e)) from None


def _op_fields(where: str, block_type: Any) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(allowed, required) op fields of a block type."""
    if block_type not in BLOCK_TYPES:
        _fail(where, f"unknown block type {block_type!r}; expected one of {', '.join(BLOCK_TYPES)}")
    required = tuple(f for f in REQUIRED_FIELDS[block_type] if f not in _LAYOUT_FIELDS)
    optional = tuple(f for f in OPTIONAL_FIELDS[block_type] if f not in _LAYOUT_FIELDS)
    return ("type",) + required + optional, required


def _parse_ops(raw: Any, where: str) -> Tuple[OpChoice, ...]:
    """A list of op entries (list values expand to their cross product) -> distinct OpChoices."""
    if not isinstance(raw, list) or not raw:
        _fail(where, f"must be a non-empty list of op choices, got {raw!r}")
    ops: List[OpChoice] = []
    for i, entry in enumerate(raw):
        entry_where = f"{where}[{i}]"
        if not isinstance(entry, dict):
            _fail(entry_where, f"must be a mapping of block fields, got {entry!r}")
        allowed, required = _op_fields(entry_where, entry.get("type"))
        _check_keys(entry_where, entry, allowed, required)
        values = {}
        for field, value in entry.items():
            if field == "type":
                continue
            options = value if isinstance(value, list) else [value]
            if not options:
                _fail(entry_where, f"field '{field}' is an empty list")
            for option in options:
                _check_op_field(entry_where, field, option)
            values[field] = options
        for combination in itertools.product(*values.values()):
            op = OpChoice(type=entry["type"], **dict(zip(values, combination)))
            if op in ops:
                _fail(entry_where, f"choice '{op.label}' is listed twice")
            ops.append(op)
    return tuple(ops)


@dataclasses.dataclass(frozen=True)
class _Stage:
    where: str
    stride: int
    filters: int
    layers: int
    endpoint: Optional[str]
    ops: Union[str, Tuple[OpChoice, ...]]
    widths: Tuple[WidthChoice, ...]


def _parse_stage(raw: Any, where: str) -> _Stage:
    _check_keys(where, raw, _STAGE_KEYS, ("stride", "filters"))
    try:
        check_number(where, "stride", raw["stride"], int, choices=STRIDES)
        check_number(where, "filters", raw["filters"], int, low=0, low_open=True)
        check_number(where, "layers", raw.get("layers", 1), int, low=1)
    except ArchSpecError as e:
        raise SearchSpaceError(str(e)) from None
    endpoint = raw.get("endpoint")
    if endpoint is not None and endpoint not in ENDPOINT_STRIDES:
        _fail(where, f"field 'endpoint' must be one of {', '.join(ENDPOINT_STRIDES)}, got {endpoint!r}")
    ops = raw.get("ops", DEFAULT_OPS_GROUP)
    ops = ops if isinstance(ops, str) else _parse_ops(ops, f"{where}.ops")
    multipliers = raw.get("filter_multipliers", [1.0])
    if not isinstance(multipliers, list) or not multipliers:
        _fail(where, f"field 'filter_multipliers' must be a non-empty list of numbers, got {multipliers!r}")
    widths: List[WidthChoice] = []
    for m in multipliers:
        try:
            check_number(where, "filter_multipliers", m, float, low=0, low_open=True)
        except ArchSpecError as e:
            raise SearchSpaceError(str(e)) from None
        width = WidthChoice(float(m), round_filters(raw["filters"], m))
        if any(w.filters == width.filters for w in widths):
            _fail(where, f"field 'filter_multipliers': {m:g} gives {width.filters} filters, as an "
                         f"earlier multiplier does (widths are round8(filters * m); choices must differ)")
        widths.append(width)
    return _Stage(where, raw["stride"], raw["filters"], raw.get("layers", 1), endpoint, ops, tuple(widths))


@dataclasses.dataclass(frozen=True)
class _Platform:
    name: str
    where: str
    skeleton: str
    activation: str
    kernels: Optional[Tuple[int, ...]]
    block_fields: Dict[str, Dict[str, Any]]


def _parse_platform(raw: Any, name: str, where: str, skeletons: Dict[str, Any]) -> _Platform:
    _check_keys(where, raw, _PLATFORM_KEYS, ("skeleton", "activation"))
    if raw["skeleton"] not in skeletons:
        _fail(where, f"field 'skeleton': unknown skeleton {raw['skeleton']!r}; defined: {', '.join(skeletons)}")
    if raw["activation"] not in ACTIVATIONS:
        _fail(where, f"field 'activation': unknown activation {raw['activation']!r}; "
                     f"expected one of {', '.join(ACTIVATIONS)}")
    kernels = raw.get("kernels")
    if kernels is not None:
        if not isinstance(kernels, list) or not kernels:
            _fail(where, f"field 'kernels' must be a non-empty list of kernel sizes, got {kernels!r}")
        for k in kernels:
            _check_op_field(where, "kernel", k)
        kernels = tuple(kernels)
    block_fields = raw.get("block_fields") or {}
    if not isinstance(block_fields, dict):
        _fail(where, f"field 'block_fields' must map block types to fields, got {block_fields!r}")
    for block_type, fields in block_fields.items():
        type_where = f"{where}.block_fields.{block_type}"
        allowed, _ = _op_fields(type_where, block_type)
        _check_keys(type_where, fields, allowed[1:])
        for field, value in fields.items():
            _check_op_field(type_where, field, value)
    return _Platform(name, where, raw["skeleton"], raw["activation"], kernels, block_fields)


@dataclasses.dataclass(frozen=True)
class _SpaceFile:
    path: str
    skeletons: Dict[str, List[_Stage]]
    spaces: Dict[str, Dict[str, Any]]        # name -> {"description": str, "ops": {group: ops}}
    platforms: Dict[str, _Platform]


def _named_mapping(data: Dict[str, Any], key: str, path: str) -> Dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict) or not value:
        _fail(path, f"'{key}' must be a non-empty mapping of names, got {value!r}")
    return value


def _read_file(path: str) -> _SpaceFile:
    try:
        data = yaml.safe_load(fileio.read_text(path))
    except OSError as e:
        raise SearchSpaceError(f"{path}: cannot read search-space file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SearchSpaceError(f"{path}: not valid YAML: {e}") from None
    _check_keys(path, data, _FILE_KEYS, ("skeletons", "spaces", "platforms"))
    skeletons = {}
    for name, stages in _named_mapping(data, "skeletons", path).items():
        where = f"{path}: skeletons.{name}"
        if not isinstance(stages, list) or not stages:
            _fail(where, f"must be a non-empty list of stages, got {stages!r}")
        skeletons[name] = [_parse_stage(s, f"{where}[{i}]") for i, s in enumerate(stages)]
        endpoints = [s.endpoint for s in skeletons[name] if s.endpoint]
        for endpoint in set(endpoints):
            if endpoints.count(endpoint) > 1:
                _fail(where, f"endpoint {endpoint} is given to {endpoints.count(endpoint)} stages")
    spaces = {}
    for name, space in _named_mapping(data, "spaces", path).items():
        where = f"{path}: spaces.{name}"
        _check_keys(where, space, _SPACE_KEYS, ("ops",))
        groups = space["ops"]
        if not isinstance(groups, dict) or not groups:
            _fail(where, f"'ops' must map group names (such as {DEFAULT_OPS_GROUP}) to op lists, got {groups!r}")
        spaces[name] = {"description": space.get("description", ""),
                        "ops": {g: _parse_ops(ops, f"{where}.ops.{g}") for g, ops in groups.items()}}
    platforms = {name: _parse_platform(raw, name, f"{path}: platforms.{name}", skeletons)
                 for name, raw in _named_mapping(data, "platforms", path).items()}
    return _SpaceFile(path, skeletons, spaces, platforms)


def _adapt(ops: Tuple[OpChoice, ...], platform: _Platform, where: str) -> Tuple[OpChoice, ...]:
    """Applies a platform: drops ops with other kernels, sets its block fields."""
    kept = [op for op in ops if platform.kernels is None or op.kernel in platform.kernels]
    kept = [dataclasses.replace(op, **platform.block_fields.get(op.type, {})) for op in kept]
    if not kept:
        _fail(where, f"no op choice is left on platform {platform.name} (kernels {list(platform.kernels)})")
    if len(set(kept)) != len(kept):
        _fail(where, f"op choices coincide once the platform's fields are set: {[op.label for op in kept]}")
    return tuple(kept)


# The search space -----------------------------------------------------------------------------------
class SearchSpace:
    """A skeleton x op choices x platform; maps decision indices to ArchSpecs and features."""

    def __init__(self, spaces_file: _SpaceFile, space: str, platform: str, skeleton: Optional[str],
                 source: str):
        path = spaces_file.path
        if space not in spaces_file.spaces:
            _fail(path, f"unknown search space {space!r}; defined: {', '.join(spaces_file.spaces)}")
        if platform not in spaces_file.platforms:
            _fail(path, f"unknown platform {platform!r} (for search space {space}); "
                        f"defined: {', '.join(spaces_file.platforms)}")
        plat = spaces_file.platforms[platform]
        skeleton = skeleton or plat.skeleton
        if skeleton not in spaces_file.skeletons:
            _fail(path, f"unknown skeleton {skeleton!r}; defined: {', '.join(spaces_file.skeletons)}")
        self.name, self.platform, self.skeleton, self.source, self.path = space, platform, skeleton, source, path
        self.description = spaces_file.spaces[space]["description"]
        self.activation = plat.activation
        groups = spaces_file.spaces[space]["ops"]
        self.decisions: List[Decision] = []
        self.layers: List[Layer] = []

        def decide(tag, choices):
            if len(choices) == 1:
                return None
            self.decisions.append(Decision(tag, tuple(choices)))
            return len(self.decisions) - 1

        input_width_decision = None
        for s, stage in enumerate(spaces_file.skeletons[skeleton]):
            if isinstance(stage.ops, str):
                if stage.ops not in groups:
                    _fail(stage.where, f"ops group {stage.ops!r} is not defined in spaces.{space}.ops "
                                       f"(defined: {', '.join(groups)})")
                ops = _adapt(groups[stage.ops], plat, f"{path}: spaces.{space}.ops.{stage.ops}")
            else:
                ops = _adapt(stage.ops, plat, f"{stage.where}.ops")
            width_decision = decide(f"stage{s}/width", stage.widths)
            for j in range(stage.layers):
                index = len(self.layers)
                self.layers.append(Layer(
                    index=index, stage=s, stride=stage.stride if j == 0 else 1, may_be_residual=j > 0,
                    endpoint=stage.endpoint if j == stage.layers - 1 else None, ops=ops,
                    widths=stage.widths, op_decision=decide(f"layer{index}/op", ops),
                    width_decision=width_decision, input_width_decision=input_width_decision))
                input_width_decision = width_decision
        self._groups = [(layer, layer.feature_decisions) for layer in self.layers if layer.feature_decisions]
        self.to_arch_spec([0] * len(self.decisions))  # checks strides and endpoints of the skeleton

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.platform} (skeleton {self.skeleton})"

    @property
    def size(self) -> int:
        """The number of architectures (an exact int)."""
        return math.prod(len(d.choices) for d in self.decisions)

    def sample(self, rng: Union[None, int, np.random.Generator] = None) -> List[int]:
        """Uniformly random choice indices, one per decision."""
        rng = np.random.default_rng(rng)
        return [int(rng.integers(len(d.choices))) for d in self.decisions]

    # The walk ------------------------------------------------------------------------------------
    def _check_indices(self, indices: Sequence[int]) -> List[int]:
        indices = list(indices)
        if len(indices) != len(self.decisions):
            _fail(f"search space {self.tag}", f"expected {len(self.decisions)} choice indices, got {len(indices)}")
        for d, i in zip(self.decisions, indices):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(d.choices):
                _fail(f"search space {self.tag}", f"decision {d.tag}: index must be an int in "
                                                   f"0..{len(d.choices) - 1}, got {i!r}")
        return [int(i) for i in indices]

    def _resolve(self, indices: Sequence[int]):
        """Yields (layer, op, input width, output width, residual) for every layer."""
        indices = self._check_indices(indices)
        pick = lambda d: 0 if d is None else indices[d]  # noqa: E731
        in_width = INPUT_CHANNELS
        for layer in self.layers:
            op = layer.ops[pick(layer.op_decision)]
            out_width = layer.widths[pick(layer.width_decision)].filters
            yield layer, op, in_width, out_width, layer.may_be_residual and op.can_be_residual
            in_width = out_width

    def to_arch_spec(self, indices: Sequence[int], name: Optional[str] = None,
                     description: Optional[str] = None) -> ArchSpec:
        """The validated ArchSpec of the chosen architecture."""
        indices = self._check_indices(indices)
        blocks = [op.block(layer.stride, out_w, residual).to_dict()
                  for layer, op, _, out_w, residual in self._resolve(indices)]
        data = {
            "name": name or f"search_{self.name}_{self.platform}",
            "description": description if description is not None else
            f"search space {self.name}/{self.platform}, skeleton {self.skeleton}, indices {indices}",
            "activation": self.activation,
            "blocks": blocks,
            "endpoints": {layer.endpoint: layer.index for layer in self.layers if layer.endpoint},
        }
        try:
            return ArchSpec.from_dict(data, source=f"{self.path}: search space {self.tag}")
        except ArchSpecError as e:
            raise SearchSpaceError(str(e)) from None

    def indices_of(self, arch: ArchSpec) -> List[int]:
        """The choice indices of `arch`; SearchSpaceError saying why when it is not in the space."""
        where = f"architecture {arch.name!r} is not in search space {self.tag}"
        if len(arch.blocks) != len(self.layers):
            _fail(where, f"it has {len(arch.blocks)} blocks, the skeleton has {len(self.layers)}")
        if arch.activation != self.activation:
            _fail(where, f"its activation is {arch.activation}, the platform's is {self.activation}")
        if arch.se_gate != "sigmoid" or arch.se_activation:
            _fail(where, f"its SE gate/activation ({arch.se_gate}, {arch.se_activation}) are not the "
                         f"defaults (sigmoid, the block's activation)")
        endpoints = {k: e.to_yaml() for k, e in arch.endpoints.items()}
        expected = {layer.endpoint: layer.index for layer in self.layers if layer.endpoint}
        if endpoints != expected:
            _fail(where, f"its endpoints are {endpoints}, the skeleton's are {expected}")
        indices: List[Optional[int]] = [None] * len(self.decisions)

        def assign(decision, value, block_index, what):
            if decision is None:
                return
            if indices[decision] is not None and indices[decision] != value:
                _fail(where, f"block {block_index} {what} disagrees with an earlier block on decision "
                             f"{self.decisions[decision].tag}")
            indices[decision] = value

        for layer, block in zip(self.layers, arch.blocks):
            at = f"block {layer.index} ({block.type})"
            if block.stride != layer.stride:
                _fail(where, f"{at} has stride {block.stride}, the skeleton's layer has {layer.stride}")
            widths = [w.filters for w in layer.widths]
            if block.filters not in widths:
                _fail(where, f"{at} has {block.filters} filters; the skeleton allows {widths}")
            assign(layer.width_decision, widths.index(block.filters), layer.index, f"width {block.filters}")
            op = OpChoice.of_block(block)
            if op not in layer.ops:
                _fail(where, f"{at} is '{op.label}', not one of the layer's op choices: "
                             f"{', '.join(o.label for o in layer.ops)}")
            assign(layer.op_decision, layer.ops.index(op), layer.index, f"op {op.label}")
            residual = layer.may_be_residual and op.can_be_residual
            if block.residual != residual:
                _fail(where, f"{at} has residual {str(block.residual).lower()}; in the space it is "
                             f"{str(residual).lower()} (a stage's first layer has no shortcut)")
        rebuilt = self.to_arch_spec(indices)
        assert rebuilt.blocks == arch.blocks, "indices_of is not the inverse of to_arch_spec"
        return indices

    def describe(self, indices: Sequence[int]) -> str:
        """One readable line per layer: block, op, stride, widths, shortcut, endpoint, decisions."""
        lines = []
        for layer, op, in_w, out_w, residual in self._resolve(indices):
            tags = [self.decisions[d].tag for d in (layer.width_decision, layer.op_decision) if d is not None]
            lines.append(f"{layer.index:>3}  {op.label:<26} s{layer.stride}  {in_w:>4} -> {out_w:<4}"
                         f"{' residual' if residual else '         '}  {layer.endpoint or '  '}"
                         f"  {', '.join(tags) if tags else '(fixed)'}")
        return "\n".join(lines)

    # Serialisation -------------------------------------------------------------------------------
    def to_json(self, indices: Sequence[int]) -> str:
        """The chosen architecture as JSON: space, platform, skeleton, source, indices, labels."""
        indices = self._check_indices(indices)
        return json.dumps({
            "space": self.name, "platform": self.platform, "skeleton": self.skeleton, "source": self.source,
            "indices": indices,
            "choices": {d.tag: d.choices[i].label for d, i in zip(self.decisions, indices)},
        }, indent=2)

    # Cost-model features -------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        return sum(self._group_size(decisions) for _, decisions in self._groups)

    def _group_size(self, decisions: Tuple[int, ...]) -> int:
        return math.prod(len(self.decisions[d].choices) for d in decisions)

    def features(self, indices: Sequence[int]) -> np.ndarray:
        """0/1 vector: per layer group, the one-hot of the joint choice of its decisions."""
        indices = self._check_indices(indices)
        parts = []
        for _, decisions in self._groups:
            one_hot = np.zeros(self._group_size(decisions))
            position = 0
            for d in decisions:  # mixed radix, first decision most significant (= np.kron order)
                position = position * len(self.decisions[d].choices) + indices[d]
            one_hot[position] = 1.0
            parts.append(one_hot)
        return np.concatenate(parts) if parts else np.zeros(0)

    def expected_features(self, probabilities: Sequence[Sequence[float]]) -> np.ndarray:
        """E[features] under independent per-decision categoricals: Kronecker products of probabilities."""
        if len(probabilities) != len(self.decisions):
            _fail(f"search space {self.tag}", f"expected {len(self.decisions)} probability vectors, "
                                               f"got {len(probabilities)}")
        probs = []
        for d, p in zip(self.decisions, probabilities):
            p = np.asarray(p, dtype=np.float64)
            if p.shape != (len(d.choices),) or np.any(p < 0) or abs(p.sum() - 1) > 1e-6:
                _fail(f"search space {self.tag}", f"decision {d.tag}: probabilities must be "
                                                   f"{len(d.choices)} non-negative numbers summing to 1, got {p}")
            probs.append(p)
        parts = [functools.reduce(np.kron, [probs[d] for d in decisions]) for _, decisions in self._groups]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _feature_settings(self):
        """Yields (layer, {"in"/"out"/"op": value}) per feature, in `features` order."""
        for layer, decisions in self._groups:
            roles = {}
            for role, d in (("in", layer.input_width_decision), ("out", layer.width_decision),
                            ("op", layer.op_decision)):
                if d is not None:
                    roles[d] = f"{roles[d]}={role}" if d in roles else role
            for combination in itertools.product(*(self.decisions[d].choices for d in decisions)):
                yield layer, {roles[d]: (c.filters if isinstance(c, WidthChoice) else c.label)
                              for d, c in zip(decisions, combination)}

    def feature_names(self) -> List[str]:
        """A readable name per feature, e.g. `layer7 in=40 out=72 op=ibn k3 e4`."""
        return [f"layer{layer.index} " + " ".join(f"{role}={value}" for role, value in setting.items())
                for layer, setting in self._feature_settings()]

    def feature_pools(self) -> Tuple[np.ndarray, List[str]]:
        """(membership [F, K], pool names): features that share a configuration across layers.

        A feature belongs to two pools: the same setting (op, widths) in the layers of its stage that
        have the same shortcut status (same resolution, same block), and the same op anywhere in the
        backbone. Cost models use them to shrink each layer's cost towards what its neighbours share.
        """
        keys = []
        for layer, setting in self._feature_settings():
            shared = " ".join(f"{role}={value}" for role, value in setting.items())
            op = setting.get("op", layer.ops[0].label)
            keys.append((f"stage{layer.stage}{' inner' if layer.may_be_residual else ''} {shared}",
                         f"any layer op={op}"))
        names = sorted({k for pair in keys for k in pair})
        column = {name: i for i, name in enumerate(names)}
        membership = np.zeros((len(keys), len(names)))
        for row, pair in enumerate(keys):
            for key in pair:
                membership[row, column[key]] = 1.0
        return membership, names


# Loading ------------------------------------------------------------------------------------------
def _shipped_files() -> List[str]:
    if not fileio.isdir(SEARCH_SPACES_DIR):
        return []
    return sorted(os.path.join(SEARCH_SPACES_DIR, f) for f in fileio.listdir(SEARCH_SPACES_DIR)
                  if f.endswith((".yaml", ".yml")))


def available_spaces() -> List[str]:
    """Names of the search spaces under `configs/search_spaces/`."""
    return sorted({name for path in _shipped_files() for name in _read_file(path).spaces})


def load_space(name_or_path: str, platform: str, skeleton: Optional[str] = None,
               space: Optional[str] = None) -> SearchSpace:
    """A search space by name (from `configs/search_spaces/`) or from a YAML file.

    `platform` selects the adaptation (and its default skeleton); `skeleton` overrides the skeleton;
    `space` picks a space in a file that defines several.
    """
    if fileio.exists(name_or_path) or name_or_path.endswith((".yaml", ".yml")):
        spaces_file = _read_file(name_or_path)
        if space is None:
            if len(spaces_file.spaces) != 1:
                _fail(name_or_path, f"defines several search spaces ({', '.join(spaces_file.spaces)}); "
                                    f"say which one with space=NAME")
            space = next(iter(spaces_file.spaces))
        return SearchSpace(spaces_file, space, platform, skeleton, source=name_or_path)
    if space is not None and space != name_or_path:
        raise SearchSpaceError(f"space={space!r} contradicts the space name {name_or_path!r}")
    files = [f for f in map(_read_file, _shipped_files()) if name_or_path in f.spaces]
    if not files:
        raise SearchSpaceError(f"unknown search space {name_or_path!r}: not a file, and not one of "
                               f"{', '.join(available_spaces()) or '(no files in ' + SEARCH_SPACES_DIR + ')'}")
    if len(files) > 1:
        raise SearchSpaceError(f"search space {name_or_path!r} is defined in several files: "
                               f"{', '.join(f.path for f in files)}; load it by path")
    return SearchSpace(files[0], name_or_path, platform, skeleton, source=name_or_path)


def from_json(text: Union[str, Dict[str, Any]]) -> Tuple[SearchSpace, List[int]]:
    """Inverse of `SearchSpace.to_json`; fails when the space no longer has the recorded choices."""
    data = json.loads(text) if isinstance(text, str) else text
    _check_keys("search-space choice", data, ("space", "platform", "skeleton", "source", "indices", "choices"),
                ("space", "platform", "skeleton", "source", "indices"))
    search_space = load_space(data["source"], data["platform"], skeleton=data["skeleton"], space=data["space"])
    indices = search_space._check_indices(data["indices"])
    for d, i in zip(search_space.decisions, indices):
        recorded = (data.get("choices") or {}).get(d.tag, d.choices[i].label)
        if recorded != d.choices[i].label:
            _fail(f"search space {search_space.tag}", f"decision {d.tag} was '{recorded}' when recorded, "
                                                      f"index {i} is now '{d.choices[i].label}'")
    return search_space, indices
