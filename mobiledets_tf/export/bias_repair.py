"""Repairing the int32 biases that TFLite's conversion of a quantization-aware-trained model saturates.

An int8 convolution stores its bias as int32 at scale input scale x weight scale, per output channel.
A channel whose weights are almost zero while its bias is not (in an SSD head: a class that the
smallest feature maps never see, its kernel driven to ~1e-5 by weight decay and its logit carried by
the bias alone) gets a weight scale of ~1e-7 from its QAT range, and its bias then needs more than
32 bits. The QAT conversion clamps it to -2^31 (TFLite's post-training quantizer instead raises such
a channel's weight scale), so that channel computes nonsense: in a MobileDet-CPU head a class logit
of -5.6 came out as +0.04, a score of 0.51 at the largest anchors of every image, while the Keras
QAT model, whose bias is float, scored fine.

`repair_saturated_biases` does what the post-training quantizer does, after the fact: for every
CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED op with a saturated bias entry it raises those
channels' weight scales just enough for the float bias to fit in 2^30 steps, requantizes their int8
weights at the new scale (weights that small round to a few steps or to zero) and stores the bias
exactly. The float bias is not in the int8 file; it is read from a float32 conversion of the same
graph, whose ops carry the same output tensor names (BatchNorm folded the same way), made only when
a saturated bias is found.
"""
from typing import Callable, Dict, List, Tuple

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from mobiledets_tf.export.flatbuffer_model import (WEIGHTED_OPS, as_bytes, builtin_code, pack_model,
                                                    read_model, single_subgraph)

INT32_LIMIT = 2 ** 31 - 1
BIAS_STEPS = 2 ** 30   # a repaired bias uses at most half the int32 range, leaving room for the sum


def _weighted_ops(model: "tfl.ModelT", subgraph: "tfl.SubGraphT"):
    """(op, output name) of every op with weights and a bias."""
    for op in subgraph.operators:
        if (builtin_code(model, op) in WEIGHTED_OPS and len(op.inputs) > 2 and op.inputs[2] >= 0):
            yield op, as_bytes(subgraph.tensors[op.outputs[0]].name)


def _data(model: "tfl.ModelT", tensor: "tfl.TensorT", dtype) -> np.ndarray:
    return np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype)


def saturated_bias_channels(model: "tfl.ModelT", subgraph: "tfl.SubGraphT") -> List[Tuple["tfl.OperatorT", np.ndarray]]:
    """(op, boolean mask over its output channels) for every op with an int32 bias at the limits."""
    found = []
    for op, _ in _weighted_ops(model, subgraph):
        bias = subgraph.tensors[op.inputs[2]]
        if bias.type != tfl.TensorType.INT32:
            continue
        saturated = np.abs(_data(model, bias, np.int32).astype(np.int64)) >= INT32_LIMIT
        if saturated.any():
            found.append((op, saturated))
    return found


def _float_biases(float_model: "tfl.ModelT") -> Dict[bytes, np.ndarray]:
    """Output tensor name -> float32 bias of every op with weights of a float32 model."""
    subgraph = single_subgraph(float_model)
    biases = {}
    for op, name in _weighted_ops(float_model, subgraph):
        bias = subgraph.tensors[op.inputs[2]]
        if bias.type == tfl.TensorType.FLOAT32:
            biases[name] = _data(float_model, bias, np.float32)
    return biases


def _store(model: "tfl.ModelT", subgraph: "tfl.SubGraphT", tensor: "tfl.TensorT", values: np.ndarray) -> None:
    """Puts `values` in `tensor`'s buffer, or in a new one if another tensor shares it."""
    data = np.frombuffer(values.tobytes(), np.uint8)
    if sum(1 for other in subgraph.tensors if other.buffer == tensor.buffer) == 1:
        model.buffers[tensor.buffer].data = data
        return
    buffer = tfl.BufferT()
    buffer.data = data
    model.buffers.append(buffer)
    tensor.buffer = len(model.buffers) - 1


def _repair(model: "tfl.ModelT", subgraph: "tfl.SubGraphT", op: "tfl.OperatorT", saturated: np.ndarray,
            float_bias: np.ndarray) -> None:
    """Raises the weight scales of `op`'s `saturated` channels so `float_bias` fits (module docstring)."""
    inputs, weights, bias = (subgraph.tensors[i] for i in op.inputs[:3])
    input_scale = float(inputs.quantization.scale[0])
    scales = np.asarray(weights.quantization.scale, np.float64)
    per_tensor = scales.size == 1
    axis = 0 if per_tensor else weights.quantization.quantizedDimension
    integers = np.moveaxis(_data(model, weights, np.int8).reshape(weights.shape), axis, 0).astype(np.float64)
    channels = float_bias.size
    if not per_tensor and (scales.size != channels or integers.shape[0] != channels):
        raise ValueError(f"weights of {as_bytes(subgraph.tensors[op.outputs[0]].name)!r} do not match "
                         f"its {channels} biases")
    old = np.broadcast_to(scales, (channels,))
    needed = np.where(saturated, np.abs(float_bias.astype(np.float64)) / (input_scale * BIAS_STEPS), 0.0)
    new = np.maximum(old, needed)
    if per_tensor:
        new = np.full(channels, new.max())
        factors = old[:1] / new[:1]
    else:
        factors = (old / new).reshape((-1,) + (1,) * (integers.ndim - 1))
    requantized = np.clip(np.round(integers * factors), -127, 127).astype(np.int8)
    new_bias = np.where(new != old, np.round(float_bias / (input_scale * new)), _data(model, bias, np.int32))
    _store(model, subgraph, weights, np.moveaxis(requantized, 0, axis))
    _store(model, subgraph, bias, new_bias.astype(np.int32))
    new_scales = new[:1] if per_tensor else new
    weights.quantization.scale = new_scales.astype(np.float32).tolist()
    bias.quantization.scale = (input_scale * new_scales).astype(np.float32).tolist()


def repair_saturated_biases(model_bytes: bytes, float_conversion: Callable[[], bytes]) -> Tuple[bytes, int]:
    """`model_bytes` (an int8 .tflite) with its saturated int32 biases repaired, and how many bias
    entries were; `float_conversion()` returns the float32 .tflite of the same graph. A model
    without a saturated bias comes back unchanged (and `float_conversion` is not called)."""
    model = read_model(model_bytes)
    subgraph = single_subgraph(model)
    found = saturated_bias_channels(model, subgraph)
    if not found:
        return model_bytes, 0
    float_biases = _float_biases(read_model(float_conversion()))
    for op, saturated in found:
        name = as_bytes(subgraph.tensors[op.outputs[0]].name)
        if name not in float_biases or float_biases[name].size != saturated.size:
            raise ValueError(f"the float32 conversion has no op {name!r} with {saturated.size} biases "
                             "to repair the int8 one's saturated biases from")
        _repair(model, subgraph, op, saturated, float_biases[name])
    return pack_model(model), int(sum(int(saturated.sum()) for _, saturated in found))
