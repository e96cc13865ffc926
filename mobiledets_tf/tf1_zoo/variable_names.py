"""The TF1 Object Detection API variable name of every weight of an SSDLite detector.

The table is generated from the ArchSpec, block by block, with the scope names the API's graphs
create (read from its feature extractors, feature-map generator and box predictor):
- MobileDets (`FeatureExtractor/MobileDet{CPU,DSP,EdgeTPU,GPU}`): each block opens a scope numbered
  per block type in build order (`IBN`, `IBN_1`, ...; `IBNNoExpansion`, `FusedConv`, `TuckerConv`),
  inside which TF-slim names the convolutions `Conv`, `Conv_1`, `Conv_2` and the depthwise one
  `SeparableConv2d`; squeeze-and-excite is `SqueezeExcite/Conv` (+ `Conv_1`), with biases;
- SSDLite MobileNetV2 and V3 (`FeatureExtractor/MobilenetV2`, `FeatureExtractor/MobilenetV3`,
  TF-slim's mobilenet_v2 and mobilenet_v3): the stem and the final 1x1 conv are `Conv` and `Conv_1`,
  the inverted bottlenecks `expanded_conv[_k]` with `expand`, `depthwise`, `project`, and V3's
  squeeze-and-excite `squeeze_excite/Conv` (+ `Conv_1`), with biases. The zoo's MobileNetV3-Large and
  -Small share the scope `MobilenetV3`; their C5 layers (`layer_17`, `layer_13`, which name the
  extra layers) tell them apart;
- the extra layers `{C5 name}_1_Conv2d_{i}_1x1_{d/2}`, `{C5 name}_2_Conv2d_{i}_3x3_s2_{d}_depthwise`
  and `..._3x3_s2_{d}` (i = 2..5), and the box predictor
  `BoxPredictor_{n}/{BoxEncodingPredictor,ClassPredictor}[_depthwise]`.
Each convolution's BatchNorm is `{conv scope}/BatchNorm/{gamma,beta,moving_mean,moving_variance}`;
kernels are `weights` (`depthwise_weights`), biases `biases`. TF-slim's kernel layouts
([kh, kw, in, out], depthwise [kh, kw, in, 1]) are Keras' own, so values copy as they are.
"""
import dataclasses
from typing import Dict, List, NamedTuple, Optional, Tuple

from mobiledets_tf.arch.spec import ArchSpec
from mobiledets_tf.layers.block_plans import SqueezeExciteStep, block_plan
from mobiledets_tf.layers.block_rules import has_expansion_conv
from mobiledets_tf.models.ssdlite_head import EXTRA_LAYER_DEPTHS, layer_depth

# Keras weight name (the last part of `variable.name`) -> TF1 variable name (the last part).
WEIGHT_LEAVES = {"kernel": "weights", "depthwise_kernel": "depthwise_weights", "bias": "biases",
                 "gamma": "BatchNorm/gamma", "beta": "BatchNorm/beta",
                 "moving_mean": "BatchNorm/moving_mean", "moving_variance": "BatchNorm/moving_variance"}


@dataclasses.dataclass(frozen=True)
class TF1Extractor:
    """How the API's feature extractor of one architecture names its variables."""
    scope: str        # under FeatureExtractor/
    naming: str       # "mobiledet" or "mobilenet"
    c5_name: str      # the name the feature-map generator gives the C5 layer
    input_size: int   # the zoo models' input size


TF1_EXTRACTORS = {
    "mobiledet_cpu": TF1Extractor("MobileDetCPU", "mobiledet", "C5", 320),
    "mobiledet_dsp": TF1Extractor("MobileDetDSP", "mobiledet", "C5", 320),
    "mobiledet_edgetpu": TF1Extractor("MobileDetEdgeTPU", "mobiledet", "C5", 320),
    "mobiledet_gpu": TF1Extractor("MobileDetGPU", "mobiledet", "C5", 320),
    "mobilenet_v2": TF1Extractor("MobilenetV2", "mobilenet", "layer_19", 300),
    "mobilenet_v3_large": TF1Extractor("MobilenetV3", "mobilenet", "layer_17", 320),
    "mobilenet_v3_small": TF1Extractor("MobilenetV3", "mobilenet", "layer_13", 320),
}


class UnknownTF1ArchitectureError(ValueError):
    """An architecture (or checkpoint) that has no TF1 Object Detection API counterpart here."""


