"""Reading and rewriting .tflite flatbuffers through the TFLite schema's generated object API.

One place for what every model edit needs: unpack (`read_model`), an op's builtin code, the ops with
weights, find the SSD postprocess op, and
pack again with the weights buffers 16-byte aligned as the schema asks (`force_align: 16`), which
the generated `Pack` alone does not guarantee.
"""
import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as tfl

TFLITE_IDENTIFIER = b"TFL3"
# Ops whose input 1 is their weights (per output channel) and input 2 their optional bias.
WEIGHTED_OPS = frozenset({tfl.BuiltinOperator.CONV_2D, tfl.BuiltinOperator.DEPTHWISE_CONV_2D,
                          tfl.BuiltinOperator.FULLY_CONNECTED})
POSTPROCESS_OP = "TFLite_Detection_PostProcess"


def read_model(model_bytes: bytes) -> "tfl.ModelT":
    return tfl.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)


def as_bytes(value) -> bytes:
    """A flatbuffer string field (bytes, str or None) as bytes."""
    return value.encode() if isinstance(value, str) else bytes(value or b"")


def builtin_code(model: "tfl.ModelT", op: "tfl.OperatorT") -> int:
    """The `tfl.BuiltinOperator` of `op` (newer codes live in `builtinCode`, older in the deprecated field)."""
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def single_subgraph(model: "tfl.ModelT") -> "tfl.SubGraphT":
    if len(model.subgraphs) != 1:
        raise ValueError(f"expected a model with one subgraph, found {len(model.subgraphs)}")
    if any(buffer.offset for buffer in model.buffers):
        raise ValueError("models whose weights are stored outside the flatbuffer (over 2 GB) are not supported")
    return model.subgraphs[0]


def postprocess_op(model: "tfl.ModelT", subgraph: "tfl.SubGraphT") -> "tfl.OperatorT":
    """The one TFLite_Detection_PostProcess op of `subgraph`."""
    found = [op for op in subgraph.operators
             if as_bytes(model.operatorCodes[op.opcodeIndex].customCode) == POSTPROCESS_OP.encode()]
    if len(found) != 1:
        raise ValueError(f"expected one {POSTPROCESS_OP} op in the model, found {len(found)}")
    return found[0]


class _AlignedBuffersBuilder(flatbuffers.Builder):
    """Keeps byte vectors (the weights buffers) 16-byte aligned."""

    def CreateNumpyVector(self, x):
        if x.dtype == np.uint8:
            self.Prep(16, x.size)
        return super().CreateNumpyVector(x)


def pack_model(model: "tfl.ModelT") -> bytes:
    builder = _AlignedBuffersBuilder(1024 * 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())
