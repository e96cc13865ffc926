"""Read the text TFLite's `benchmark_model` prints into latency statistics and delegate facts.

benchmark_model announces each run ("Running benchmark for at least N iterations ...") and then
prints that run's statistics in microseconds: the first announced run is the warm-up, the second the
timed runs. The statistics line has two forms (tensorflow/core/util/stats_calculator.h):

    count=50 first=23478 curr=23390 min=23301 max=24017 avg=23450.1 std=142
    count=1 curr=637079            (or `count=50 curr=2000(all same)`: every run took the same time)

Recent builds append `p5=.. median=.. p95=..`; those go into `details` but not into
LatencyStats.median_ms, so that every adb row is ranked by the same statistic (the mean). The
summary line `Inference timings in us: Init: .., First inference: .., Warmup (avg): .., Inference
(avg): ..` gives init and first-inference times (averages are doubles, e.g. `1.14039e+07`).

Delegate facts come from the runtime's own words: "Replacing N out of M node(s) with delegate (NAME)
node, yielding K partitions", "NAME delegate: N nodes delegated out of M nodes with K partitions.",
"Explicitly applied GPU delegate, and the model graph will be completely|partially executed ...",
"Though NNAPI delegate is explicitly applied, the model graph will not be executed ...", the lines
saying a delegate could not be created, and "NNAPI accelerators available: [...]".
"""
import math
import re
from typing import Any, Dict, List, Optional, Tuple

from mobiledets_tf.benchmark.latency import LatencyStats

_RUN_ANNOUNCEMENT = re.compile(r"Running benchmark for at least \d+ iterations")
_STATS = re.compile(r"\bcount=(\d+)(.*)$")
_STAT_VALUE = re.compile(r"(\w+)=([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))")
_SUMMARY = re.compile(r"Inference timings in us: Init: ([^,\s]+), First inference: ([^,\s]+), "
                      r"Warmup \(avg\): ([^,\s]+), Inference \(avg\): ([^,\s]+)")
_REPLACING = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((.+?)\) node, "
                        r"yielding (\d+) partitions")
_DELEGATED = re.compile(r"(\S+) delegate: (\d+) nodes delegated out of (\d+) nodes with (\d+) partitions")
_APPLIED = re.compile(r"Explicitly applied (\S+) delegate, and the model graph will be (completely|partially) "
                      r"executed by the delegate")
_NOT_EXECUTED = re.compile(r"Though (\S+) delegate is explicitly applied, the model graph will not be executed")
_NOT_CREATED = {  # benchmark_model carries on without the delegate (on the CPU) after these lines
    "EXTERNAL": re.compile(r"Unable to load external delegate from"),
    "Hexagon": re.compile(r"Could not create Hexagon delegate"),
    "NNAPI": re.compile(r"NNAPI acceleration is unsupported on this platform"),
}
_NNAPI_ACCELERATORS = re.compile(r"NNAPI accelerators available: \[([^\]]*)\]|\(Available: ([^)]*)\)")
_FAILURE = re.compile(r"^(ERROR|FATAL)\b|Segmentation fault|Aborted|Bus error|Illegal instruction|Killed|"
                      r"Fatal signal|CANNOT LINK|not found|No such file|Permission denied|No space left|"
                      r"Unable to|Could not|[Ff]ailed|error:|unsupported|will not be executed|timed out")


class BenchmarkModelError(RuntimeError):
    """benchmark_model's output holds no timed-run statistics (it failed, crashed or was cut short)."""


