"""Search-space files: reading and validating the YAML that defines skeletons, op choices and platforms.

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

Every value is checked as the ArchSpec checks it, and every error names the file and the field.
`mobiledets_tf.search.space` combines one space, platform and skeleton into a `SearchSpace`.
"""
import dataclasses
import itertools
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from mobiledets_tf import fileio
from mobiledets_tf.arch.spec import (BLOCK_TYPES, ENDPOINT_STRIDES, KERNELS, OPTIONAL_FIELDS, REQUIRED_FIELDS,
                                     STRIDES, ArchSpecError, check_number)
from mobiledets_tf.layers.block_rules import ACTIVATIONS, round_filters
from mobiledets_tf.search.choices import OpChoice, SearchSpaceError, WidthChoice, fail

SEARCH_SPACES_DIR = os.environ.get(
    "MOBILEDETS_SEARCH_SPACES_DIR",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                 "configs", "search_spaces"))
DEFAULT_OPS_GROUP = "body"

_FILE_KEYS = ("description", "skeletons", "spaces", "platforms")
_STAGE_KEYS = ("stride", "filters", "layers", "endpoint", "ops", "filter_multipliers")
_SPACE_KEYS = ("description", "ops")
_PLATFORM_KEYS = ("description", "skeleton", "activation", "kernels", "block_fields")
_LAYOUT_FIELDS = ("stride", "filters", "residual")  # set by the skeleton, never by an op choice


def check_keys(where: str, raw: Any, allowed: Sequence[str], required: Sequence[str] = ()) -> None:
    if not isinstance(raw, dict):
        fail(where, f"must be a mapping with keys among {', '.join(allowed)}, got {raw!r}")
    for key in raw:
        if key not in allowed:
            fail(where, f"unknown key {key!r}; allowed: {', '.join(allowed)}")
    for key in required:
        if key not in raw:
            fail(where, f"missing field '{key}'")


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
                fail(where, "field 'se' is a bottleneck ratio and must be < 1")
        elif field == "activation" and value not in ACTIVATIONS:
            fail(where, f"unknown activation {value!r}; expected one of {', '.join(ACTIVATIONS)}")
    except ArchSpecError as e:
        raise SearchSpaceError(str(e)) from None


