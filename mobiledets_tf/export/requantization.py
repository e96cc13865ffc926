"""XNNPACK's limit on a quantized convolution's requantization scale, enforced on a converted file.

XNNPACK runs an 8-bit CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED only while input scale x weight
scale / output scale stays below 256 on every output channel; on one at or above it, TFLite's
XNNPACK delegate fails to prepare the model (the interpreter reports "failed to create XNNPACK
runtime"; a MobileNetV3-Large file once made it abort the process instead), so the file cannot be
run with the default CPU delegate. The ratio gets that large when a convolution's output range is
tiny next to what its inputs and weights can produce: an output that stays (almost) zero, such as a ReLU after a
convolution whose outputs are all negative (squeeze-and-excite reduce layers that training left
dead). Post-training int8 widens such ranges while calibrating (`calibration.widened_dead_ranges`);
an int8_qat file takes its ranges from the QAT model, whose data-calibrated ranges
(`mobiledets_tf.quantization.range_calibration`) and moving averages keep such a tensor at about zero.

`widened_collapsed_outputs` does for a converted file what calibration does for post-training int8:
the output scale of each such convolution grows until the ratio is `TARGET_REQUANTIZATION_SCALE`
(its zero point kept, so 0 stays exact and the tensor's values, all about zero, still round to
zero), where every op reading that tensor requantizes its input anyway (convolutions, ADD, SUB, MUL,
LOGISTIC, DEQUANTIZE). A tensor read by anything else (ops whose input and output share their
quantization, a model output) is left, and reported.
"""
import dataclasses
from typing import List, Tuple

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from mobiledets_tf.export.flatbuffer_model import (WEIGHTED_OPS, as_bytes, builtin_code, pack_model, read_model,
                                                   single_subgraph)
from mobiledets_tf.export.tflite_model import BUILTIN_OPERATOR_NAMES

XNNPACK_MAX_REQUANTIZATION_SCALE = 256.0
# What widened ranges are brought to: a quarter of the limit.
TARGET_REQUANTIZATION_SCALE = XNNPACK_MAX_REQUANTIZATION_SCALE / 4
QUANTIZED_TYPES = (tfl.TensorType.INT8, tfl.TensorType.UINT8)
OP = tfl.BuiltinOperator
REQUANTIZING_READERS = WEIGHTED_OPS | {OP.ADD, OP.SUB, OP.MUL, OP.LOGISTIC, OP.DEQUANTIZE}


@dataclasses.dataclass(frozen=True)
class RequantizationExcess:
    """A convolution whose largest per-channel requantization scale XNNPACK refuses."""
    op: str         # its operator type, e.g. CONV_2D
    output: str     # its output tensor's name
    scale: float    # input scale x weight scale / output scale, the largest over its channels

    def describe(self) -> str:
        return f"{self.op} writing {self.output} ({self.scale:.4g})"


def _excesses(model: "tfl.ModelT", subgraph: "tfl.SubGraphT") -> List[Tuple[int, RequantizationExcess]]:
    """(output tensor index, excess) of every 8-bit convolution at or above the limit, in execution order."""
    found = []
    for op in subgraph.operators:
        code = builtin_code(model, op)
        if code not in WEIGHTED_OPS:
            continue
        source, weights, output = (subgraph.tensors[int(op.inputs[0])], subgraph.tensors[int(op.inputs[1])],
                                   subgraph.tensors[int(op.outputs[0])])
        if not all(t.type in QUANTIZED_TYPES for t in (source, weights, output)):
            continue
        scale = (float(np.asarray(source.quantization.scale)[0]) * float(np.max(weights.quantization.scale))
                 / float(np.asarray(output.quantization.scale)[0]))
        if scale >= XNNPACK_MAX_REQUANTIZATION_SCALE:
            found.append((int(op.outputs[0]), RequantizationExcess(
                BUILTIN_OPERATOR_NAMES[code], as_bytes(output.name).decode(), scale)))
    return found


def requantization_scale_excesses(model_bytes: bytes) -> List[RequantizationExcess]:
    """The 8-bit convolutions of `model_bytes` whose requantization scale reaches
    `XNNPACK_MAX_REQUANTIZATION_SCALE` on some output channel, in execution order."""
    model = read_model(model_bytes)
    return [excess for _, excess in _excesses(model, single_subgraph(model))]


def widened_collapsed_outputs(model_bytes: bytes) -> Tuple[bytes, List[RequantizationExcess],
                                                              List[RequantizationExcess]]:
    """(`model_bytes` with the output scale of every convolution over the limit widened where its
    readers allow, the excesses widened, the excesses left); see the module docstring. Unchanged
    bytes when there is nothing to widen. A widened tensor raises the ratio of the convolutions that
    read it, so the check runs again until none is left to widen."""
    model = read_model(model_bytes)
    subgraph = single_subgraph(model)
    outputs = {int(i) for i in subgraph.outputs}
    widened, left = [], {}
    for _ in range(len(subgraph.operators)):
        widenable = []
        for tensor_index, excess in _excesses(model, subgraph):
            readers = [builtin_code(model, op) for op in subgraph.operators
                       if tensor_index in {int(i) for i in op.inputs}]
            if tensor_index in outputs or not all(code in REQUANTIZING_READERS for code in readers):
                left[tensor_index] = excess
            else:
                widenable.append((tensor_index, excess))
        if not widenable:
            break
        for tensor_index, excess in widenable:
            quantization = subgraph.tensors[tensor_index].quantization
            quantization.scale = [float(np.asarray(quantization.scale)[0]) * excess.scale
                                  / TARGET_REQUANTIZATION_SCALE]
            widened.append(excess)
    return (pack_model(model) if widened else model_bytes), widened, list(left.values())
