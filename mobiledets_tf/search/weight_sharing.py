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

An `OpFamily` holds these for one block type. It runs each op by the same plan the standalone Keras
block is built from (`layers.block_plans.block_plan`, through `OpChoice.plan`): the sliced convs and
the SE, with their channels. Running it, the weights it uses (`used_weights`) and their export under
the names of the standalone block's sublayers (`export`: expand, depthwise_bn, se_reduce, ...) all
follow that one plan, so the block rules live in `layers/` only.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from mobiledets_tf.keras import keras
from mobiledets_tf.layers import defaults
from mobiledets_tf.layers.block_plans import ConvStep, SqueezeExciteStep
from mobiledets_tf.layers.squeeze_excite import SqueezeExciteGate
from mobiledets_tf.search.choices import OpChoice

# (variable, index) pairs: the part of a variable one choice uses.
UsedWeights = List[Tuple[tf.Variable, Tuple[slice, ...]]]


def used_size(used: UsedWeights) -> int:
    """How many weights the (variable, index) parts hold (from the shapes alone, no TensorFlow op)."""
    total = 0
    for var, index in used:
        shape = var.shape.as_list()
        total += int(np.prod([len(range(*part.indices(dim))) for part, dim in zip(index, shape)] +
                             shape[len(index):]))
    return total


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
    pool -> 1x1 conv (bias) to the step's hidden width -> activation -> 1x1 conv (bias) -> gate."""

    def __init__(self, max_channels: int, max_hidden: int, gate: str, **kwargs):
        super().__init__(**kwargs)
        self.reduce = SlicedConv(1, max_channels, max_hidden, "se_reduce", use_bias=True,
                                 name=f"{self.name}_reduce")
        self.expand = SlicedConv(1, max_hidden, max_channels, "se_expand", use_bias=True,
                                 name=f"{self.name}_expand")
        self.gate = SqueezeExciteGate(gate, name=f"{self.name}_gate")

    def convs(self, step: SqueezeExciteStep):
        """(conv, in, out) of the two convs of `step`."""
        return [(self.reduce, step.channels, step.hidden), (self.expand, step.hidden, step.channels)]

    def forward(self, x, step: SqueezeExciteStep, activation, regs: list):
        (reduce, _, hidden), (expand, _, channels) = self.convs(step)
        s = activation(_apply(reduce, tf.reduce_mean(x, (1, 2), keepdims=True), hidden, regs))
        return self.gate([x, _apply(expand, s, channels, regs)])


def _apply(conv: SlicedConv, x, out_channels: int, regs: list):
    y, reg = conv.forward(x, out_channels)
    regs.append(reg)
    return y


def _conv_key(step: ConvStep) -> str:
    """The shared conv a step uses: one per step name, and per kernel size for the kxk conv."""
    return f"{step.name}_k{step.kernel_size}" if step.spatial else step.name


class OpFamily(keras.layers.Layer):
    """The shared weights of the ops of one block type at one layer position.

    Every op's plan at every pair of input and output widths is laid out once; each conv of those
    plans (by `_conv_key`) and the SE are sized for their widest use. Running an op, the weights it
    uses and their export all follow its plan.
    """

    def __init__(self, block_type: str, ops: Sequence[OpChoice], in_widths: Sequence[int],
                 out_widths: Sequence[int], stride: int, block_name: str, se_gate: str):
        super().__init__(name=f"{block_name}_{block_type}")
        self.ops, self.stride = tuple(ops), stride
        widest: Dict[str, List] = {}  # conv key -> [a step using it, widest input, widest output]
        se_sizes = []
        for op in self.ops:
            for in_width in in_widths:
                for out_width in out_widths:
                    for step in op.plan(in_width, out_width, stride):
                        if isinstance(step, SqueezeExciteStep):
                            se_sizes.append((step.channels, step.hidden))
                            continue
                        entry = widest.setdefault(_conv_key(step), [step, 0, 0])
                        entry[1], entry[2] = max(entry[1], step.in_channels), max(entry[2], step.out_channels)
        self.convs = {key: SlicedConv(step.kernel_size, max_in, max_out, step.name, strides=step.strides,
                                      depthwise=step.depthwise, bn_suffix=step.bn_name,
                                      name=f"{self.name}_{key}")
                      for key, (step, max_in, max_out) in widest.items()}
        self.se = None
        if se_sizes:
            self.se = _SlicedSqueezeExcite(max(c for c, _ in se_sizes), max(h for _, h in se_sizes),
                                           se_gate, name=f"{self.name}_se")

    def forward(self, op: OpChoice, x, out_channels: int, activation, se_activation, regs: list):
        """Runs the plan of `op` on `x`; appends the L2 term of every conv to `regs`."""
        for step in op.plan(x.shape[-1], out_channels, self.stride):
            if isinstance(step, SqueezeExciteStep):
                x = self.se.forward(x, step, se_activation, regs)
            else:
                x = _apply(self.convs[_conv_key(step)], x, step.out_channels, regs)
                x = x if step.linear else activation(x)
        return x

    def _used_convs(self, op, in_channels, out_channels):
        for step in op.plan(in_channels, out_channels, self.stride):
            if isinstance(step, SqueezeExciteStep):
                yield from self.se.convs(step)
            else:
                yield self.convs[_conv_key(step)], step.in_channels, step.out_channels

    def used_weights(self, op, in_channels, out_channels) -> UsedWeights:
        return [used for conv, i, o in self._used_convs(op, in_channels, out_channels)
                for used in conv.used_weights(i, o)]

    def export(self, op, in_channels, out_channels) -> Dict[str, Dict[str, np.ndarray]]:
        result = {}
        for conv, i, o in self._used_convs(op, in_channels, out_channels):
            for suffix, values in conv.export(i, o).items():
                result.setdefault(suffix, {}).update(values)
        return result
