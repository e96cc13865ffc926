"""Which operators of a .tflite model the CPU delegate (XNNPACK) took, read from the interpreter itself.

After `allocate_tensors()` the interpreter's node list (`Interpreter._get_ops_details()`) holds the
model's own operators followed by one `DELEGATE` node per partition the delegate claimed. A partition
node's inputs are every tensor its operators read from outside it (activations and constants), its
outputs the tensors it hands back. The operators of a partition are therefore found by walking back
from its outputs through their producers until one of its inputs is reached: that is how
`delegation_report` tells, for each operator, whether it runs inside the delegate, without relying on
log lines the Python runtime does not print.

For the operators left outside, `outside_reasons` names the XNNPACK rule they break where one is
known (read from XNNPACK's TFLite delegate, `tensorflow/lite/delegates/xnnpack/xnnpack_delegate.cc`):
int8 ADD requantizes each input only for an input/output scale ratio in [1/1024, 256) and int8 MUL
for a product of input scales over the output scale in [1/65536, 256); QUANTIZE does not convert a
uint8 tensor to int8; CONCATENATION takes 2 to 5 inputs; HARD_SWISH runs in float only; custom
operators (the SSD postprocess op) have no XNNPACK kernel.
"""
import collections
import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np

DELEGATE_NODE = "DELEGATE"


@dataclasses.dataclass
class DelegationReport:
    nodes: int                            # operators of the model
    delegated: int                        # of those, run inside a delegate partition
    partitions: int                       # DELEGATE nodes
    outside: Dict[str, int]               # op type -> operators left to the interpreter's own kernels
    reasons: Dict[str, str] = dataclasses.field(default_factory=dict)   # op type -> why, where known
    method: str = "interpreter node list after delegation (DELEGATE nodes and their operators)"

    def summary(self) -> str:
        left = ", ".join(f"{name} x{count}" + (f" ({self.reasons[name]})" if name in self.reasons else "")
                         for name, count in sorted(self.outside.items()))
        return (f"{self.delegated}/{self.nodes} nodes delegated in {self.partitions} partition(s)"
                + (f"; outside: {left}" if left else ""))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def delegated_operators(ops: Sequence[dict]) -> List[List[int]]:
    """For each DELEGATE node of an interpreter's node list, the indices of the operators it runs."""
    original = [op for op in ops if op["op_name"] != DELEGATE_NODE]
    producer = {int(tensor): op["index"] for op in original for tensor in op["outputs"]}
    inputs_of = {op["index"]: [int(t) for t in op["inputs"] if t >= 0] for op in original}
    partitions = []
    for node in ops:
        if node["op_name"] != DELEGATE_NODE:
            continue
        boundary = {int(t) for t in node["inputs"]}
        members, pending = set(), [int(t) for t in node["outputs"]]
        while pending:
            tensor = pending.pop()
            op_index = producer.get(tensor)
            if tensor in boundary or op_index is None or op_index in members:
                continue
            members.add(op_index)
            pending.extend(inputs_of[op_index])
        partitions.append(sorted(members))
    return partitions


def _scale(tensor: dict) -> Optional[float]:
    scales = tensor["quantization_parameters"]["scales"]
    return float(scales[0]) if tensor["dtype"] in (np.int8, np.uint8) and len(scales) == 1 else None


def outside_reason(op: dict, tensors: Dict[int, dict]) -> Optional[str]:
    """Which known XNNPACK rule an operator left outside breaks (see the module docstring), or None."""
    name = op["op_name"]
    inputs = [tensors[int(i)] for i in op["inputs"] if i >= 0]
    outputs = [tensors[int(i)] for i in op["outputs"]]
    scales = [_scale(t) for t in inputs + outputs]
    if name == "QUANTIZE" and inputs[0]["dtype"] == np.uint8 and outputs[0]["dtype"] == np.int8:
        return "uint8 -> int8, which XNNPACK's QUANTIZE does not convert"
    if name in ("ADD", "MUL") and len(inputs) == 2 and None not in scales:
        (a, b, out) = scales
        ratios = [a / out, b / out] if name == "ADD" else [a * b / out]
        low, high = (1 / 1024, 256) if name == "ADD" else (1 / 65536, 256)
        bad = [r for r in ratios if not low <= r < high]
        if bad:
            return (f"int8 {name} scale ratio {bad[0]:.4g} outside XNNPACK's [1/{round(1 / low)}, {high}): "
                    "an input range far wider than the output's")
    if name == "CONCATENATION" and not 2 <= len(inputs) <= 5:
        return f"{len(inputs)} inputs: XNNPACK concatenates 2 to 5"
    if name == "HARD_SWISH" and inputs[0]["dtype"] != np.float32:
        return "int8: XNNPACK runs HARD_SWISH in float only"
    if not name.isupper():
        return "custom operator: no XNNPACK kernel"
    return None


def delegation_report(interpreter) -> DelegationReport:
    """The report of an allocated ai-edge-litert `Interpreter` (see the module docstring)."""
    ops = interpreter._get_ops_details()
    original = [op for op in ops if op["op_name"] != DELEGATE_NODE]
    partitions = delegated_operators(ops)
    inside = set().union(*partitions) if partitions else set()
    left = [op for op in original if op["index"] not in inside]
    delegating = bool(partitions)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()} if delegating else {}
    reasons = {}
    for op in left:
        reason = outside_reason(op, tensors) if delegating else None
        if reason and op["op_name"] not in reasons:
            reasons[op["op_name"]] = reason
    return DelegationReport(nodes=len(original), delegated=len(inside), partitions=len(partitions),
                            outside=dict(collections.Counter(op["op_name"] for op in left)), reasons=reasons)
