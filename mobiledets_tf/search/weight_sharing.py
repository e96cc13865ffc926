"""TuNAS weight sharing (reference section 8): the candidate ops of one block type at one backbone
layer position, holding shared weights that narrower uses slice.

Per block type (each type has its own weights):
- IBN: one 1x1 expansion and one 1x1 projection conv, sized for the largest expansion and the widest
  input/output; one depthwise conv per kernel size (sized for the largest expansion);
- fused IBN: one kxk expansion conv per kernel size, one shared 1x1 projection;
- Tucker: one 1x1 compression, one kxk core per kernel size, one 1x1 output conv;
- conv (the stem): one conv per kernel size;
- squeeze-and-excite (IBN and fused on CPU) is shared by the ops of its block type.
A smaller expansion, rank or width uses the first channels of a shared kernel (a channel mask done by
slicing). Every conv carries its own BatchNorm gamma/beta, sliced like the kernel; BatchNorm always
normalises with batch statistics (as during the search), so there are no moving statistics. Kernels
are initialised like the standalone blocks' (`layers/defaults.py`); the L2 term covers only the
kernel slices an op used, so the regularisation of a sampled path equals that of the standalone model.

An op family (`OP_FAMILIES[block type]`) describes each op as a plan of steps (the sliced convs and
the SE it runs, with their channels); running it, the weights it uses (`used_weights`) and their
export under the names of the standalone block's sublayers (`export`: expand, depthwise_bn,
se_reduce, ...) all follow that one plan.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mobiledets_tf.keras import keras
from mobiledets_tf.layers import defaults
from mobiledets_tf.layers.inverted_bottleneck import expanded_width
from mobiledets_tf.layers.rounding import round_filters
from mobiledets_tf.layers.squeeze_excite import SqueezeExciteGate
from mobiledets_tf.search.space import OpChoice

# (variable, index) pairs: the part of a variable one choice uses.
UsedWeights = List[Tuple[tf.Variable, Tuple[slice, ...]]]


def _first(n: int) -> slice:
    return slice(0, n)


class SlicedConv(keras.layers.Layer):
    """A conv (depthwise or full) with a bias or a BatchNorm, sized for its widest use.

    `forward(x, out_channels)` uses the kernel slice [:, :, :in, :out] (depthwise: [:, :, :in, :]),
    where `in` is the channel count of `x`, and the first `out` channels of the bias or BatchNorm.
    `suffix` and `bn_suffix` name the standalone block's conv and BatchNorm sublayers.
    """

    def __init__(self, kernel_size: int, max_in: int, max_out: int, suffix: str, strides: int = 1,
                 depthwise: bool = False, use_bias: bool = False, bn_suffix: Optional[str] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.kernel_size, self.strides, self.depthwise = kernel_size, strides, depthwise
        self.suffix, self.bn_suffix = suffix, bn_suffix
        self.epsilon = defaults.BACKBONE_BN["epsilon"]
        self.regularizer = None if depthwise else defaults.l2_regularizer()
        with tf.name_scope(self.name):
            if depthwise:
                self.kernel = self.add_weight(
                    "depthwise_kernel", (kernel_size, kernel_size, max_in, 1),
                    initializer=defaults.depthwise_initializer(kernel_size))
            else:
                self.kernel = self.add_weight(
                    "kernel", (kernel_size, kernel_size, max_in, max_out),
                    initializer=defaults.conv_initializer())
            self.bias = self.add_weight("bias", (max_out,), initializer="zeros") if use_bias else None
            self.gamma = self.beta = None
            if bn_suffix:  # float32 under mixed precision, as in a BatchNormalization layer
                self.gamma = self.add_weight("gamma", (max_out,), initializer="ones",
                                             experimental_autocast=False)
                self.beta = self.add_weight("beta", (max_out,), initializer="zeros",
                                            experimental_autocast=False)

    def _parts(self, in_channels: int, out_channels: int):
        """(standalone sublayer suffix, attribute, variable, index) of every weight used."""
        every = slice(None)
        kernel_index = (every, every, _first(in_channels),
                        every if self.depthwise else _first(out_channels))
        vector = (_first(out_channels),)
        parts = [(self.suffix, "depthwise_kernel" if self.depthwise else "kernel", self.kernel,
                  kernel_index)]
        if self.bias is not None:
            parts.append((self.suffix, "bias", self.bias, vector))
        if self.gamma is not None:
            parts += [(self.bn_suffix, "gamma", self.gamma, vector),
                      (self.bn_suffix, "beta", self.beta, vector)]
        return parts

    def used_weights(self, in_channels: int, out_channels: int) -> UsedWeights:
        return [(var, index) for _, _, var, index in self._parts(in_channels, out_channels)]

    def export(self, in_channels: int, out_channels: int) -> Dict[str, Dict[str, np.ndarray]]:
        """{standalone sublayer suffix: {attribute: sliced value}}."""
        result: Dict[str, Dict[str, np.ndarray]] = {}
        for suffix, attribute, var, index in self._parts(in_channels, out_channels):
            result.setdefault(suffix, {})[attribute] = var.numpy()[index]
        return result

    def forward(self, x, out_channels: int):
        """Returns (output, L2 term of the kernel slice used)."""
        used = {attr: _read(var, index) for _, attr, var, index in self._parts(x.shape[-1], out_channels)}
        strides = (1, self.strides, self.strides, 1)
        if self.depthwise:
            kernel = used["depthwise_kernel"]
            y = tf.nn.depthwise_conv2d(x, kernel, strides, "SAME")
        else:
            kernel = used["kernel"]
            y = tf.nn.conv2d(x, kernel, strides, "SAME")
        if "bias" in used:
            y = tf.nn.bias_add(y, used["bias"])
        if "gamma" in used:  # batch statistics, as a BatchNorm layer called with training=True
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, used["gamma"], used["beta"],
                                                        epsilon=self.epsilon, is_training=True)
        reg = tf.cast(self.regularizer(kernel), tf.float32) if self.regularizer is not None else tf.constant(0.0)
        return y, reg


def _read(var: tf.Variable, index: Tuple[slice, ...]):
    """`var[index]`, or the variable itself when the index covers all of it."""
    whole = all(s.stop is None or s.stop == n for s, n in zip(index, var.shape))
    return var if whole else var[index]


class _SlicedSqueezeExcite(keras.layers.Layer):
    """Squeeze-and-excite shared by the ops of one block type, as `layers.SqueezeExcite` computes it:
    pool -> 1x1 conv (bias) to round8(C * ratio) -> activation -> 1x1 conv (bias) to C -> gate."""

    def __init__(self, max_channels: int, max_hidden: int, gate: str, **kwargs):
        super().__init__(**kwargs)
        self.reduce = SlicedConv(1, max_channels, max_hidden, "se_reduce", use_bias=True,
                                 name=f"{self.name}_reduce")
        self.expand = SlicedConv(1, max_hidden, max_channels, "se_expand", use_bias=True,
                                 name=f"{self.name}_expand")
        self.gate = SqueezeExciteGate(gate, name=f"{self.name}_gate")

    @staticmethod
    def hidden(channels: int, ratio: float) -> int:
        return round_filters(channels * ratio)

    def convs(self, channels: int, ratio: float):
        """(conv, in, out) of the two convs at `channels` channels."""
        hidden = self.hidden(channels, ratio)
        return [(self.reduce, channels, hidden), (self.expand, hidden, channels)]

    def forward(self, x, ratio: float, activation, regs: list):
        (reduce, _, hidden), (expand, _, channels) = self.convs(x.shape[-1], ratio)
        s = activation(_apply(reduce, tf.reduce_mean(x, (1, 2), keepdims=True), hidden, regs))
        return self.gate([x, _apply(expand, s, channels, regs)])


def _apply(conv: SlicedConv, x, out_channels: int, regs: list):
    y, reg = conv.forward(x, out_channels)
    regs.append(reg)
    return y


class _Step(NamedTuple):
    """One step of an op: a conv (then the block activation if `activate`), or the SE (`se_ratio`)."""
    module: keras.layers.Layer
    in_channels: int
    out_channels: int
    activate: bool = False
    se_ratio: float = 0.0


class _OpFamily(keras.layers.Layer):
    """The shared weights of the ops of one block type at one layer position.

    Subclasses build their convs in `__init__` and define `plan(op, in, out)`: the steps of `op` at
    these widths. Running, the weights used and their export all follow the plan.
    """
    block_type = ""

    def __init__(self, ops: Sequence[OpChoice], in_widths: Sequence[int], out_widths: Sequence[int],
                 stride: int, block_name: str, se_gate: str):
        super().__init__(name=f"{block_name}_{self.block_type}")
        self.ops, self.in_widths, self.out_widths = tuple(ops), tuple(in_widths), tuple(out_widths)
        self.max_in, self.max_out, self.stride = max(in_widths), max(out_widths), stride
        self.kernels = sorted({op.kernel for op in ops})
        self.se_gate = se_gate

    def _conv(self, kernel_size, max_in, max_out, suffix, per_kernel=False, bn_suffix=None, **kwargs):
        name = f"{self.name}_{suffix}" + (f"_k{kernel_size}" if per_kernel else "")
        return SlicedConv(kernel_size, max_in, max_out, suffix, bn_suffix=bn_suffix or f"{suffix}_bn",
                          name=name, **kwargs)

    def _per_kernel(self, max_in, max_out, suffix, **kwargs) -> Dict[str, SlicedConv]:
        """One conv per kernel size of the ops (carrying the layer's stride), keyed `k{size}`."""
        return {f"k{k}": self._conv(k, max_in, max_out, suffix, per_kernel=True, strides=self.stride,
                                    **kwargs) for k in self.kernels}

    def _squeeze_excite(self, body_width) -> Optional[_SlicedSqueezeExcite]:
        """SE over the widest body, or None when no op has SE; `body_width(op, in)` is its input width."""
        uses = [(body_width(op, c), op.se) for op in self.ops if op.se for c in self.in_widths]
        if not uses:
            return None
        return _SlicedSqueezeExcite(max(w for w, _ in uses),
                                    max(_SlicedSqueezeExcite.hidden(w, r) for w, r in uses),
                                    self.se_gate, name=f"{self.name}_se")

    def plan(self, op: OpChoice, in_channels: int, out_channels: int) -> List[_Step]:
        raise NotImplementedError

    def forward(self, op: OpChoice, x, out_channels: int, activation, se_activation, regs: list):
        """Runs the plan of `op` on `x`; appends the L2 term of every conv to `regs`."""
        for step in self.plan(op, x.shape[-1], out_channels):
            if step.se_ratio:
                x = step.module.forward(x, step.se_ratio, se_activation, regs)
            else:
                x = _apply(step.module, x, step.out_channels, regs)
                x = activation(x) if step.activate else x
        return x

    def _convs(self, op, in_channels, out_channels):
        for step in self.plan(op, in_channels, out_channels):
            if step.se_ratio:
                yield from step.module.convs(step.in_channels, step.se_ratio)
            else:
                yield step.module, step.in_channels, step.out_channels

    def used_weights(self, op, in_channels, out_channels) -> UsedWeights:
        return [used for conv, i, o in self._convs(op, in_channels, out_channels)
                for used in conv.used_weights(i, o)]

    def export(self, op, in_channels, out_channels) -> Dict[str, Dict[str, np.ndarray]]:
        result = {}
        for conv, i, o in self._convs(op, in_channels, out_channels):
            for suffix, values in conv.export(i, o).items():
                result.setdefault(suffix, {}).update(values)
        return result


class _Convs(_OpFamily):
    """kxk conv + BN + act (`layers.ConvBnAct`), one per kernel size."""
    block_type = "conv"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv = self._per_kernel(self.max_in, self.max_out, "conv", bn_suffix="bn")

    def plan(self, op, in_channels, out_channels):
        return [_Step(self.conv[f"k{op.kernel}"], in_channels, out_channels, activate=True)]


class _InvertedBottlenecks(_OpFamily):
    """IBN (`layers.InvertedBottleneck`): shared expand and project, a depthwise conv per kernel."""
    block_type = "ibn"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        body = lambda op, c: expanded_width(c, op.expansion)  # noqa: E731  (e=1: the input width)
        max_body = max(body(op, c) for op in self.ops for c in self.in_widths)
        expanded = [body(op, c) for op in self.ops if op.expansion != 1 for c in self.in_widths]
        self.expand = self._conv(1, self.max_in, max(expanded), "expand") if expanded else None
        self.depthwise = self._per_kernel(max_body, max_body, "depthwise", depthwise=True)
        self.se = self._squeeze_excite(body)
        self.project = self._conv(1, max_body, self.max_out, "project")

    def plan(self, op, in_channels, out_channels):
        body = expanded_width(in_channels, op.expansion)
        steps = [_Step(self.expand, in_channels, body, activate=True)] if op.expansion != 1 else []
        steps.append(_Step(self.depthwise[f"k{op.kernel}"], body, body, activate=True))
        steps += [_Step(self.se, body, body, se_ratio=op.se)] if op.se else []
        return steps + [_Step(self.project, body, out_channels)]


class _FusedInvertedBottlenecks(_OpFamily):
    """Fused IBN (`layers.FusedInvertedBottleneck`): a kxk expansion per kernel, a shared project."""
    block_type = "fused"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        body = lambda op, c: expanded_width(c, op.expansion)  # noqa: E731
        max_body = max(body(op, c) for op in self.ops for c in self.in_widths)
        self.fused = self._per_kernel(self.max_in, max_body, "fused")
        self.se = self._squeeze_excite(body)
        self.project = self._conv(1, max_body, self.max_out, "project")

    def plan(self, op, in_channels, out_channels):
        body = expanded_width(in_channels, op.expansion)
        steps = [_Step(self.fused[f"k{op.kernel}"], in_channels, body, activate=True)]
        steps += [_Step(self.se, body, body, se_ratio=op.se)] if op.se else []
        return steps + [_Step(self.project, body, out_channels)]


class _TuckerConvs(_OpFamily):
    """Tucker (`layers.TuckerConv`): shared compress and output convs, a kxk core per kernel."""
    block_type = "tucker"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if any(op.se for op in self.ops):
            raise ValueError(f"{self.name}: Tucker convolutions have no squeeze-and-excite")
        max_rank_in = max(self._ranks(op, c, self.max_out)[0] for op in self.ops for c in self.in_widths)
        max_rank_out = max(self._ranks(op, self.max_in, c)[1] for op in self.ops for c in self.out_widths)
        self.compress = self._conv(1, self.max_in, max_rank_in, "compress")
        self.core = self._per_kernel(max_rank_in, max_rank_out, "core")
        self.project = self._conv(1, max_rank_out, self.max_out, "project")

    @staticmethod
    def _ranks(op, in_channels, out_channels) -> Tuple[int, int]:
        return (round_filters(in_channels * op.input_rank_ratio),
                round_filters(out_channels * op.output_rank_ratio))

    def plan(self, op, in_channels, out_channels):
        rank_in, rank_out = self._ranks(op, in_channels, out_channels)
        return [_Step(self.compress, in_channels, rank_in, activate=True),
                _Step(self.core[f"k{op.kernel}"], rank_in, rank_out, activate=True),
                _Step(self.project, rank_out, out_channels)]


OP_FAMILIES = {f.block_type: f for f in (_Convs, _InvertedBottlenecks, _FusedInvertedBottlenecks, _TuckerConvs)}
