"""Latency per op type: where the time of one inference goes, by node type (CONV_2D, DELEGATE, ...).

The adb backend gets it from TFLite's `benchmark_model --enable_op_profiling=true`. After its usual
timing lines, benchmark_model (tensorflow/lite/tools/benchmark/profiling_listener.cc) prints two
profiles, each behind a header line:

    Profiling Info for Benchmark Initialization:               (ModifyGraphWithDelegate, AllocateTensors)
    Operator-wise Profiling Info for Regular Benchmark Runs:   (the timed runs; warm-up runs are not profiled)

Newer builds log each header with an "INFO: " prefix; the table lines under it carry none. Each
profile holds the tables of tensorflow/core/util/stats_calculator.cc (xla/tsl/util/stats_calculator.cc
in newer builds): "Run Order", "Top by Computation Time", then

    Number of nodes executed: 121
    ============================== Summary by node type ==============================
                 [Node type]      [count]     [avg ms]        [avg %]        [cdf %]      [mem KB]    [times called]
                     CONV_2D           50       14.852        70.697%        70.697%         0.000           50
        TFLite_Detection_PostProcess            1        1.853         8.820%        79.517%         0.000            1

Each field is a tab followed by the value right-aligned to a fixed width (24 characters for the node
type in older builds, 40 in newer ones); a longer value is printed whole. So columns are split by tabs
and/or runs of spaces, read from the right: node types may contain spaces and commas (XNNPACK's own
operators, e.g. "Convolution (NHWC, QC8) GEMM", in builds that profile inside the XNNPACK delegate).
The node type is the kernel's name: a builtin op (CONV_2D), a custom op (TFLite_Detection_PostProcess)
or a delegate's fused node (TfLiteXNNPackDelegate, TfLiteGpuDelegateV2, TfLiteNnapiDelegate; DELEGATE in
old builds), whose time covers every op the delegate took over. [count] is the number of nodes of that
type; [avg ms] their summed time per inference (each node's total over the timed runs / number of
runs, in whole microseconds), which becomes OpTypeRow.total_ms; [times called] their invocations per
inference. (In "Run Order", by contrast, [avg ms] is per call, not per inference.)

parse_op_profile reads that table of the regular runs, never the initialization one. When a model has
subgraphs, or a delegate reports its internal ops, more profiles follow the primary graph's ("Subgraph
(index: 1) profile:", "Delegate internal:"); the first table after the header, the primary graph's,
is the one read. The whole-model latency (model_ms) is left to the caller, which knows the statistic it
reports; the op times sum to a little less than it (interpreter work between ops), and profiling
itself slows each run slightly.
"""
import dataclasses
import re
from typing import Dict, Iterable, List, Optional, Tuple

from mobiledets_tf.benchmark.benchmark_model_output import BenchmarkModelError

ADB_METHOD = ("benchmark_model --enable_op_profiling=true on the device: its 'Summary by node type' table of "
              "the timed runs (avg ms per node type)")

_REGULAR_RUNS = "Operator-wise Profiling Info for Regular Benchmark Runs"
_SUMMARY = "==== Summary by node type ===="
# "INFO: " and the like (benchmark_model's logger), or an Android logcat prefix ("05-30 13:04:39.021
# 25935 25935 I tflite  : ") when the output was read from logcat.
_LOG_PREFIX = re.compile(r"^(?:(?:INFO|WARNING|ERROR|VERBOSE|DEBUG): |"
                         r"\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+ [VDIWEF] [^:]*: )")
# [node type] [count] [avg ms] [avg %] [cdf %] [mem KB] [times called]; the type may hold spaces.
_ROW = re.compile(r"^\s*(?P<op>\S.*?)\s+(?P<count>\d+)\s+(?P<ms>\d+(?:\.\d+)?)\s+\S+%\s+\S+%\s+\S+\s+\d+\s*$")


@dataclasses.dataclass
class OpTypeRow:
    op: str          # op type, e.g. "CONV_2D", "DELEGATE", "TFLite_Detection_PostProcess"
    count: int       # nodes of that type
    total_ms: float  # summed average time of those nodes per inference, in ms
    share: float     # total_ms / sum of all rows' total_ms (0..1)


@dataclasses.dataclass
class OpProfile:
    rows: List[OpTypeRow]            # sorted by total_ms, largest first
    method: str                      # one sentence: how the numbers were obtained
    model_ms: Optional[float] = None  # whole-model latency measured in the same run, when known

    def total_ms(self) -> float:
        return sum(row.total_ms for row in self.rows)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "OpProfile":
        return cls(rows=[OpTypeRow(**row) for row in data["rows"]], method=data["method"],
                   model_ms=data.get("model_ms"))


def aggregate(node_times: Iterable[Tuple[str, float]], method: str, model_ms: Optional[float] = None) -> OpProfile:
    """(op type, ms) per node -> one row per op type (count, total, share)."""
    return _profile(((op, 1, ms) for op, ms in node_times), method, model_ms)


def parse_op_profile(text: str) -> OpProfile:
    """benchmark_model stdout+stderr with --enable_op_profiling=true -> the per-node-type table of the
    timed runs ("Summary by node type"); raises BenchmarkModelError (from
    mobiledets_tf.benchmark.benchmark_model_output) when no such table is present."""
    lines = [_LOG_PREFIX.sub("", line) for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if _REGULAR_RUNS in line), None)
    table = None if start is None else next((i for i in range(start, len(lines)) if _SUMMARY in lines[i]), None)
    if table is None:
        raise BenchmarkModelError("benchmark_model printed no 'Summary by node type' table for its regular runs "
                                  "(was --enable_op_profiling=true accepted by this build?)")
    entries = []
    for line in lines[table + 2:]:  # past the title and the column names
        row = _ROW.match(line)
        if not row:
            break
        entries.append((row["op"], int(row["count"]), float(row["ms"])))
    if not entries:
        raise BenchmarkModelError("benchmark_model's 'Summary by node type' table of the regular runs has no rows")
    return _profile(entries, ADB_METHOD, model_ms=None)


def format_op_profile(profile: OpProfile) -> List[str]:
    """Markdown lines: a table `| op | count | total ms | share |` (share as a percentage with one
    decimal), then a line with the method, and, when model_ms is known, the whole-model time beside the
    summed op time."""
    lines = ["| op | count | total ms | share |", "|---|---:|---:|---:|"]
    lines += [f"| {row.op} | {row.count} | {row.total_ms:.3f} | {100 * row.share:.1f}% |" for row in profile.rows]
    lines += ["", f"Method: {profile.method}"]
    if profile.model_ms is not None:
        lines.append(f"Ops sum to {profile.total_ms():.3f} ms per inference; the whole model took "
                     f"{profile.model_ms:.3f} ms in the same run.")
    return lines


def _profile(entries: Iterable[Tuple[str, int, float]], method: str, model_ms: Optional[float]) -> OpProfile:
    """(op type, nodes, ms) entries -> rows summed per op type, with shares, largest first."""
    counts: Dict[str, int] = {}
    totals: Dict[str, float] = {}
    for op, count, ms in entries:
        counts[op] = counts.get(op, 0) + count
        totals[op] = totals.get(op, 0.0) + ms
    grand_total = sum(totals.values())
    rows = [OpTypeRow(op, counts[op], totals[op], totals[op] / grand_total if grand_total > 0 else 0.0)
            for op in totals]
    return OpProfile(sorted(rows, key=lambda row: -row.total_ms), method, model_ms)
