"""Accelerator compatibility report of a .tflite model: operator data types, Edge TPU mapping.

`build_report` describes every operator of the main subgraph (its dtype class, whether it is fully
int8, whether it computes in float) and predicts how the Edge TPU compiler maps it, from Coral's
documented rules ("TensorFlow models on the Edge TPU", https://coral.ai/docs/edgetpu/models-intro/):

- only operators whose tensors are all 8-bit map (int8/uint8 activations; int8 weights and int32
  biases are allowed); an operator on float or other tensors is "working on an unsupported data type".
  A QUANTIZE that reads the float model input is reported as the compiler reports it ("otherwise
  supported, but not mapped due to some unspecified limitation");
- only the operators of the "Supported operations" table map; custom operators (the SSD
  `TFLite_Detection_PostProcess`) never do;
- a tensor with more than 3 dimensions may be larger than 1 only in its 3 innermost dimensions;
- tensor sizes must be static: the compiler rejects a graph with dynamic-sized tensors (-1 in a shape
  signature), and it rejects a model none of whose operators is quantized ("Model not quantized");
- the compiler cuts out ONE Edge TPU subgraph. Without `-a` it "cannot partition the model more than
  once, so as soon as an unsupported operation occurs, that operation and everything after it
  executes on the CPU, even if supported operations occur later". In execution order: operators that
  cannot map before the first one that can (e.g. QUANTIZE of a float input) stay on the CPU; the
  subgraph runs from the first operator that can map up to the first one after it that cannot; every
  later operator runs on the CPU, with its own reason if it has one, otherwise "More than one subgraph
  is not supported". Operators that cannot map at the very end (DEQUANTIZE and the postprocess op of
  an SSD) therefore stay on the CPU without moving anything else there.

The same `CompatibilityReport` holds what `mobiledets_tf.export.edgetpu.parse_compiler_log` reads
from a real compiler log, so a prediction and a compilation print and serialise alike. Statuses use
the compiler's wording; the two statuses the compiler never prints per operator (it rejects the whole
model instead) are `DYNAMIC_SIZE` and `NOT_COMPILED`.
"""
import dataclasses
import json
from typing import Dict, List, Optional, Tuple, Union

from mobiledets_tf import fileio
from mobiledets_tf.export.flatbuffer_model import POSTPROCESS_OP
from mobiledets_tf.export.tflite_model import (
    INT8_DTYPES, OperatorInfo, SubgraphInfo, TensorInfo, TFLiteModelInfo, read_tflite)

# Coral, "TensorFlow models on the Edge TPU", section "Supported operations"
# (https://coral.ai/docs/edgetpu/models-intro/#supported-operations), as TFLite builtin names.
# The table's "LSTM: unidirectional LSTM only" is TFLite's UNIDIRECTIONAL_SEQUENCE_LSTM.
EDGETPU_SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})

# Per-operator statuses, in the compiler's words.
MAPPED = "Mapped to Edge TPU"
UNSUPPORTED_DATA_TYPE = "Operation is working on an unsupported data type"
MORE_THAN_ONE_SUBGRAPH = "More than one subgraph is not supported"
NOT_SUPPORTED = "Operation not supported"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
UNSPECIFIED_LIMITATION = ("Operation is otherwise supported, but not mapped due to some "
                          "unspecified limitation")
VERSION_NOT_SUPPORTED = "Operation version not supported"
# Per-operator statuses of a model the compiler rejects as a whole (it prints no table then).
DYNAMIC_SIZE = "Tensor has dynamic size (static sizes only)"
NOT_COMPILED = "Not compiled (the compiler rejects the model)"

# Model-level errors, in the compiler's words.
MODEL_NOT_QUANTIZED = "Model not quantized"
DYNAMIC_SIZED_TENSORS = ("Attempting to use a delegate that only supports static-sized tensors "
                         "with a graph that has dynamic-sized tensors.")

PREDICTION = "prediction"
COMPILER = "edgetpu_compiler"


@dataclasses.dataclass
class OpRow:
    """One line of the `Operator  Count  Status` table; dtype class and reason only in predictions."""
    op: str
    count: int
    status: str
    dtype_class: str = ""
    reason: str = ""

    @property
    def on_edgetpu(self) -> bool:
        return self.status == MAPPED