def failure_lines(text: str, limit: int = 6) -> List[str]:
    """The last `limit` lines that say what went wrong (ERROR:, Segmentation fault, ...), else the last lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return ([line for line in lines if _FAILURE.search(line)] or lines)[-limit:]


def parse_benchmark_model_output(text: str) -> Tuple[LatencyStats, Dict[str, Any]]:
    """benchmark_model stdout+stderr -> (timed-run LatencyStats in ms, details).

    details: init_us, first_inference_us, warmup_avg_us, warmup_count, timed_run_percentiles_us (when
    printed), delegations (one dict per "Replacing ..." / "... nodes delegated out of ..." line),
    delegates_applied ({provider: "completely" | "partially" | "not" | "not created"}) and
    nnapi_accelerators (list). Raises BenchmarkModelError, quoting the failure lines, when the timed
    run's statistics are missing.
    """
    lines = text.splitlines()
    warmup, timed = (_run_statistics(lines) + [None, None])[:2]
    if timed is None:
        raise BenchmarkModelError("no timed-run statistics (count=... avg=...) in benchmark_model output: "
                                  + " | ".join(failure_lines(text)))
    latency = LatencyStats(count=int(timed["count"]), mean_ms=timed["avg"] / 1e3, std_ms=timed["std"] / 1e3,
                           min_ms=timed["min"] / 1e3, max_ms=timed["max"] / 1e3)
    details: Dict[str, Any] = {"init_us": None, "first_inference_us": None, "warmup_avg_us": None,
                               "warmup_count": None, "delegations": [], "delegates_applied": {}}
    if warmup is not None:
        details.update(first_inference_us=warmup["first"], warmup_avg_us=warmup["avg"],
                       warmup_count=int(warmup["count"]))
    percentiles = {key: timed[key] for key in ("p5", "median", "p95") if key in timed}
    if percentiles:
        details["timed_run_percentiles_us"] = percentiles
    for line in lines:
        _read_delegate_facts(line, details)
        summary = _SUMMARY.search(line)
        if summary:
            details.update(zip(("init_us", "first_inference_us", "warmup_avg_us"),
                               map(_number, summary.groups()[:3])))
    return latency, details


def _run_statistics(lines: List[str]) -> List[Optional[Dict[str, float]]]:
    """Statistics of each announced run (warm-up, then timed): the first count= line after each
    announcement; later count= lines (op-profiling tables) belong to no run."""
    runs: List[Optional[Dict[str, float]]] = []
    waiting = False
    for line in lines:
        stats = _STATS.search(line)
        if _RUN_ANNOUNCEMENT.search(line):
            runs.append(None)
            waiting = True
        elif waiting and stats:
            runs[-1] = _stat_values(stats)
            waiting = False
    return runs


def _stat_values(match: re.Match) -> Optional[Dict[str, float]]:
    count = int(match.group(1))
    if count == 0:
        return None
    values = {key: _number(value) for key, value in _STAT_VALUE.findall(match.group(2))}
    if "avg" not in values:  # `count=N curr=X` or `count=N curr=X(all same)`: every run took X
        curr = values["curr"]
        values.update(first=curr, min=curr, max=curr, avg=curr, std=0.0)
    values["count"] = count
    return values


def _read_delegate_facts(line: str, details: Dict[str, Any]) -> None:
    replacing, delegated = _REPLACING.search(line), _DELEGATED.search(line)
    if replacing:
        nodes, total, name, partitions = replacing.groups()
        details["delegations"].append({"delegate": name, "nodes": int(nodes),
                                       "total_nodes": int(total) if total else None,
                                       "partitions": int(partitions)})
    elif delegated:
        name, nodes, total, partitions = delegated.groups()
        details["delegations"].append({"delegate": name, "nodes": int(nodes), "total_nodes": int(total),
                                       "partitions": int(partitions)})
    applied, not_executed = _APPLIED.search(line), _NOT_EXECUTED.search(line)
    if applied:
        details["delegates_applied"][applied.group(1)] = applied.group(2)
    elif not_executed:
        details["delegates_applied"][not_executed.group(1)] = "not"
    for provider, pattern in _NOT_CREATED.items():
        if pattern.search(line):
            details["delegates_applied"][provider] = "not created"
    accelerators = _NNAPI_ACCELERATORS.search(line)
    if accelerators:
        names = accelerators.group(1) if accelerators.group(1) is not None else accelerators.group(2)
        details["nnapi_accelerators"] = [name.strip() for name in names.split(",") if name.strip()]


def _number(text: str) -> Optional[float]:
    value = float(text)
    return None if math.isnan(value) else value
