"""Removing int8 multiplications by a constant scalar by folding them into quantization scales.

In int8, hard-swish's decomposed form is MUL(x, 1/6), ADD(x, 3) with RELU6, MUL; the hard-sigmoid gate
of MobileNetV3's squeeze-and-excite is ADD with RELU6, then MUL(., 1/6). A multiplication of an int8
tensor by a constant c > 0 moves no value across the integer grid: it only requantizes, and on CPUs it
costs as much as any other elementwise op (MobileDet-CPU has 57 of them). `fold_scalar_multiplications`
removes such a MUL: its consumers read its input x directly, and quantization parameters alone restore
the meaning of every integer downstream:
- a tensor that now holds 1/c times its former real value keeps its integers and zero point, its
  scale times 1/c;
- MUL by a tensor not rescaled, MEAN, RESHAPE, AVERAGE_POOL_2D and MAX_POOL_2D pass the rescaling on
  to their output (their input and output scales change together: the same integers come out);
- CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED absorb it in their weight scales (times c), so their
  outputs are unchanged and input scale x weight scale is still the int32 bias's scale (one that
  would read x itself, whose scale times c is not the product's, is left unfolded).
A MUL is folded only if every path from it ends in an absorbing op; one reaching anything else (ADD,
CONCATENATION, LOGISTIC, a model output, a fused activation on a rescaled output) stays as it was.

Every remaining op computes the same function on the same integers, except the first consumers, which
now read x with x's own scale instead of its requantized copy at x*c: one rounding fewer. After
post-training calibration the copy's range is exactly x's times c, so nothing but that rounding
changes; after quantization-aware training the copy had a range of its own, learnt to track the same.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from mobiledets_tf.export.flatbuffer_model import WEIGHTED_OPS, builtin_code, pack_model, read_model, single_subgraph

OP = tfl.BuiltinOperator
PASS_ON_OPS = {OP.MUL, OP.MEAN, OP.RESHAPE, OP.AVERAGE_POOL_2D, OP.MAX_POOL_2D}
ABSORBING_OPS = WEIGHTED_OPS   # weights are their input 1
RELATIVE_SCALE_TOLERANCE = 1e-6   # TFLite's own tolerance between bias scale and input x weight scale


class _Unfoldable(Exception):
    """A path from the MUL reaches an op that cannot take the rescaling."""


@dataclass
class _Plan:
    """The edits of one fold of MUL(x, c): rewired inputs, tensor scale factors, absorbing ops."""
    x: int
    c: float
    rewired: List[Tuple[int, int]] = field(default_factory=list)   # (op index, input slot) -> x
    tensor_factors: Dict[int, float] = field(default_factory=dict)
    absorbing: List[Tuple[int, float]] = field(default_factory=list)   # (op index, input rescaling)


class _Graph:
    """One subgraph and the (op, input slot) pairs that read each tensor, edited in place."""

    def __init__(self, model: "tfl.ModelT"):
        self.model = model
        self.subgraph = single_subgraph(model)
        self.index()

    def index(self) -> None:
        self.consumers: Dict[int, List[Tuple[int, int]]] = {}
        for op_index, op in enumerate(self.subgraph.operators):
            for slot, tensor in enumerate(op.inputs):
                if tensor >= 0:
                    self.consumers.setdefault(int(tensor), []).append((op_index, slot))

    def op_code(self, op: "tfl.OperatorT") -> int:
        return builtin_code(self.model, op)

    def constant(self, tensor: int) -> Optional[np.ndarray]:
        data = self.model.buffers[self.subgraph.tensors[tensor].buffer].data
        return None if data is None or len(data) == 0 else np.asarray(data, np.uint8)

    def is_int8(self, tensor: int) -> bool:
        return self.subgraph.tensors[tensor].type == tfl.TensorType.INT8

    def scale(self, tensor: int) -> Optional[np.ndarray]:
        q = self.subgraph.tensors[tensor].quantization
        return None if q is None or q.scale is None or len(q.scale) == 0 else np.asarray(q.scale, np.float64)

    def constant_scalar(self, tensor: int) -> Optional[float]:
        """The real value of a one-element int8 constant, else None."""
        data, scale = self.constant(tensor), self.scale(tensor)
        if data is None or data.size != 1 or not self.is_int8(tensor) or scale is None or len(scale) != 1:
            return None
        zero_point = self.subgraph.tensors[tensor].quantization.zeroPoint
        return float(scale[0]) * (int(data.view(np.int8)[0]) - int(zero_point[0] if zero_point is not None else 0))


def _same_scale(a: float, b: float) -> bool:
    return abs(a - b) <= RELATIVE_SCALE_TOLERANCE * min(a, b)


def _fused_activation(op: "tfl.OperatorT") -> int:
    return getattr(op.builtinOptions, "fusedActivationFunction", tfl.ActivationFunctionType.NONE)


def _scalar_multiplication(graph: _Graph, op: "tfl.OperatorT") -> Optional[Tuple[int, float]]:
    """(x, c) when `op` is an int8 MUL(x, c) by a constant c > 0 without fused activation, else None."""
    if graph.op_code(op) != OP.MUL or len(op.inputs) != 2 or _fused_activation(op) != tfl.ActivationFunctionType.NONE:
        return None
    for x_slot in (0, 1):
        x, c = int(op.inputs[x_slot]), int(op.inputs[1 - x_slot])
        value = graph.constant_scalar(c)
        if value is not None and value > 0 and graph.constant(x) is None and graph.is_int8(x) \
                and graph.is_int8(int(op.outputs[0])):
            return x, value
    return None


def _rescale(graph: _Graph, plan: _Plan, tensor: int, factor: float, outputs: Set[int]) -> None:
    """Plans that `tensor` holds `factor` times its former real value, and what its consumers do."""
    if tensor in outputs or tensor in plan.tensor_factors or not graph.is_int8(tensor) or graph.scale(tensor) is None:
        raise _Unfoldable
    plan.tensor_factors[tensor] = factor
    for op_index, slot in graph.consumers.get(tensor, []):
        _consumer_reads_rescaled(graph, plan, op_index, slot, factor, outputs)


def _consumer_reads_rescaled(graph: _Graph, plan: _Plan, op_index: int, slot: int, factor: float,
                             outputs: Set[int]) -> None:
    op = graph.subgraph.operators[op_index]
    code = graph.op_code(op)
    rescaled = [s for s, t in enumerate(op.inputs) if t in plan.tensor_factors or (op_index, s) in plan.rewired]
    if len(rescaled) != 1:
        raise _Unfoldable   # both inputs of one op rescaled (e.g. MUL(t, t))
    if code in ABSORBING_OPS and slot == 0:
        weights = int(op.inputs[1])
        if len(graph.consumers.get(weights, [])) != 1 or graph.scale(weights) is None:
            raise _Unfoldable
        if (op_index, slot) in plan.rewired and not _same_scale(graph.scale(plan.x)[0] * plan.c,
                                                                graph.scale(int(op.inputs[0]))[0]):
            raise _Unfoldable   # the bias's scale would no longer be input scale x weight scale
        plan.absorbing.append((op_index, factor))
        return
    if code in PASS_ON_OPS and (code == OP.MUL or slot == 0) and len(op.outputs) == 1 \
            and _fused_activation(op) == tfl.ActivationFunctionType.NONE:
        _rescale(graph, plan, int(op.outputs[0]), factor, outputs)
        return
    raise _Unfoldable


def _plan_fold(graph: _Graph, op_index: int, x: int, c: float) -> Optional[_Plan]:
    product = int(graph.subgraph.operators[op_index].outputs[0])
    outputs = {int(t) for t in graph.subgraph.outputs}
    readers = graph.consumers.get(product, [])
    if product in outputs or not readers:
        return None
    plan = _Plan(x, c, rewired=list(readers))
    try:
        for reader, slot in readers:
            # The reader now sees x instead of x * c: 1/c times the value it read before.
            _consumer_reads_rescaled(graph, plan, reader, slot, 1.0 / c, outputs)
    except _Unfoldable:
        return None
    return plan


def _apply(graph: _Graph, plan: _Plan) -> None:
    subgraph = graph.subgraph
    for op_index, slot in plan.rewired:
        subgraph.operators[op_index].inputs[slot] = plan.x
    for tensor, factor in plan.tensor_factors.items():
        q = subgraph.tensors[tensor].quantization
        q.scale = [float(s) * factor for s in q.scale]
        if q.min is not None and len(q.min):
            q.min, q.max = [float(v) * factor for v in q.min], [float(v) * factor for v in q.max]
    for op_index, factor in plan.absorbing:
        op = subgraph.operators[op_index]
        weights = subgraph.tensors[int(op.inputs[1])]
        weights.quantization.scale = [float(s) / factor for s in weights.quantization.scale]


def fold_scalar_multiplications(model_bytes: bytes) -> Tuple[bytes, int]:
    """`model_bytes` with every foldable int8 MUL by a positive constant removed (module docstring);
    also returns how many were removed. A model with none comes back unchanged."""
    model = read_model(model_bytes)
    graph = _Graph(model)
    folded, op_index = 0, 0
    while op_index < len(graph.subgraph.operators):
        op = graph.subgraph.operators[op_index]
        found = _scalar_multiplication(graph, op)
        plan = _plan_fold(graph, op_index, *found) if found else None
        if plan is None:
            op_index += 1
            continue
        _apply(graph, plan)
        del graph.subgraph.operators[op_index]
        graph.index()
        folded += 1
    return (pack_model(model) if folded else model_bytes), folded