@dataclasses.dataclass
class OperatorVerdict:
    """One operator of a prediction, in execution order."""
    index: int
    op: str
    dtype_class: str
    fully_int8: bool
    computes_in_float: bool
    status: str
    reason: str

    @property
    def on_edgetpu(self) -> bool:
        return self.status == MAPPED


@dataclasses.dataclass
class CompiledSegment:
    """What the compiler says about one output model (one per segment with `-n`)."""
    input_model: str = ""
    output_model: str = ""
    compile_time_ms: Optional[int] = None
    input_size: str = ""
    output_size: str = ""
    on_chip_memory_used: str = ""
    on_chip_memory_remaining: str = ""
    off_chip_memory_used: str = ""
    edgetpu_subgraphs: Optional[int] = None
    total_operations: Optional[int] = None
    operation_log: str = ""
    ops_on_edgetpu: Optional[int] = None
    ops_on_cpu: Optional[int] = None


@dataclasses.dataclass
class CompatibilityReport:
    source: str
    model: str
    rows: List[OpRow] = dataclasses.field(default_factory=list)
    ops_on_edgetpu: int = 0
    ops_on_cpu: int = 0
    edgetpu_subgraphs: int = 0
    compiled: bool = True
    errors: List[str] = dataclasses.field(default_factory=list)
    # Predictions only.
    operators: List[OperatorVerdict] = dataclasses.field(default_factory=list)
    only_int8_except_postprocess: Optional[bool] = None
    float_ops: List[str] = dataclasses.field(default_factory=list)
    # Compiler logs only.
    compiler_version: str = ""
    segments: List[CompiledSegment] = dataclasses.field(default_factory=list)

    @property
    def total_ops(self) -> int:
        return self.ops_on_edgetpu + self.ops_on_cpu

    @property
    def fully_int8_ops(self) -> List[str]:
        return [v.op for v in self.operators if v.fully_int8]

    @property
    def output_model(self) -> str:
        return self.segments[0].output_model if self.segments else ""

    def status_counts(self) -> Dict[Tuple[str, str], int]:
        """{(operator, status): count}, comparable between a prediction and a compiler log.

        Custom operators appear under their custom code in a prediction, as CUSTOM in a log.
        """
        counts: Dict[Tuple[str, str], int] = {}
        for row in self.rows:
            counts[row.op, row.status] = counts.get((row.op, row.status), 0) + row.count
        return counts

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CompatibilityReport":
        data = dict(data)
        data["rows"] = [OpRow(**row) for row in data.get("rows", [])]
        data["operators"] = [OperatorVerdict(**v) for v in data.get("operators", [])]
        data["segments"] = [CompiledSegment(**s) for s in data.get("segments", [])]
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "CompatibilityReport":
        return cls.from_dict(json.loads(text))


def save_report(report: CompatibilityReport, path: str) -> None:
    fileio.write_text_atomically(path, report.to_json() + "\n")


def load_report(path: str) -> CompatibilityReport:
    return CompatibilityReport.from_json(fileio.read_text(path))


# ----------------------------------------------------------------------------- per-operator facts

def dtype_kind(tensor: TensorInfo) -> Optional[str]:
    """"int8" for 8-bit tensors, the dtype of activations and float constants, None otherwise.

    Integer constants other than 8-bit weights (int32 biases, shapes, axes) do not count.
    """
    if tensor.dtype in INT8_DTYPES:
        return "int8"
    return tensor.dtype if tensor.is_float or not tensor.is_constant else None


def dtype_kinds(graph: SubgraphInfo, op: OperatorInfo) -> set:
    tensors = graph.input_tensors(op) + graph.output_tensors(op)
    return {kind for kind in map(dtype_kind, tensors) if kind is not None}


def dtype_class(graph: SubgraphInfo, op: OperatorInfo) -> str:
    """"int8" (all tensors 8-bit), a single dtype such as "float32", or "mixed"."""
    kinds = dtype_kinds(graph, op)
    if len(kinds) == 1:
        return kinds.pop()
    return "mixed" if kinds else "none"


def computes_in_float(graph: SubgraphInfo, op: OperatorInfo) -> bool:
    return any(t.is_float for t in graph.input_tensors(op) + graph.output_tensors(op))


def has_unsupported_rank(shape: Tuple[int, ...]) -> bool:
    """More than 3 dimensions, and one outside the 3 innermost is larger than 1."""
    return len(shape) > 3 and any(d != 1 for d in shape[:-3])


