"""A search space: one skeleton x op choices x platform, mapping vectors of choice indices to ArchSpecs.

`load_space(space, platform)` combines one space, platform and skeleton of a search-space file
(format and validation: `mobiledets_tf.search.space_file`) into a `SearchSpace`, whose `decisions`
are the TuNAS `OneOf(choices, tag)` leaves in order: per stage with several widths a `stageS/width`
decision, then per layer with several op choices a `layerN/op` decision (N is the ArchSpec block
index). Layers with one possible op are fixed. One walk over the layers (`SearchSpace.walk`) turns
an index vector into blocks; the ArchSpec, its inverse's check, the description and the cost-model
features (`space.cost_features`, `mobiledets_tf.search.cost_features`) all use it.

Default spaces (`configs/search_spaces/mobiledets.yaml`): the paper's IBN, IBN+Fused and
IBN+Fused+Tucker spaces (reference section 7) on four platforms. Each platform searches on the
skeleton of its own published MobileDet (stage strides, base widths, endpoints and shortcut
positions exactly as in the reference tables), with the published widths fixed. Hence exactly:
MobileDet-CPU is in ibn/cpu, ibn_fused/cpu and ibn_fused_tucker/cpu; MobileDet-EdgeTPU, -DSP and
-GPU are in ibn_fused_tucker on their own platform (they use fused and Tucker blocks). Another
skeleton of the file can be chosen with `load_space(..., skeleton=NAME)`.

Plain data: no TensorFlow.
"""
import json
import math
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from mobiledets_tf import fileio
from mobiledets_tf.arch.spec import ArchSpec, ArchSpecError
from mobiledets_tf.layers.block_rules import DEFAULT_SE_WIDTH
from mobiledets_tf.search.choices import Decision, Layer, OpChoice, SearchSpaceError, fail  # noqa: F401
from mobiledets_tf.search.cost_features import CostFeatures
from mobiledets_tf.search.space_file import (SEARCH_SPACES_DIR, SpaceFile, adapt_ops, available_spaces,  # noqa: F401
                                             check_keys, read_space_file, shipped_space_files)

INPUT_CHANNELS = 3


class LayerChoice(NamedTuple):
    """One layer of a chosen architecture, as the walk yields it."""
    layer: Layer
    op: OpChoice
    in_width: int
    out_width: int
    residual: bool
    digits: Tuple[int, ...]    # the chosen index of each of `layer.feature_decisions`


