"""The TuNAS one-shot weight-sharing SSDLite supernet over a `SearchSpace` (reference section 8).

`Supernet(space, num_classes, input_size, depth_multiplier)` is called as
`supernet(images, choices) -> (box_encodings [B, A, 4], class_logits [B, A, C + 1])`, where `images`
are in [-1, 1] and `choices` is the int32 index vector of the space (`space.sample(rng)`). The
backbone is one `SearchableLayer` per layer position up to the last endpoint (widths
`round_filters(w, depth_multiplier)`, as the standalone backbone), holding the op families of
`weight_sharing`; C4 and C5 feed the SSDLite extra layers and box predictor of the standalone
detector, built once as a Functional sub-model, so C4 and C5 must have fixed widths. BatchNorm always
uses batch statistics, in the head too (it is called with training=True).

A searchable layer runs the mean of a range of its ops: the chosen op alone, or every op when the
op choice is -1 (TuNAS op warmup). The range is a `tf.while_loop` around one `tf.switch_case` over
(width configuration, op): only the chosen branch runs, so a search step costs about one sampled
model, gradients reach only the weights it used, one compiled step serves every architecture, and op
warmup adds no second copy of the ops to the graph (a warmup branch of its own would double the
compile time). Layers pass tensors of their widest output: a narrower output is zero-padded, and the
next layer reads its first channels.

`anchors`, `assign_targets`, `losses` and `preprocess` are the detector's own (`SSDLiteDetector`);
`model.losses` after a call holds the L2 terms of the weights that call used, as a standalone
model's `losses` does. `standalone_from_supernet(supernet, indices)` builds the standalone
`SSDLiteDetector` of `space.to_arch_spec(indices)` and copies the shared weights into it, sliced;
with `calibration_images` it also sets its BatchNorm moving statistics from them.
"""
import functools
import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mobiledets_tf.arch.spec import ArchSpec
from mobiledets_tf.detection import anchors as anchor_lib
from mobiledets_tf.detection.targets import MATCH_THRESHOLD
from mobiledets_tf.keras import keras
from mobiledets_tf.layers import defaults
from mobiledets_tf.layers.activations import activation_layer
from mobiledets_tf.layers.block_rules import round_filters
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.models.ssdlite_head import wire_box_predictor, wire_extra_layers
from mobiledets_tf.search.choices import Layer, OpChoice, SearchSpaceError, mixed_radix
from mobiledets_tf.search.space import INPUT_CHANNELS, SearchSpace
from mobiledets_tf.search.weight_sharing import OpFamily, UsedWeights, used_size

HEAD_ENDPOINTS = ("C4", "C5")
WARMUP = -1  # an op choice that runs every op of the layer and averages them (TuNAS op warmup)


def _switch(index, branches):
    """`tf.switch_case`, or the one branch: only the branch of `index` runs."""
    return branches[0]() if len(branches) == 1 else tf.switch_case(index, branches)


