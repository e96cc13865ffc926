"""Local backend: each model on this machine's CPU through the ai-edge-litert interpreter.

The paper's protocol by default: one thread, XNNPACK on (`cpu:xnnpack=false` for TFLite's reference
kernels), warm-up runs then timed runs, each model in its own worker process (optionally pinned to
chosen CPUs). Each row's details carry the delegation report (operators XNNPACK or the delegate took,
partitions, op types left outside) and, with `op_profile`, the per-op-type table. An `external:path=LIB,options=k:v;k:v` target loads a delegate library first. The Edge
TPU backend runs the same worker with libedgetpu as the delegate.
"""
import json
import os
import platform
import subprocess
import sys
from typing import Callable, List, Mapping, Optional, Sequence

from mobiledets_tf import fileio
from mobiledets_tf.benchmark.latency import LatencyStats, Measurement, pool_rounds
from mobiledets_tf.benchmark.local_worker import RESULT_PREFIX
from mobiledets_tf.benchmark.targets import Target, parse_delegate_options

WORKER_TIMEOUT_SECONDS = 1800


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_extensions() -> str:
    """The SIMD extensions this CPU reports (/proc/cpuinfo) that matter for int8 and float kernels."""
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    try:
        with open("/proc/cpuinfo") as f:
            flags_line = next(line for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    present = set(flags_line.split(":", 1)[1].split())
    return ", ".join(name for name in wanted if name in present) or "none of " + ", ".join(wanted)


def local_device_label(cpus: Optional[Sequence[int]] = None) -> str:
    pinned = f", pinned to CPU {','.join(map(str, cpus))}" if cpus else ""
    return f"{cpu_name()} ({os.cpu_count()} CPUs{pinned})"


def measure_in_worker(model_path: str, backend: str, target: Target, device: str, threads: int,
                      warmup_runs: int, num_runs: int, xnnpack: bool = True,
                      delegate: Optional[str] = None, delegate_options: Optional[Mapping[str, str]] = None,
                      cpus: Optional[Sequence[int]] = None, op_profile: bool = False) -> Measurement:
    """Times one model in a worker process; any failure (load error, crash, timeout) is the row's error.

    A model given as a URL is timed from a local copy. `op_profile`: also the per-op-type table."""
    measurement = Measurement(model_path, backend, target.label, device, threads)
    try:
        with fileio.local_copy(model_path) as local_model:
            request = dict(model_path=local_model, threads=threads, xnnpack=xnnpack, warmup_runs=warmup_runs,
                           num_runs=num_runs, delegate=delegate, delegate_options=dict(delegate_options or {}),
                           cpus=list(cpus or []), op_profile=op_profile)
            run = subprocess.run([sys.executable, "-m", "mobiledets_tf.benchmark.local_worker",
                                  json.dumps(request)], capture_output=True, text=True,
                                 timeout=WORKER_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        measurement.error = f"timed out after {WORKER_TIMEOUT_SECONDS} s"
        return measurement
    results = [line[len(RESULT_PREFIX):] for line in run.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if run.returncode != 0 or not results:
        measurement.error = worker_failure(run.returncode, run.stderr)
        return measurement
    result = json.loads(results[-1])
    measurement.samples_ms = result["samples_ms"]
    measurement.latency = LatencyStats.from_samples(measurement.samples_ms)
    measurement.details = result["details"]
    return measurement


def worker_failure(returncode: int, stderr: str) -> str:
    """The last meaningful stderr line, or the signal that killed the worker."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    message = lines[-1] if lines else "no output"
    if returncode < 0:
        return f"crashed (signal {-returncode}): {message}"
    return message


def benchmark_locally(model_paths: Sequence[str], targets: Sequence[Target], threads: int = 1,
                      warmup_runs: int = 10, num_runs: int = 50, cpus: Optional[Sequence[int]] = None,
                      rounds: int = 1, progress: Optional[Callable[[Measurement], None]] = None,
                      op_profile: bool = False) -> List[Measurement]:
    """Every model on every local target (cpu, cpu:xnnpack=false, external:path=...).

    With `rounds` > 1 the whole list is measured that many times over and each model's samples are
    pooled (`pool_rounds`), which steadies medians on a machine whose speed drifts. `progress` is
    called with each finished measurement. `op_profile`: each model's per-op-type table, measured in
    the first round (the rows keep the first round's details).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    device = local_device_label(cpus)
    passes = []
    for round_index in range(rounds):
        measurements = []
        for target in targets:
            delegate = target.option("path") if target.kind == "external" else None
            options = parse_delegate_options(target.option("options", ""))
            for path in model_paths:
                measurements.append(measure_in_worker(
                    path, "local", target, device, threads, warmup_runs, num_runs,
                    xnnpack=target.flag("xnnpack", True), delegate=delegate, delegate_options=options,
                    cpus=cpus, op_profile=op_profile and round_index == 0))
                if progress:
                    progress(measurements[-1])
        passes.append(measurements)
    return [pool_rounds(parts) for parts in zip(*passes)]
