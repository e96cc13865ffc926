"""Which operators of a .tflite model the CPU delegate (XNNPACK) took, read from the interpreter itself.

After `allocate_tensors()` the interpreter's node list (`Interpreter._get_ops_details()`) holds the
model's own operators followed by one `DELEGATE` node per partition the delegate claimed. A partition
node's inputs are every tensor its operators read from outside it (activations and constants), its
outputs the tensors it hands back. The operators of a partition are therefore found by walking back
from its outputs through their producers until one of its inputs is reached: that is how
`delegation_report` tells, for each operator, whether it runs inside the delegate, without relying on
log lines the Python runtime does not print.
"""
import collections
import dataclasses
from typing import Dict, List, Sequence

DELEGATE_NODE = "DELEGATE"


@dataclasses.dataclass
class DelegationReport:
    nodes: int                            # operators of the model
    delegated: int                        # of those, run inside a delegate partition
    partitions: int                       # DELEGATE nodes
    outside: Dict[str, int]               # op type -> operators left to the interpreter's own kernels
    method: str = "interpreter node list after delegation (DELEGATE nodes and their operators)"

    def summary(self) -> str:
        left = ", ".join(f"{name} x{count}" for name, count in sorted(self.outside.items()))
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


def delegation_report(interpreter) -> DelegationReport:
    """The report of an allocated ai-edge-litert `Interpreter` (see the module docstring)."""
    ops = interpreter._get_ops_details()
    original = [op for op in ops if op["op_name"] != DELEGATE_NODE]
    partitions = delegated_operators(ops)
    inside = set().union(*partitions) if partitions else set()
    outside = collections.Counter(op["op_name"] for op in original if op["index"] not in inside)
    return DelegationReport(nodes=len(original), delegated=len(inside), partitions=len(partitions),
                            outside=dict(outside))