def _op_fields(where: str, block_type: Any) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(allowed, required) op fields of a block type."""
    if block_type not in BLOCK_TYPES:
        fail(where, f"unknown block type {block_type!r}; expected one of {', '.join(BLOCK_TYPES)}")
    required = tuple(f for f in REQUIRED_FIELDS[block_type] if f not in _LAYOUT_FIELDS)
    optional = tuple(f for f in OPTIONAL_FIELDS[block_type] if f not in _LAYOUT_FIELDS)
    return ("type",) + required + optional, required


def _parse_ops(raw: Any, where: str) -> Tuple[OpChoice, ...]:
    """A list of op entries (list values expand to their cross product) -> distinct OpChoices."""
    if not isinstance(raw, list) or not raw:
        fail(where, f"must be a non-empty list of op choices, got {raw!r}")
    ops: List[OpChoice] = []
    for i, entry in enumerate(raw):
        entry_where = f"{where}[{i}]"
        if not isinstance(entry, dict):
            fail(entry_where, f"must be a mapping of block fields, got {entry!r}")
        allowed, required = _op_fields(entry_where, entry.get("type"))
        check_keys(entry_where, entry, allowed, required)
        values = {}
        for field, value in entry.items():
            if field == "type":
                continue
            options = value if isinstance(value, list) else [value]
            if not options:
                fail(entry_where, f"field '{field}' is an empty list")
            for option in options:
                _check_op_field(entry_where, field, option)
            values[field] = options
        for combination in itertools.product(*values.values()):
            op = OpChoice(type=entry["type"], **dict(zip(values, combination)))
            if op in ops:
                fail(entry_where, f"choice '{op.label}' is listed twice")
            ops.append(op)
    return tuple(ops)


@dataclasses.dataclass(frozen=True)
class Stage:
    where: str
    stride: int
    filters: int
    layers: int
    endpoint: Optional[str]
    ops: Union[str, Tuple[OpChoice, ...]]
    widths: Tuple[WidthChoice, ...]


def _parse_stage(raw: Any, where: str) -> Stage:
    check_keys(where, raw, _STAGE_KEYS, ("stride", "filters"))
    try:
        check_number(where, "stride", raw["stride"], int, choices=STRIDES)
        check_number(where, "filters", raw["filters"], int, low=0, low_open=True)
        check_number(where, "layers", raw.get("layers", 1), int, low=1)
    except ArchSpecError as e:
        raise SearchSpaceError(str(e)) from None
    endpoint = raw.get("endpoint")
    if endpoint is not None and endpoint not in ENDPOINT_STRIDES:
        fail(where, f"field 'endpoint' must be one of {', '.join(ENDPOINT_STRIDES)}, got {endpoint!r}")
    ops = raw.get("ops", DEFAULT_OPS_GROUP)
    ops = ops if isinstance(ops, str) else _parse_ops(ops, f"{where}.ops")
    multipliers = raw.get("filter_multipliers", [1.0])
    if not isinstance(multipliers, list) or not multipliers:
        fail(where, f"field 'filter_multipliers' must be a non-empty list of numbers, got {multipliers!r}")
    widths: List[WidthChoice] = []
    for m in multipliers:
        try:
            check_number(where, "filter_multipliers", m, float, low=0, low_open=True)
        except ArchSpecError as e:
            raise SearchSpaceError(str(e)) from None
        width = WidthChoice(float(m), round_filters(raw["filters"], m))
        if any(w.filters == width.filters for w in widths):
            fail(where, f"field 'filter_multipliers': {m:g} gives {width.filters} filters, as an "
                        f"earlier multiplier does (widths are round8(filters * m); choices must differ)")
        widths.append(width)
    return Stage(where, raw["stride"], raw["filters"], raw.get("layers", 1), endpoint, ops, tuple(widths))


@dataclasses.dataclass(frozen=True)
class Platform:
    name: str
    where: str
    skeleton: str
    activation: str
    kernels: Optional[Tuple[int, ...]]
    block_fields: Dict[str, Dict[str, Any]]


def _parse_platform(raw: Any, name: str, where: str, skeletons: Dict[str, Any]) -> Platform:
    check_keys(where, raw, _PLATFORM_KEYS, ("skeleton", "activation"))
    if raw["skeleton"] not in skeletons:
        fail(where, f"field 'skeleton': unknown skeleton {raw['skeleton']!r}; defined: {', '.join(skeletons)}")
    if raw["activation"] not in ACTIVATIONS:
        fail(where, f"field 'activation': unknown activation {raw['activation']!r}; "
                    f"expected one of {', '.join(ACTIVATIONS)}")
    kernels = raw.get("kernels")
    if kernels is not None:
        if not isinstance(kernels, list) or not kernels:
            fail(where, f"field 'kernels' must be a non-empty list of kernel sizes, got {kernels!r}")
        for k in kernels:
            _check_op_field(where, "kernel", k)
        kernels = tuple(kernels)
    block_fields = raw.get("block_fields") or {}
    if not isinstance(block_fields, dict):
        fail(where, f"field 'block_fields' must map block types to fields, got {block_fields!r}")
    for block_type, fields in block_fields.items():
        type_where = f"{where}.block_fields.{block_type}"
        allowed, _ = _op_fields(type_where, block_type)
        check_keys(type_where, fields, allowed[1:])
        for field, value in fields.items():
            _check_op_field(type_where, field, value)
    return Platform(name, where, raw["skeleton"], raw["activation"], kernels, block_fields)


@dataclasses.dataclass(frozen=True)
class SpaceFile:
    path: str
    skeletons: Dict[str, List[Stage]]
    spaces: Dict[str, Dict[str, Any]]        # name -> {"description": str, "ops": {group: ops}}
    platforms: Dict[str, Platform]


def _named_mapping(data: Dict[str, Any], key: str, path: str) -> Dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict) or not value:
        fail(path, f"'{key}' must be a non-empty mapping of names, got {value!r}")
    return value


def read_space_file(path: str) -> SpaceFile:
    try:
        data = yaml.safe_load(fileio.read_text(path))
    except OSError as e:
        raise SearchSpaceError(f"{path}: cannot read search-space file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SearchSpaceError(f"{path}: not valid YAML: {e}") from None
    check_keys(path, data, _FILE_KEYS, ("skeletons", "spaces", "platforms"))
    skeletons = {}
    for name, stages in _named_mapping(data, "skeletons", path).items():
        where = f"{path}: skeletons.{name}"
        if not isinstance(stages, list) or not stages:
            fail(where, f"must be a non-empty list of stages, got {stages!r}")
        skeletons[name] = [_parse_stage(s, f"{where}[{i}]") for i, s in enumerate(stages)]
        endpoints = [s.endpoint for s in skeletons[name] if s.endpoint]
        for endpoint in set(endpoints):
            if endpoints.count(endpoint) > 1:
                fail(where, f"endpoint {endpoint} is given to {endpoints.count(endpoint)} stages")
    spaces = {}
    for name, space in _named_mapping(data, "spaces", path).items():
        where = f"{path}: spaces.{name}"
        check_keys(where, space, _SPACE_KEYS, ("ops",))
        groups = space["ops"]
        if not isinstance(groups, dict) or not groups:
            fail(where, f"'ops' must map group names (such as {DEFAULT_OPS_GROUP}) to op lists, got {groups!r}")
        spaces[name] = {"description": space.get("description", ""),
                        "ops": {g: _parse_ops(ops, f"{where}.ops.{g}") for g, ops in groups.items()}}
    platforms = {name: _parse_platform(raw, name, f"{path}: platforms.{name}", skeletons)
                 for name, raw in _named_mapping(data, "platforms", path).items()}
    return SpaceFile(path, skeletons, spaces, platforms)


def adapt_ops(ops: Tuple[OpChoice, ...], platform: Platform, where: str) -> Tuple[OpChoice, ...]:
    """Applies a platform: drops ops with other kernels, sets its block fields."""
    kept = [op for op in ops if platform.kernels is None or op.kernel in platform.kernels]
    kept = [dataclasses.replace(op, **platform.block_fields.get(op.type, {})) for op in kept]
    if not kept:
        fail(where, f"no op choice is left on platform {platform.name} (kernels {list(platform.kernels)})")
    if len(set(kept)) != len(kept):
        fail(where, f"op choices coincide once the platform's fields are set: {[op.label for op in kept]}")
    return tuple(kept)


def shipped_space_files() -> List[str]:
    if not fileio.isdir(SEARCH_SPACES_DIR):
        return []
    return sorted(os.path.join(SEARCH_SPACES_DIR, f) for f in fileio.listdir(SEARCH_SPACES_DIR)
                  if f.endswith((".yaml", ".yml")))


def available_spaces() -> List[str]:
    """Names of the search spaces under `configs/search_spaces/`."""
    return sorted({name for path in shipped_space_files() for name in read_space_file(path).spaces})