def activation_tensors(graph: SubgraphInfo, op: OperatorInfo):
    return [t for t in graph.input_tensors(op) + graph.output_tensors(op) if not t.is_constant]


def edgetpu_blocker(graph: SubgraphInfo, op: OperatorInfo) -> Optional[Tuple[str, str]]:
    """(status, reason) if `op` cannot map to the Edge TPU by itself, else None."""
    if dtype_class(graph, op) != "int8":
        if op.name == "QUANTIZE" and graph.input_tensors(op)[0].is_float:
            return UNSPECIFIED_LIMITATION, "quantizes a float input: runs on the CPU"
        other_dtypes = ", ".join(sorted(dtype_kinds(graph, op) - {"int8"}))
        return UNSUPPORTED_DATA_TYPE, f"{other_dtypes} tensors: only 8-bit tensors map"
    if op.is_custom:
        return NOT_SUPPORTED, "custom operator: runs on the CPU"
    if op.name not in EDGETPU_SUPPORTED_OPS:
        return NOT_SUPPORTED, "not in Coral's supported operations"
    activations = activation_tensors(graph, op)
    if any(has_unsupported_rank(t.shape) for t in activations):
        return UNSUPPORTED_RANK, "a tensor is larger than 1 outside its 3 innermost dimensions"
    if any(t.is_dynamic for t in activations):
        return DYNAMIC_SIZE, "a tensor has a dynamic dimension (-1 in its shape signature)"
    return None


# ----------------------------------------------------------------------------- model-level rules

def model_errors(graph: SubgraphInfo, fully_int8: List[bool]) -> List[str]:
    """The errors with which the compiler rejects the whole model."""
    errors = []
    if not any(fully_int8):
        errors.append(MODEL_NOT_QUANTIZED)
    used = {i for op in graph.operators for i in op.inputs + op.outputs} | set(graph.inputs)
    if any(graph.tensors[i].is_dynamic for i in used if not graph.tensors[i].is_constant):
        errors.append(DYNAMIC_SIZED_TENSORS)
    return errors


def single_subgraph_statuses(
        blockers: List[Optional[Tuple[str, str]]], names: List[str]) -> List[Tuple[str, str]]:
    """(status, reason) per operator in execution order, with ONE Edge TPU subgraph.

    The subgraph starts at the first operator that can map and ends before the first operator after
    it that cannot; later operators run on the CPU for their own reason if they have one, otherwise
    because a second subgraph would be needed.
    """
    start = next((i for i, b in enumerate(blockers) if b is None), len(blockers))
    end = next((i for i in range(start, len(blockers)) if blockers[i] is not None), len(blockers))
    statuses = []
    for i, blocker in enumerate(blockers):
        if blocker is not None:
            statuses.append(blocker)
        elif i < end:
            statuses.append((MAPPED, ""))
        else:
            statuses.append((MORE_THAN_ONE_SUBGRAPH,
                             f"after {names[end]} (op {end}), where the Edge TPU subgraph ends"))
    return statuses


def postprocess_exempt_ops(graph: SubgraphInfo) -> set:
    """Indices of the postprocess ops and of the DEQUANTIZE ops whose outputs only feed them."""
    postprocess = {op.index for op in graph.operators if op.name == POSTPROCESS_OP}
    exempt = set(postprocess)
    for op in graph.operators:
        if op.name != "DEQUANTIZE" or set(op.outputs) & set(graph.outputs):
            continue
        consumers = [c for t in op.outputs for c in graph.consumers(t)]
        if consumers and all(c.index in postprocess for c in consumers):
            exempt.add(op.index)
    return exempt


def only_int8_except_postprocess(graph: SubgraphInfo, verdicts: List[OperatorVerdict]) -> bool:
    """Every operator is an int8 builtin, except the postprocess op and the DEQUANTIZEs feeding it."""
    exempt = postprocess_exempt_ops(graph)
    return all(v.fully_int8 and not op.is_custom
               for op, v in zip(graph.operators, verdicts) if op.index not in exempt)