def tf1_extractor(arch_name: str) -> TF1Extractor:
    if arch_name not in TF1_EXTRACTORS:
        raise UnknownTF1ArchitectureError(
            f"{arch_name!r} has no TF1 Object Detection API feature extractor to import from; "
            f"known: {', '.join(sorted(TF1_EXTRACTORS))}")
    return TF1_EXTRACTORS[arch_name]


def arch_of_variables(names) -> str:
    """The architecture whose feature extractor scope (and, where archs share one, C5 layer name)
    the TF1 variable names use."""
    scopes = sorted({e.scope for e in TF1_EXTRACTORS.values()})
    found = {name.split("/")[1] for name in names
             if name.startswith("FeatureExtractor/") and name.count("/") >= 2}
    candidates = [arch for arch, e in sorted(TF1_EXTRACTORS.items()) if e.scope in found]
    if len({TF1_EXTRACTORS[arch].scope for arch in candidates}) > 1:
        candidates = []
    if len(candidates) > 1:   # one scope, several networks: the extra layers name the C5 layer
        candidates = [arch for arch in candidates if any(
            name.startswith(f"FeatureExtractor/{TF1_EXTRACTORS[arch].scope}/{TF1_EXTRACTORS[arch].c5_name}_1_")
            for name in names)]
    if len(candidates) != 1:
        raise UnknownTF1ArchitectureError(
            f"cannot tell the architecture from the feature extractor scopes {sorted(found) or 'none'}; "
            f"expected exactly one of {', '.join(scopes)} (with MobilenetV3, extra layers named after "
            f"layer_17 or layer_13) (give --arch)")
    return candidates[0]


class _ScopeCounter:
    """TF1's unique scope names: the first `name`, then `name_1`, `name_2`, ..."""

    def __init__(self):
        self.counts: Dict[str, int] = {}

    def next(self, name: str) -> str:
        count = self.counts.get(name, 0)
        self.counts[name] = count + 1
        return name if count == 0 else f"{name}_{count}"


# (Keras conv suffix, Keras BatchNorm suffix or None, TF1 scope under the extractor) of one block.
BlockScopes = List[Tuple[str, Optional[str], str]]
MOBILEDET_BLOCK_SCOPES = {"conv": "Conv", "ibn": "IBN", "fused": "FusedConv", "tucker": "TuckerConv"}


def _block_steps(spec: ArchSpec, index: int):
    """The plan of block `index` (its sublayers in build order), at the ArchSpec's widths."""
    block = spec.blocks[index]
    in_channels = spec.blocks[index - 1].filters if index else 3
    return block_plan(block.type, in_channels, block.filters, block.kernel, block.stride, block.expansion,
                      block.input_rank_ratio, block.output_rank_ratio, block.se, spec.se_width)


def _squeeze_excite_scopes(se_scope: str) -> BlockScopes:
    """A squeeze-and-excite's two 1x1 convs (biases, no BatchNorm) as TF-slim numbers them under `se_scope`."""
    return [("se_reduce", None, f"{se_scope}/Conv"), ("se_expand", None, f"{se_scope}/Conv_1")]


def _mobiledet_block_scopes(spec: ArchSpec, counter: _ScopeCounter, index: int) -> BlockScopes:
    """TF-slim numbers a block's full convolutions Conv, Conv_1, ... in build order; the depthwise
    one is SeparableConv2d, squeeze-and-excite SqueezeExcite/Conv(_1)."""
    block = spec.blocks[index]
    scope_name = MOBILEDET_BLOCK_SCOPES.get(block.type)
    if scope_name is None:
        raise UnknownTF1ArchitectureError(f"block {index}: no TF1 MobileDet block of type {block.type!r}")
    if block.type == "ibn" and not has_expansion_conv(block.expansion):
        scope_name = "IBNNoExpansion"
    scope, convs, scopes = counter.next(scope_name), _ScopeCounter(), []
    for step in _block_steps(spec, index):
        if isinstance(step, SqueezeExciteStep):
            scopes += _squeeze_excite_scopes(f"{scope}/SqueezeExcite")
        else:
            tf1 = "SeparableConv2d" if step.depthwise else convs.next("Conv")
            scopes.append((step.name, step.bn_name, scope if block.type == "conv" else f"{scope}/{tf1}"))
    return scopes


