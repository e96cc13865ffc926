"""ArchSpec: an ordered list of blocks plus named feature endpoints, validated on load.

An ArchSpec is plain data (YAML or JSON). Each block is one line in its file, fields named:

    - {type: ibn, kernel: 5, stride: 2, filters: 72, expansion: 8, se: 0.25}

Block types: `conv` (kxk conv + BN + act), `ibn` (inverted bottleneck; expansion 1 = no expand conv),
`fused` (fused inverted bottleneck), `tucker` (Tucker convolution). Endpoints map C1..C5 to a block
index, or to `"INDEX/expansion"` for the activated expansion output of an `ibn` or `fused` block (as
the SSDLite MobileNet baselines use). C4 (stride 16) and C5 (stride 32) are required: they feed the
SSDLite head. Spec-level fields: `activation` (of every block without its own), `se_gate`,
`se_activation`, `se_width` (the squeeze-and-excite width rule, `block_rules.SE_WIDTH_RULES`) and
`batch_norm_epsilon`. Validation errors name the source, the block and the field.
"""
import dataclasses
import json
from typing import Any, Dict, List, Optional, Union

import yaml

from mobiledets_tf import fileio

from mobiledets_tf.layers.block_rules import (ACTIVATIONS, BLOCK_TYPES, DEFAULT_SE_WIDTH, SE_GATES, SE_WIDTH_RULES,
                                              has_expansion_conv)

KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)
ENDPOINT_STRIDES = {"C1": 2, "C2": 4, "C3": 8, "C4": 16, "C5": 32}
REQUIRED_ENDPOINTS = ("C4", "C5")
EXPANSION_TENSOR = "expansion"

REQUIRED_FIELDS = {
    "conv": ("kernel", "stride", "filters"),
    "ibn": ("kernel", "stride", "filters", "expansion"),
    "fused": ("kernel", "stride", "filters", "expansion"),
    "tucker": ("kernel", "stride", "filters", "input_rank_ratio", "output_rank_ratio"),
}
OPTIONAL_FIELDS = {
    "conv": ("activation",),
    "ibn": ("se", "residual", "activation"),
    "fused": ("se", "residual", "activation"),
    "tucker": ("residual", "activation"),
}
_SPEC_KEYS = ("name", "description", "activation", "se_gate", "se_activation", "se_width",
              "batch_norm_epsilon", "blocks", "endpoints")
DEFAULT_BATCH_NORM_EPSILON = 0.01  # the MobileDets backbones' (TF-slim MobileNets use 0.001)


class ArchSpecError(ValueError):
    """An ArchSpec that cannot describe a valid backbone; the message names where and why."""


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    type: str
    kernel: int
    stride: int
    filters: int
    expansion: Optional[float] = None
    input_rank_ratio: Optional[float] = None
    output_rank_ratio: Optional[float] = None
    se: float = 0.0
    residual: bool = False
    activation: Optional[str] = None  # None: the spec's activation

    def to_dict(self) -> Dict[str, Any]:
        fields = ("type",) + REQUIRED_FIELDS[self.type] + OPTIONAL_FIELDS[self.type]
        defaults = {"se": 0.0, "residual": False, "activation": None}
        return {f: getattr(self, f) for f in fields
                if f not in defaults or getattr(self, f) != defaults[f]}


@dataclasses.dataclass(frozen=True)
class Endpoint:
    block: int
    tensor: str = "output"  # or "expansion"

    def to_yaml(self) -> Union[int, str]:
        return self.block if self.tensor == "output" else f"{self.block}/{self.tensor}"


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    name: str
    blocks: List[BlockSpec]
    endpoints: Dict[str, Endpoint]
    activation: str = "relu6"
    se_gate: str = "sigmoid"
    se_activation: Optional[str] = None  # None: each block's own activation
    se_width: str = DEFAULT_SE_WIDTH  # squeeze-and-excite width rule (block_rules.SE_WIDTH_RULES)
    description: str = ""
    batch_norm_epsilon: float = DEFAULT_BATCH_NORM_EPSILON  # of every backbone BatchNorm

    def block_activation(self, block: BlockSpec) -> str:
        return block.activation or self.activation

    def strides(self) -> List[int]:
        """Cumulative output stride after each block."""
        result, total = [], 1
        for block in self.blocks:
            total *= block.stride
            result.append(total)
        return result

    # Serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {"name": self.name}
        if self.description:
            data["description"] = self.description
        data["activation"] = self.activation
        if self.se_gate != "sigmoid":
            data["se_gate"] = self.se_gate
        if self.se_activation:
            data["se_activation"] = self.se_activation
        if self.se_width != DEFAULT_SE_WIDTH:
            data["se_width"] = self.se_width
        if self.batch_norm_epsilon != DEFAULT_BATCH_NORM_EPSILON:
            data["batch_norm_epsilon"] = self.batch_norm_epsilon
        data["blocks"] = [b.to_dict() for b in self.blocks]
        data["endpoints"] = {k: e.to_yaml() for k, e in self.endpoints.items()}
        return data

    def to_yaml(self) -> str:
        # Flow style for scalar-only mappings: one block per line.
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str) -> None:
        """Writes YAML (or JSON for a .json path) atomically."""
        fileio.write_text_atomically(path, self.to_json() if path.endswith(".json") else self.to_yaml())

    @classmethod
    def load(cls, path: str) -> "ArchSpec":
        try:
            text = fileio.read_text(path)
        except OSError as e:
            raise ArchSpecError(f"{path}: cannot read architecture file: {e.strerror}") from e
        try:
            data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            raise ArchSpecError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {e}") from e
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> "ArchSpec":
        return _parse_spec(data, source)