class SearchSpace:
    """A skeleton x op choices x platform; maps decision indices to ArchSpecs (features: `cost_features`)."""

    def __init__(self, spaces_file: SpaceFile, space: str, platform: str, skeleton: Optional[str],
                 source: str):
        path = spaces_file.path
        if space not in spaces_file.spaces:
            fail(path, f"unknown search space {space!r}; defined: {', '.join(spaces_file.spaces)}")
        if platform not in spaces_file.platforms:
            fail(path, f"unknown platform {platform!r} (for search space {space}); "
                       f"defined: {', '.join(spaces_file.platforms)}")
        plat = spaces_file.platforms[platform]
        skeleton = skeleton or plat.skeleton
        if skeleton not in spaces_file.skeletons:
            fail(path, f"unknown skeleton {skeleton!r}; defined: {', '.join(spaces_file.skeletons)}")
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
                    fail(stage.where, f"ops group {stage.ops!r} is not defined in spaces.{space}.ops "
                                      f"(defined: {', '.join(groups)})")
                ops = adapt_ops(groups[stage.ops], plat, f"{path}: spaces.{space}.ops.{stage.ops}")
            else:
                ops = adapt_ops(stage.ops, plat, f"{stage.where}.ops")
            width_decision = decide(f"stage{s}/width", stage.widths)
            for j in range(stage.layers):
                index = len(self.layers)
                self.layers.append(Layer(
                    index=index, stage=s, stride=stage.stride if j == 0 else 1, may_be_residual=j > 0,
                    endpoint=stage.endpoint if j == stage.layers - 1 else None, ops=ops,
                    widths=stage.widths, op_decision=decide(f"layer{index}/op", ops),
                    width_decision=width_decision, input_width_decision=input_width_decision))
                input_width_decision = width_decision
        self.to_arch_spec([0] * len(self.decisions))  # checks strides and endpoints of the skeleton
        self.cost_features = CostFeatures(self)

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
    def check_indices(self, indices: Sequence[int]) -> List[int]:
        """`indices` as a list of ints, checked against the decisions (SearchSpaceError if not)."""
        indices = list(indices)
        if len(indices) != len(self.decisions):
            fail(f"search space {self.tag}", f"expected {len(self.decisions)} choice indices, got {len(indices)}")
        for d, i in zip(self.decisions, indices):
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(d.choices):
                fail(f"search space {self.tag}", f"decision {d.tag}: index must be an int in "
                                                  f"0..{len(d.choices) - 1}, got {i!r}")
        return [int(i) for i in indices]

    def walk(self, indices: Sequence[int]) -> Iterator[LayerChoice]:
        """The chosen architecture, layer by layer: op, widths, shortcut and decision digits."""
        indices = self.check_indices(indices)
        pick = lambda d: 0 if d is None else indices[d]  # noqa: E731
        in_width = INPUT_CHANNELS
        for layer in self.layers:
            op = layer.ops[pick(layer.op_decision)]
            out_width = layer.widths[pick(layer.width_decision)].filters
            yield LayerChoice(layer, op, in_width, out_width, layer.residual(op),
                              tuple(indices[d] for d in layer.feature_decisions))
            in_width = out_width

    def to_arch_spec(self, indices: Sequence[int], name: Optional[str] = None,
                     description: Optional[str] = None) -> ArchSpec:
        """The validated ArchSpec of the chosen architecture."""
        indices = self.check_indices(indices)
        blocks = [c.op.block(c.layer.stride, c.out_width, c.residual).to_dict() for c in self.walk(indices)]
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
            fail(where, f"it has {len(arch.blocks)} blocks, the skeleton has {len(self.layers)}")
        if arch.activation != self.activation:
            fail(where, f"its activation is {arch.activation}, the platform's is {self.activation}")
        if arch.se_gate != "sigmoid" or arch.se_activation or arch.se_width != DEFAULT_SE_WIDTH:
            fail(where, f"its SE gate/activation/width rule ({arch.se_gate}, {arch.se_activation}, "
                        f"{arch.se_width}) are not the defaults (sigmoid, the block's activation, {DEFAULT_SE_WIDTH})")
        endpoints = {k: e.to_yaml() for k, e in arch.endpoints.items()}
        expected = {layer.endpoint: layer.index for layer in self.layers if layer.endpoint}
        if endpoints != expected:
            fail(where, f"its endpoints are {endpoints}, the skeleton's are {expected}")
        indices: List[Optional[int]] = [None] * len(self.decisions)

        def assign(decision, value, block_index, what):
            if decision is None:
                return
            if indices[decision] is not None and indices[decision] != value:
                fail(where, f"block {block_index} {what} disagrees with an earlier block on decision "
                            f"{self.decisions[decision].tag}")
            indices[decision] = value

        for layer, block in zip(self.layers, arch.blocks):
            at = f"block {layer.index} ({block.type})"
            if block.stride != layer.stride:
                fail(where, f"{at} has stride {block.stride}, the skeleton's layer has {layer.stride}")
            widths = [w.filters for w in layer.widths]
            if block.filters not in widths:
                fail(where, f"{at} has {block.filters} filters; the skeleton allows {widths}")
            assign(layer.width_decision, widths.index(block.filters), layer.index, f"width {block.filters}")
            op = OpChoice.of_block(block)
            if op not in layer.ops:
                fail(where, f"{at} is '{op.label}', not one of the layer's op choices: "
                            f"{', '.join(o.label for o in layer.ops)}")
            assign(layer.op_decision, layer.ops.index(op), layer.index, f"op {op.label}")
            residual = layer.residual(op)
            if block.residual != residual:
                fail(where, f"{at} has residual {str(block.residual).lower()}; in the space it is "
                            f"{str(residual).lower()} (a stage's first layer has no shortcut)")
        rebuilt = self.to_arch_spec(indices)
        assert rebuilt.blocks == arch.blocks, "indices_of is not the inverse of to_arch_spec"
        return indices

    def describe(self, indices: Sequence[int]) -> str:
        """One readable line per layer: block, op, stride, widths, shortcut, endpoint, decisions."""
        lines = []
        for layer, op, in_w, out_w, residual, _ in self.walk(indices):
            tags = [self.decisions[d].tag for d in (layer.width_decision, layer.op_decision) if d is not None]
            lines.append(f"{layer.index:>3}  {op.label:<26} s{layer.stride}  {in_w:>4} -> {out_w:<4}"
                         f"{' residual' if residual else '         '}  {layer.endpoint or '  '}"
                         f"  {', '.join(tags) if tags else '(fixed)'}")
        return "\n".join(lines)

    # Serialisation -------------------------------------------------------------------------------
    def to_json(self, indices: Sequence[int]) -> str:
        """The chosen architecture as JSON: space, platform, skeleton, source, indices, labels."""
        indices = self.check_indices(indices)
        return json.dumps({
            "space": self.name, "platform": self.platform, "skeleton": self.skeleton, "source": self.source,
            "indices": indices,
            "choices": {d.tag: d.choices[i].label for d, i in zip(self.decisions, indices)},
        }, indent=2)


def load_space(name_or_path: str, platform: str, skeleton: Optional[str] = None,
               space: Optional[str] = None) -> SearchSpace:
    """A search space by name (from `configs/search_spaces/`) or from a YAML file.

    `platform` selects the adaptation (and its default skeleton); `skeleton` overrides the skeleton;
    `space` picks a space in a file that defines several.
    """
    if fileio.exists(name_or_path) or name_or_path.endswith((".yaml", ".yml")):
        spaces_file = read_space_file(name_or_path)
        if space is None:
            if len(spaces_file.spaces) != 1:
                fail(name_or_path, f"defines several search spaces ({', '.join(spaces_file.spaces)}); "
                                   f"say which one with space=NAME")
            space = next(iter(spaces_file.spaces))
        return SearchSpace(spaces_file, space, platform, skeleton, source=name_or_path)
    if space is not None and space != name_or_path:
        raise SearchSpaceError(f"space={space!r} contradicts the space name {name_or_path!r}")
    files = [f for f in map(read_space_file, shipped_space_files()) if name_or_path in f.spaces]
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
    check_keys("search-space choice", data, ("space", "platform", "skeleton", "source", "indices", "choices"),
                ("space", "platform", "skeleton", "source", "indices"))
    search_space = load_space(data["source"], data["platform"], skeleton=data["skeleton"], space=data["space"])
    indices = search_space.check_indices(data["indices"])
    for d, i in zip(search_space.decisions, indices):
        recorded = (data.get("choices") or {}).get(d.tag, d.choices[i].label)
        if recorded != d.choices[i].label:
            fail(f"search space {search_space.tag}", f"decision {d.tag} was '{recorded}' when recorded, "
                                                     f"index {i} is now '{d.choices[i].label}'")
    return search_space, indices

