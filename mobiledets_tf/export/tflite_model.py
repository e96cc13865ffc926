"""A plain description of a .tflite file: its subgraphs, operators and tensors.

The flatbuffer is read with the schema bindings that ship with LiteRT (`ai_edge_litert`, a pinned
dependency); this module is the only place that imports them, and it does not import TensorFlow.
Each operator records its name (the BuiltinOperator name, or the custom code such as
`TFLite_Detection_PostProcess`), its opcode version and the indices of its input and output tensors;
each tensor records its dtype, shape, shape signature (-1 marks a dynamic dimension) and whether it is
a constant (its buffer holds data).
"""
import dataclasses
from typing import Dict, Optional, Tuple, Union

from ai_edge_litert import schema_py_generated as schema

from mobiledets_tf import fileio

FLOAT_DTYPES = ("float16", "float32", "float64", "bfloat16")
INT8_DTYPES = ("int8", "uint8")


def _enum_names(enum_class) -> Dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


BUILTIN_OPERATOR_NAMES = _enum_names(schema.BuiltinOperator)
TENSOR_TYPE_NAMES = {value: name.lower() for value, name in _enum_names(schema.TensorType).items()}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: Tuple[int, ...]
    shape_signature: Tuple[int, ...]
    is_constant: bool

    @property
    def is_dynamic(self) -> bool:
        return -1 in self.shape_signature

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclasses.dataclass(frozen=True)
class OperatorInfo:
    """One operator; `index` is its position in the subgraph's execution order."""
    index: int
    name: str
    is_custom: bool
    version: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SubgraphInfo:
    name: str
    tensors: Tuple[TensorInfo, ...]
    operators: Tuple[OperatorInfo, ...]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]

    def input_tensors(self, op: OperatorInfo) -> Tuple[TensorInfo, ...]:
        return tuple(self.tensors[i] for i in op.inputs)

    def output_tensors(self, op: OperatorInfo) -> Tuple[TensorInfo, ...]:
        return tuple(self.tensors[i] for i in op.outputs)

    def consumers(self, tensor_index: int) -> Tuple[OperatorInfo, ...]:
        """The operators that read tensor `tensor_index`, in execution order."""
        return tuple(op for op in self.operators if tensor_index in op.inputs)


@dataclasses.dataclass(frozen=True)
class TFLiteModelInfo:
    name: str
    subgraphs: Tuple[SubgraphInfo, ...]

    @property
    def main(self) -> SubgraphInfo:
        """Subgraph 0, the one the interpreter runs (others are bodies of control-flow ops)."""
        return self.subgraphs[0]


def read_tflite(model: Union[str, bytes], name: Optional[str] = None) -> TFLiteModelInfo:
    """Describes a .tflite model given as a file path or as the flatbuffer's bytes."""
    if isinstance(model, str):
        name = name or model
        model = fileio.read_bytes(model)
    root = schema.Model.GetRootAs(model, 0)
    constant_buffers = _buffers_with_data(root)
    op_codes = [_read_opcode(root.OperatorCodes(i)) for i in range(root.OperatorCodesLength())]
    subgraphs = tuple(_read_subgraph(root.Subgraphs(i), op_codes, constant_buffers)
                      for i in range(root.SubgraphsLength()))
    return TFLiteModelInfo(name=name or "<bytes>", subgraphs=subgraphs)


def _buffers_with_data(root) -> frozenset:
    """Indices of buffers that hold data, inline or (models over 2 GB) after the flatbuffer."""
    return frozenset(i for i in range(root.BuffersLength())
                     if root.Buffers(i).DataLength() > 0 or root.Buffers(i).Size() > 0)


def _read_opcode(code) -> Tuple[str, bool, int]:
    # Builtin codes above 127 live in `builtin_code`; older files only fill `deprecated_builtin_code`.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = BUILTIN_OPERATOR_NAMES.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        return code.CustomCode().decode("utf-8"), True, code.Version()
    return name, False, code.Version()


def _read_subgraph(graph, op_codes, constant_buffers) -> SubgraphInfo:
    tensors = tuple(_read_tensor(graph.Tensors(i), i, constant_buffers)
                    for i in range(graph.TensorsLength()))
    operators = tuple(_read_operator(graph.Operators(i), i, op_codes)
                      for i in range(graph.OperatorsLength()))
    return SubgraphInfo(name=_text(graph.Name()), tensors=tensors, operators=operators,
                        inputs=_ints(graph.InputsAsNumpy()), outputs=_ints(graph.OutputsAsNumpy()))


def _read_tensor(tensor, index: int, constant_buffers) -> TensorInfo:
    shape = _ints(tensor.ShapeAsNumpy())
    signature = _ints(tensor.ShapeSignatureAsNumpy()) if tensor.ShapeSignatureLength() else shape
    return TensorInfo(index=index, name=_text(tensor.Name()),
                      dtype=TENSOR_TYPE_NAMES.get(tensor.Type(), f"type_{tensor.Type()}"),
                      shape=shape, shape_signature=signature,
                      is_constant=tensor.Buffer() in constant_buffers)


def _read_operator(op, index: int, op_codes) -> OperatorInfo:
    name, is_custom, version = op_codes[op.OpcodeIndex()]
    # -1 marks an omitted optional input (e.g. a convolution without bias).
    inputs = tuple(i for i in _ints(op.InputsAsNumpy()) if i >= 0)
    outputs = tuple(i for i in _ints(op.OutputsAsNumpy()) if i >= 0)
    return OperatorInfo(index=index, name=name, is_custom=is_custom, version=version,
                        inputs=inputs, outputs=outputs)


def _ints(values) -> Tuple[int, ...]:
    # The generated accessors return 0 instead of an empty array when a vector is absent.
    return tuple(int(v) for v in values) if not isinstance(values, int) else ()


def _text(value: Optional[bytes]) -> str:
    return value.decode("utf-8") if value else ""