class SearchableLayer(keras.layers.Layer):
    """Every candidate op of one backbone layer position; runs the chosen op (-1: all, averaged).

    `in_widths` are the (depth-multiplied) widths of the previous layer's width choices, `out_widths`
    this layer's; `arch` is any ArchSpec of the space (it gives the block activation and the SE gate
    and activation, as the standalone blocks take them). Called as `layer(x, choices)` with `x` of
    the widest input width and the int32 choice vector of the space; returns the widest output width
    (narrower outputs zero-padded) and adds the L2 term of the weights used as a layer loss.
    """

    def __init__(self, layer: Layer, in_widths: Sequence[int], out_widths: Sequence[int],
                 arch: ArchSpec, **kwargs):
        super().__init__(**kwargs)
        self.layer, self.in_widths, self.out_widths = layer, tuple(in_widths), tuple(out_widths)
        self.max_in, self.max_out = max(in_widths), max(out_widths)
        self.families = {}
        for block_type in dict.fromkeys(op.type for op in layer.ops):
            ops = [op for op in layer.ops if op.type == block_type]
            self.families[block_type] = OpFamily(block_type, ops, in_widths, out_widths, layer.stride,
                                                 self.name, arch.se_gate)
        self._activation_names = []
        for op in layer.ops:
            block = arch.block_activation(op.block(layer.stride, self.max_out, residual=False))
            self._activation_names.append((block, arch.se_activation or block))
        self.activations = {name: activation_layer(name, f"{self.name}_{name}")
                            for name in dict.fromkeys(itertools.chain(*self._activation_names))}
        # Width configurations (input width, output width), first decision most significant.
        sizes = {layer.input_width_decision: len(in_widths), layer.width_decision: len(out_widths)}
        self._width_decisions = [d for d in dict.fromkeys((layer.input_width_decision, layer.width_decision))
                                 if d is not None]
        self._radix = [sizes[d] for d in self._width_decisions]
        self._width_configs = [self._widths(dict(zip(self._width_decisions, combination)))
                               for combination in itertools.product(*map(range, self._radix))]

    def _widths(self, picks: Dict[int, int]) -> Tuple[int, int]:
        return (self.in_widths[picks.get(self.layer.input_width_decision, 0)],
                self.out_widths[picks.get(self.layer.width_decision, 0)])

    # Choices -----------------------------------------------------------------------------------
    def configuration(self, indices: Sequence[int]) -> Tuple[int, int, int]:
        """(op index, input width, output width) of this layer for the space's choice `indices`."""
        op = indices[self.layer.op_decision] if self.layer.op_decision is not None else 0
        in_width, out_width = self._widths({d: indices[d] for d in self._width_decisions})
        return op, in_width, out_width

    def _width_index(self, choices: tf.Tensor) -> tf.Tensor:
        """The index of the chosen width configuration in `_width_configs`."""
        return tf.convert_to_tensor(mixed_radix([choices[d] for d in self._width_decisions], self._radix),
                                    tf.int32)

    def residual(self, op: OpChoice, in_width: int, out_width: int) -> bool:
        """As the standalone block: the space's residual flag, and equal input and output widths."""
        return self.layer.residual(op) and in_width == out_width

    # Running -----------------------------------------------------------------------------------
    def run_op(self, op_index: int, x, in_width: int, out_width: int):
        """(output of op `op_index` at these widths, padded to the widest output; its L2 term)."""
        op = self.layer.ops[op_index]
        if x.shape[-1] != in_width:
            x = x[..., :in_width]
        block_activation, se_activation = self._activation_names[op_index]
        regs: List[tf.Tensor] = []
        y = self.families[op.type].forward(op, x, out_width, self.activations[block_activation],
                                           self.activations[se_activation], regs)
        if self.residual(op, in_width, out_width):
            y = y + x
        if out_width < self.max_out:
            y = tf.pad(y, [[0, 0], [0, 0], [0, 0], [0, self.max_out - out_width]])
        return y, tf.add_n(regs)

    def call(self, x, choices):
        num_ops = len(self.layer.ops)
        branches = [functools.partial(self.run_op, i, x, *widths)
                    for widths in self._width_configs for i in range(num_ops)]
        first = self._width_index(choices) * num_ops
        if self.layer.op_decision is None:
            y, reg = _switch(first, branches)
        else:  # the mean of branches first..stop-1: the chosen op, or every op (op warmup)
            op = choices[self.layer.op_decision]
            stop = first + tf.where(op == WARMUP, num_ops, op + 1)
            first += tf.where(op == WARMUP, 0, op)

            def add_branch(i, total, total_reg):
                y, reg = _switch(i, branches)
                return i + 1, total + y, total_reg + reg

            height, width = (-(-size // self.layer.stride) for size in x.shape[1:3])
            zeros = tf.zeros(tf.stack([tf.shape(x)[0], height, width, self.max_out]), x.dtype)
            _, y, reg = tf.while_loop(lambda i, *_: i < stop, add_branch, (first, zeros, tf.constant(0.0)),
                                      maximum_iterations=num_ops)
            count = stop - first
            y, reg = y / tf.cast(count, y.dtype), reg / tf.cast(count, reg.dtype)
        self.add_loss(reg)
        return y

    # Inspection --------------------------------------------------------------------------------
    def used_weights(self, op_index: int, in_width: int, out_width: int) -> UsedWeights:
        """(variable, index) of every weight op `op_index` uses at these widths."""
        op = self.layer.ops[op_index]
        return self.families[op.type].used_weights(op, in_width, out_width)

    def export(self, op_index: int, in_width: int, out_width: int) -> Dict[str, Dict[str, np.ndarray]]:
        """{standalone sublayer suffix: {attribute: sliced value}} of op `op_index` at these widths."""
        op = self.layer.ops[op_index]
        return self.families[op.type].export(op, in_width, out_width)


class SupernetModel(keras.Model):
    """Searchable backbone + SSDLite head; `call(images, choices)` (see the module docstring)."""

    def __init__(self, space: SearchSpace, num_classes: int, input_size: int,
                 depth_multiplier: float = 1.0, min_depth: int = 16, **kwargs):
        super().__init__(name=kwargs.pop("name", f"supernet_{space.name}_{space.platform}"), **kwargs)
        self.space = space
        self.num_decisions = len(space.decisions)
        arch = space.to_arch_spec([0] * self.num_decisions)
        endpoints = {layer.endpoint: layer for layer in space.layers if layer.endpoint}
        for name in HEAD_ENDPOINTS:
            layer = endpoints[name]
            if len(layer.widths) > 1:
                raise SearchSpaceError(
                    f"search space {space.tag}: stage {layer.stage} (layer {layer.index}, endpoint {name}) "
                    f"searches its width ({', '.join(w.label for w in layer.widths)}); the supernet feeds "
                    f"C4 and C5 to one SSDLite head and needs them fixed: give that stage a single "
                    f"filter multiplier")
        last = max(layer.index for layer in endpoints.values())
        self.blocks: List[SearchableLayer] = []
        in_widths: Tuple[int, ...] = (INPUT_CHANNELS,)
        for layer in space.layers[: last + 1]:
            out_widths = tuple(round_filters(w.filters, depth_multiplier) for w in layer.widths)
            self.blocks.append(SearchableLayer(layer, in_widths, out_widths, arch,
                                               name=f"backbone_b{layer.index:02d}"))
            in_widths = out_widths
        self._endpoint_blocks = {name: endpoints[name].index for name in HEAD_ENDPOINTS}
        # The head on C4/C5-shaped inputs: the layers (and names) of the standalone detector's head.
        c4, c5 = (keras.Input((input_size // stride, input_size // stride,
                               round_filters(endpoints[name].widths[0].filters, depth_multiplier)),
                              name=name)
                  for name, stride in zip(HEAD_ENDPOINTS, (16, 32)))
        feature_maps = [c4, c5] + wire_extra_layers(c5, depth_multiplier, min_depth)
        predictions = wire_box_predictor(feature_maps, anchor_lib.num_anchors_per_location(), num_classes)
        self.head = keras.Model([c4, c5], list(predictions), name="ssdlite_head")
        self._lows = np.array([WARMUP if isinstance(d.choices[0], OpChoice) else 0 for d in space.decisions],
                              np.int32)
        self._highs = np.array([len(d.choices) - 1 for d in space.decisions], np.int32)

    def check_choices(self, choices) -> tf.Tensor:
        """`choices` as an int32 vector; SearchSpaceError on a wrong length or (eager) value."""
        where = f"search space {self.space.tag}"
        choices = tf.convert_to_tensor(choices)
        if not choices.dtype.is_integer:
            raise SearchSpaceError(f"{where}: choices must be integers, got {choices.dtype.name}")
        if choices.shape.rank != 1 or choices.shape[0] != self.num_decisions:
            raise SearchSpaceError(f"{where}: expected a vector of {self.num_decisions} choice indices "
                                   f"(one per decision), got shape {choices.shape}")
        choices = tf.cast(choices, tf.int32)
        if tf.executing_eagerly():
            values = choices.numpy()
            for d, value, low, high in zip(self.space.decisions, values, self._lows, self._highs):
                if not low <= value <= high:
                    raise SearchSpaceError(f"{where}: decision {d.tag}: index must be in {low}..{high}, "
                                           f"got {value}")
        elif self.num_decisions:
            tf.debugging.assert_greater_equal(choices, self._lows, message=f"{where}: choice below range")
            tf.debugging.assert_less_equal(choices, self._highs, message=f"{where}: choice above range")
        return choices

    def call(self, images, choices):
        choices = self.check_choices(choices)
        x, endpoints = images, {}
        for block in self.blocks:
            x = block(x, choices)
            endpoints[block.layer.index] = x
        c4, c5 = (endpoints[self._endpoint_blocks[name]] for name in HEAD_ENDPOINTS)
        return tuple(self.head([c4, c5], training=True))


class Supernet:
    """The supernet with the detector's anchors, targets and losses (as `SSDLiteDetector`)."""

    def __init__(self, space: SearchSpace, num_classes: int, input_size: int,
                 depth_multiplier: float = 1.0, min_depth: int = 16, anchor_min_scale: float = 0.2,
                 anchor_max_scale: float = 0.95, l2_weight: float = defaults.L2_WEIGHT,
                 match_threshold: float = MATCH_THRESHOLD):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.space = space
        self.num_classes, self.input_size = num_classes, input_size
        self.depth_multiplier, self.min_depth = depth_multiplier, min_depth
        self.anchor_min_scale, self.anchor_max_scale = anchor_min_scale, anchor_max_scale
        self.l2_weight, self.match_threshold = l2_weight, match_threshold
        self.feature_map_sizes = anchor_lib.feature_map_sizes_for_input(input_size)
        self.anchors = anchor_lib.generate_anchors(self.feature_map_sizes, min_scale=anchor_min_scale,
                                                   max_scale=anchor_max_scale)
        with defaults.l2_weight(l2_weight):
            self.model = SupernetModel(space, num_classes, input_size, depth_multiplier, min_depth)
        self._head_size, self._block_sizes = None, {}   # parameter_count's memo
        num_predictions = self.model.head.outputs[0].shape[1]
        if num_predictions != len(self.anchors):
            raise AssertionError(f"{num_predictions} predictions but {len(self.anchors)} anchors")

    def __call__(self, images, choices):
        return self.model(images, choices)

    def parameter_count(self, indices: Sequence[int]) -> int:
        """Trainable weights of the standalone detector of `indices`: the slices its ops use (as
        `standalone_from_supernet` copies them) and the head. From shapes alone, memoised per layer."""
        if self._head_size is None:
            self._head_size = used_size([(v, ()) for v in self.model.head.trainable_weights])
        total = self._head_size
        for block in self.model.blocks:
            key = (block.name, block.configuration(indices))
            if key not in self._block_sizes:
                self._block_sizes[key] = used_size(block.used_weights(*key[1]))
            total += self._block_sizes[key]
        return total

    @property
    def trainable_variables(self) -> List[tf.Variable]:
        return self.model.trainable_variables

    # The detector's own code (it only uses `anchors` and `num_classes`).
    preprocess = staticmethod(SSDLiteDetector.preprocess)
    assign_targets = SSDLiteDetector.assign_targets
    losses = SSDLiteDetector.losses


def standalone_from_supernet(supernet: Supernet, indices: Sequence[int], batch_size: Optional[int] = None,
                             calibration_images: Optional[tf.Tensor] = None) -> SSDLiteDetector:
    """The standalone detector of `space.to_arch_spec(indices)` holding the supernet's weights.

    Each block gets the slices of the shared weights its op used in the supernet; the head is copied
    as is. The supernet keeps no BatchNorm moving statistics: they stay at their initial values, or,
    with `calibration_images` (preprocessed, in [-1, 1]), become the batch statistics of those images
    (BatchNorm recalibration), so that the detector in inference mode computes on them what the
    supernet computes with batch statistics.
    """
    arch = supernet.space.to_arch_spec(indices)  # validates the indices (no op warmup here)
    detector = SSDLiteDetector(
        arch, num_classes=supernet.num_classes, input_size=supernet.input_size,
        depth_multiplier=supernet.depth_multiplier, min_depth=supernet.min_depth, batch_size=batch_size,
        anchor_min_scale=supernet.anchor_min_scale, anchor_max_scale=supernet.anchor_max_scale,
        l2_weight=supernet.l2_weight, match_threshold=supernet.match_threshold)
    model = detector.float_model
    filled = set()
    for block in supernet.model.blocks:
        for suffix, values in block.export(*block.configuration(indices)).items():
            target = model.get_layer(f"{block.name}_{suffix}")
            for attribute, value in values.items():
                getattr(target, attribute).assign(value)
            filled.add(target.name)
    for layer in supernet.model.head.layers:
        if layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())
            filled.add(layer.name)
    missed = [layer.name for layer in model.layers if layer.trainable_weights and layer.name not in filled]
    if missed:
        raise AssertionError(f"no supernet weights for the standalone layers {missed}")
    if calibration_images is not None:
        _calibrate_batch_norm(model, calibration_images)
    return detector


def _calibrate_batch_norm(model: keras.Model, images: tf.Tensor) -> None:
    """Sets the moving statistics of every BatchNorm layer of `model` to the batch statistics of
    `images`: one forward pass in training mode with the moving averages' momentum at 0, and without
    the fused kernel, whose moving variance carries Bessel's correction (n / (n - 1)) where
    normalising in training mode does not."""
    layers = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    settings = [(layer.momentum, layer.fused) for layer in layers]
    try:
        for layer in layers:
            layer.momentum, layer.fused = 0.0, False
        model(images, training=True)
    finally:
        for layer, (momentum, fused) in zip(layers, settings):
            layer.momentum, layer.fused = momentum, fused


def op_variables(supernet: Supernet, indices: Sequence[int]) -> Dict[str, UsedWeights]:
    """{block name: [(variable, index)]}: the parts of the backbone weights `indices` use."""
    return {block.name: block.used_weights(*block.configuration(indices))
            for block in supernet.model.blocks}
