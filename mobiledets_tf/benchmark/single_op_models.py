"""One-op models cut out of a .tflite model, so that each operator can be timed on its own.

`single_op_model(model, i)` keeps operator i of the main subgraph with its tensors (shapes, types and
quantization unchanged) and the constant buffers it reads (weights, biases, anchors); its
non-constant inputs become the model's inputs and its outputs the model's outputs. The interpreter
runs such a model with the same kernels and delegate decisions as the operator in the whole graph
(XNNPACK decides per operator from the operator's own types, quantization and constant inputs).
"""
import copy
from typing import Iterator, Tuple

from ai_edge_litert import schema_py_generated as tfl

from mobiledets_tf.export.flatbuffer_model import as_bytes, builtin_code, pack_model, read_model, single_subgraph


def _has_data(model: "tfl.ModelT", buffer_index: int) -> bool:
    data = model.buffers[buffer_index].data
    return data is not None and len(data) > 0


def operator_name(model: "tfl.ModelT", op: "tfl.OperatorT") -> str:
    """The builtin name (CONV_2D, ...) or the custom code of an operator."""
    builtin = builtin_code(model, op)
    if builtin == tfl.BuiltinOperator.CUSTOM:
        return as_bytes(model.operatorCodes[op.opcodeIndex].customCode).decode("utf-8")
    return _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")


_BUILTIN_NAMES = {value: name for name, value in vars(tfl.BuiltinOperator).items()
                  if not name.startswith("_")}


def single_op_model(model: "tfl.ModelT", index: int) -> "tfl.ModelT":
    """A model holding only operator `index` of `model`'s main subgraph (see the module docstring)."""
    graph = single_subgraph(model)
    op = graph.operators[index]
    listed = [i for i in list(op.inputs) + list(op.outputs) + list(op.intermediates or []) if i >= 0]
    used = list(dict.fromkeys(listed))
    remap = {old: new for new, old in enumerate(used)}
    buffers, tensors, constant = [tfl.BufferT()], [], set()
    for old in used:
        tensor = copy.copy(graph.tensors[old])
        if _has_data(model, tensor.buffer):
            buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = len(buffers) - 1
            constant.add(old)
        else:
            tensor.buffer = 0
        tensors.append(tensor)

    def mapped(indices):
        return [remap[i] if i >= 0 else -1 for i in indices]

    new_op = copy.copy(op)
    new_op.inputs, new_op.outputs = mapped(op.inputs), mapped(op.outputs)
    if op.intermediates is not None:
        new_op.intermediates = mapped(op.intermediates)
    subgraph = tfl.SubGraphT()
    subgraph.tensors, subgraph.operators = tensors, [new_op]
    subgraph.inputs = [remap[i] for i in dict.fromkeys(op.inputs) if i >= 0 and i not in constant]
    subgraph.outputs = mapped(op.outputs)
    subgraph.name = as_bytes(graph.name)
    result = tfl.ModelT()
    result.version, result.operatorCodes = model.version, model.operatorCodes
    result.subgraphs, result.buffers = [subgraph], buffers
    result.description = b"one operator of " + as_bytes(model.description)
    return result


def single_op_models(model_bytes: bytes) -> Iterator[Tuple[int, str, bytes]]:
    """(index, operator name, one-op .tflite bytes) for each operator, in execution order."""
    model = read_model(model_bytes)
    for index, op in enumerate(single_subgraph(model).operators):
        yield index, operator_name(model, op), pack_model(single_op_model(model, index))