# Parsing and validation ------------------------------------------------------------------------
def _fail(where: str, message: str):
    raise ArchSpecError(f"{where}: {message}")


def check_number(where, field, value, kind, low=None, high=None, low_open=False, choices=None):
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        _fail(where, f"field '{field}' must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if choices is not None and value not in choices:
        _fail(where, f"field '{field}' must be one of {', '.join(map(str, choices))}, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        _fail(where, f"field '{field}' must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        _fail(where, f"field '{field}' must be <= {high}, got {value}")


def _parse_block(raw: Any, index: int, source: str) -> BlockSpec:
    where = f"{source}: block {index}"
    if not isinstance(raw, dict):
        _fail(where, f"must be a mapping of fields, got {raw!r}")
    block_type = raw.get("type")
    if block_type not in BLOCK_TYPES:
        _fail(where, f"unknown block type {block_type!r}; expected one of {', '.join(BLOCK_TYPES)}")
    where = f"{where} ({block_type})"
    allowed = ("type",) + REQUIRED_FIELDS[block_type] + OPTIONAL_FIELDS[block_type]
    for key in raw:
        if key not in allowed:
            _fail(where, f"unknown field {key!r} for a {block_type} block; allowed: {', '.join(allowed)}")
    for key in REQUIRED_FIELDS[block_type]:
        if key not in raw:
            _fail(where, f"missing field '{key}'")
    check_number(where, "kernel", raw["kernel"], int, choices=KERNELS)
    check_number(where, "stride", raw["stride"], int, choices=STRIDES)
    check_number(where, "filters", raw["filters"], int, low=0, low_open=True)
    if "expansion" in raw:
        check_number(where, "expansion", raw["expansion"], float, low=0, low_open=True)
    for key in ("input_rank_ratio", "output_rank_ratio"):
        if key in raw:
            check_number(where, key, raw[key], float, low=0, low_open=True, high=1)
    if "se" in raw:
        check_number(where, "se", raw["se"], float, low=0, high=1)
        if raw["se"] == 1:
            _fail(where, "field 'se' is a bottleneck ratio and must be < 1")
    if "residual" in raw and not isinstance(raw["residual"], bool):
        _fail(where, f"field 'residual' must be true or false, got {raw['residual']!r}")
    if raw.get("activation") is not None and raw["activation"] not in ACTIVATIONS:
        _fail(where, f"unknown activation {raw['activation']!r}; expected one of {', '.join(ACTIVATIONS)}")
    return BlockSpec(**raw)


def _parse_endpoint(name: str, raw: Any, blocks: List[BlockSpec], source: str) -> Endpoint:
    where = f"{source}: endpoint {name}"
    tensor = "output"
    if isinstance(raw, str) and "/" in raw:
        index_text, tensor = raw.split("/", 1)
        if tensor != EXPANSION_TENSOR:
            _fail(where, f"unknown tensor {tensor!r} in {raw!r}; only '{EXPANSION_TENSOR}' can be named")
        raw = int(index_text) if index_text.strip().isdigit() else index_text
    if isinstance(raw, bool) or not isinstance(raw, int):
        _fail(where, f"must be a block index or 'INDEX/expansion', got {raw!r}")
    if not 0 <= raw < len(blocks):
        _fail(where, f"block index {raw} is out of range (the spec has blocks 0..{len(blocks) - 1})")
    block = blocks[raw]
    if tensor == EXPANSION_TENSOR and not (block.type in ("ibn", "fused") and has_expansion_conv(block.expansion)):
        _fail(where, f"block {raw} ({block.type}) has no expansion output to use as an endpoint")
    return Endpoint(raw, tensor)


def endpoint_stride(spec_strides: List[int], blocks: List[BlockSpec], endpoint: Endpoint) -> int:
    """Output stride of an endpoint tensor (an IBN's expansion precedes its strided depthwise)."""
    stride = spec_strides[endpoint.block]
    block = blocks[endpoint.block]
    if endpoint.tensor == EXPANSION_TENSOR and block.type == "ibn":
        stride //= block.stride
    return stride


def _parse_spec(data: Any, source: str) -> ArchSpec:
    if not isinstance(data, dict):
        _fail(source, f"an architecture must be a mapping with 'name', 'blocks' and 'endpoints', got {type(data).__name__}")
    for key in data:
        if key not in _SPEC_KEYS:
            _fail(source, f"unknown key {key!r}; allowed: {', '.join(_SPEC_KEYS)}")
    for key in ("name", "blocks", "endpoints"):
        if key not in data:
            _fail(source, f"missing key '{key}'")
    if not isinstance(data["name"], str) or not data["name"]:
        _fail(source, f"'name' must be a non-empty string, got {data['name']!r}")
    for key, choices in (("activation", ACTIVATIONS), ("se_activation", ACTIVATIONS), ("se_gate", SE_GATES),
                         ("se_width", SE_WIDTH_RULES)):
        if data.get(key) is not None and data[key] not in choices:
            _fail(source, f"unknown {key} {data[key]!r}; expected one of {', '.join(choices)}")
    if "batch_norm_epsilon" in data:
        check_number(source, "batch_norm_epsilon", data["batch_norm_epsilon"], float, low=0, low_open=True)
    raw_blocks = data["blocks"]
    if not isinstance(raw_blocks, list) or not raw_blocks:
        _fail(source, "'blocks' must be a non-empty list")
    blocks = [_parse_block(raw, i, source) for i, raw in enumerate(raw_blocks)]

    in_channels = 3
    for i, block in enumerate(blocks):
        if block.residual and (block.stride != 1 or block.filters != in_channels):
            _fail(f"{source}: block {i} ({block.type})",
                  f"field 'residual' is true but the block changes shape (stride {block.stride}, "
                  f"{in_channels}->{block.filters} channels); a shortcut needs stride 1 and equal widths")
        in_channels = block.filters

    raw_endpoints = data["endpoints"]
    if not isinstance(raw_endpoints, dict):
        _fail(source, "'endpoints' must be a mapping such as {C4: 14, C5: 19}")
    for name in raw_endpoints:
        if name not in ENDPOINT_STRIDES:
            _fail(source, f"unknown endpoint {name!r}; expected names among {', '.join(ENDPOINT_STRIDES)}")
    for name in REQUIRED_ENDPOINTS:
        if name not in raw_endpoints:
            _fail(source, f"missing endpoint {name} (stride {ENDPOINT_STRIDES[name]}): the SSDLite head needs C4 and C5")
    endpoints = {name: _parse_endpoint(name, raw, blocks, source) for name, raw in raw_endpoints.items()}
    strides = ArchSpec(name="", blocks=blocks, endpoints={}).strides()
    for name, endpoint in endpoints.items():
        actual = endpoint_stride(strides, blocks, endpoint)
        if actual != ENDPOINT_STRIDES[name]:
            _fail(f"{source}: endpoint {name}",
                  f"must be at stride {ENDPOINT_STRIDES[name]}, but block {endpoint.block}'s "
                  f"{endpoint.tensor} is at stride {actual} (check the blocks' 'stride' fields)")
    if strides[-1] > 32 or max(strides) > 32:
        _fail(source, f"the blocks reach stride {max(strides)}; a backbone ends at stride 32")
    return ArchSpec(name=data["name"], blocks=blocks, endpoints=endpoints,
                    activation=data.get("activation") or "relu6",
                    se_gate=data.get("se_gate") or "sigmoid",
                    se_activation=data.get("se_activation"),
                    se_width=data.get("se_width") or DEFAULT_SE_WIDTH,
                    description=data.get("description") or "",
                    batch_norm_epsilon=float(data.get("batch_norm_epsilon", DEFAULT_BATCH_NORM_EPSILON)))