def group_rows(verdicts: List[OperatorVerdict]) -> List[OpRow]:
    """One row per (operator, dtype class, status, reason), in order of first appearance."""
    rows: Dict[tuple, OpRow] = {}
    for v in verdicts:
        key = (v.op, v.dtype_class, v.status, v.reason)
        if key in rows:
            rows[key].count += 1
        else:
            rows[key] = OpRow(op=v.op, count=1, status=v.status, dtype_class=v.dtype_class,
                              reason=v.reason)
    return list(rows.values())


def build_report(model: Union[str, bytes, TFLiteModelInfo]) -> CompatibilityReport:
    """The compatibility report of a .tflite model (a path, its bytes, or its description)."""
    info = model if isinstance(model, TFLiteModelInfo) else read_tflite(model)
    graph = info.main
    ops = graph.operators
    classes = [dtype_class(graph, op) for op in ops]
    fully_int8 = [c == "int8" for c in classes]
    blockers = [edgetpu_blocker(graph, op) for op in ops]
    errors = model_errors(graph, fully_int8)
    if errors:
        rejected = (NOT_COMPILED, f"the compiler rejects the model: {'; '.join(errors)}")
        statuses = [b or rejected for b in blockers]
    else:
        statuses = single_subgraph_statuses(blockers, [op.name for op in ops])
    verdicts = [OperatorVerdict(index=op.index, op=op.name, dtype_class=cls, fully_int8=int8,
                                computes_in_float=computes_in_float(graph, op),
                                status=status, reason=reason)
                for op, cls, int8, (status, reason) in zip(ops, classes, fully_int8, statuses)]
    on_edgetpu = sum(v.on_edgetpu for v in verdicts)
    return CompatibilityReport(
        source=PREDICTION, model=info.name, rows=group_rows(verdicts),
        ops_on_edgetpu=on_edgetpu, ops_on_cpu=len(verdicts) - on_edgetpu,
        edgetpu_subgraphs=int(on_edgetpu > 0), compiled=not errors, errors=errors,
        operators=verdicts,
        only_int8_except_postprocess=only_int8_except_postprocess(graph, verdicts),
        float_ops=[v.op for v in verdicts if v.computes_in_float])


# ----------------------------------------------------------------------------- text form

def format_table(rows: List[OpRow], with_details: bool) -> List[str]:
    headers = ["Operator", "Count"] + (["Dtype"] if with_details else []) + ["Status"]
    headers += ["Reason"] if with_details else []
    cells = [[r.op, str(r.count)] + ([r.dtype_class] if with_details else []) + [r.status]
             + ([r.reason] if with_details else []) for r in rows]
    widths = [max(len(line[i]) for line in [headers] + cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
            for line in [headers] + cells]


def format_report(report: CompatibilityReport) -> str:
    """A readable text form: header, the operator table, totals and the summary answers."""
    kind = ("prediction from Coral's documented rules" if report.source == PREDICTION
            else f"Edge TPU Compiler {report.compiler_version or '(version unknown)'}")
    lines = [f"Edge TPU compatibility of {report.model or '(unnamed model)'} ({kind})", ""]
    if report.rows:
        lines += format_table(report.rows, with_details=report.source == PREDICTION) + [""]
    lines += [f"Operations on Edge TPU: {report.ops_on_edgetpu}, on CPU: {report.ops_on_cpu}, "
              f"Edge TPU subgraphs: {report.edgetpu_subgraphs}",
              f"Compiles: {'yes' if report.compiled else 'no'}"]
    lines += [f"Error: {e}" for e in report.errors]
    for segment in report.segments:
        lines.append(_format_segment(segment))
    if report.source == PREDICTION:
        lines += [f"Fully int8 operations: {len(report.fully_int8_ops)} of {len(report.operators)}",
                  f"Float operations: {', '.join(report.float_ops) or 'none'}",
                  "Only int8 except postprocess: "
                  f"{'yes' if report.only_int8_except_postprocess else 'no'}"]
    return "\n".join(lines) + "\n"


def _format_segment(segment: CompiledSegment) -> str:
    parts = [f"Output model: {segment.output_model or '-'}"]
    if segment.compile_time_ms is not None:
        parts.append(f"compiled in {segment.compile_time_ms} ms")
    if segment.on_chip_memory_used:
        parts.append(f"on-chip memory used: {segment.on_chip_memory_used}")
    if segment.off_chip_memory_used:
        parts.append(f"off-chip memory used: {segment.off_chip_memory_used}")
    return ", ".join(parts)