def _mobilenet_block_scopes(spec: ArchSpec, counter: _ScopeCounter, index: int) -> BlockScopes:
    """TF-slim's MobileNetV2/V3: `Conv`/`Conv_1` convs, `expanded_conv[_k]/{expand,depthwise,project}`,
    squeeze-and-excite `expanded_conv[_k]/squeeze_excite/Conv(_1)`."""
    block = spec.blocks[index]
    if block.type == "conv":
        return [("conv", "bn", counter.next("Conv"))]
    if block.type != "ibn":
        raise UnknownTF1ArchitectureError(
            f"block {index}: TF-slim's MobileNets have only plain convolutions and inverted bottlenecks")
    scope, scopes = counter.next("expanded_conv"), []
    for step in _block_steps(spec, index):
        if isinstance(step, SqueezeExciteStep):
            scopes += _squeeze_excite_scopes(f"{scope}/squeeze_excite")
        else:
            scopes.append((step.name, step.bn_name, f"{scope}/{step.name}"))
    return scopes


def _conv_scopes(keras_conv: str, tf1_scope: str, has_batch_norm: bool) -> Dict[str, str]:
    scopes = {keras_conv: tf1_scope}
    if has_batch_norm:
        scopes[f"{keras_conv}_bn"] = tf1_scope
    return scopes


def layer_scopes(spec: ArchSpec, extra_layer_depths: Tuple[int, ...] = EXTRA_LAYER_DEPTHS,
                 depth_multiplier: float = 1.0, min_depth: int = 16) -> Dict[str, str]:
    """{Keras layer name: TF1 scope} of every layer with weights of the SSDLite detector of `spec`.

    A BatchNorm layer maps to the scope of its convolution (its weights are
    `{scope}/BatchNorm/gamma` etc.).
    """
    extractor = tf1_extractor(spec.name)
    block_scopes = (_mobiledet_block_scopes if extractor.naming == "mobiledet"
                    else _mobilenet_block_scopes)
    prefix = f"FeatureExtractor/{extractor.scope}"
    counter = _ScopeCounter()
    scopes: Dict[str, str] = {}
    for index in range(len(spec.blocks)):
        keras_block = f"backbone_b{index:02d}"
        for conv, batch_norm, tf1 in block_scopes(spec, counter, index):
            scopes[f"{keras_block}_{conv}"] = f"{prefix}/{tf1}"
            if batch_norm:
                scopes[f"{keras_block}_{batch_norm}"] = f"{prefix}/{tf1}"
    for i, depth in enumerate(extra_layer_depths, start=1):
        half, full = (layer_depth(depth // 2, depth_multiplier, min_depth),
                      layer_depth(depth, depth_multiplier, min_depth))
        base = f"{prefix}/{extractor.c5_name}"
        scopes.update(_conv_scopes(f"extra{i}_reduce", f"{base}_1_Conv2d_{i + 1}_1x1_{half}", True))
        scopes.update(_conv_scopes(f"extra{i}_depthwise",
                                   f"{base}_2_Conv2d_{i + 1}_3x3_s2_{full}_depthwise", True))
        scopes.update(_conv_scopes(f"extra{i}_project", f"{base}_2_Conv2d_{i + 1}_3x3_s2_{full}", True))
    for n in range(2 + len(extra_layer_depths)):   # C4, C5 and the extra layers
        for kind, tf1 in (("box", "BoxEncodingPredictor"), ("class", "ClassPredictor")):
            scopes.update(_conv_scopes(f"predictor{n}_{kind}_depthwise",
                                       f"BoxPredictor_{n}/{tf1}_depthwise", True))
            scopes[f"predictor{n}_{kind}_conv"] = f"BoxPredictor_{n}/{tf1}"
    return scopes


class WeightName(NamedTuple):
    keras: str          # `layer/leaf`, e.g. backbone_b01_depthwise/depthwise_kernel
    tf1: str            # e.g. FeatureExtractor/MobileDetCPU/IBNNoExpansion/SeparableConv2d/depthwise_weights
    variable: object    # the Keras model's variable


def weight_names(model, spec: ArchSpec, **layer_scope_kwargs) -> List[WeightName]:
    """The TF1 variable name of every weight of a built detector model, in the model's order.

    Raises UnknownTF1ArchitectureError for a Keras weight that the table has no TF1 name for.
    """
    scopes = layer_scopes(spec, **layer_scope_kwargs)
    names = []
    for layer in model.layers:
        for weight in layer.weights:
            leaf = weight.name.split("/")[-1].split(":")[0]
            key = f"{layer.name}/{leaf}"
            if layer.name not in scopes or leaf not in WEIGHT_LEAVES:
                raise UnknownTF1ArchitectureError(f"no TF1 variable name for the Keras weight {key}")
            names.append(WeightName(key, f"{scopes[layer.name]}/{WEIGHT_LEAVES[leaf]}", weight))
    return names
