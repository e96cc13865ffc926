"""One benchmark run: find the models, time them on a backend, write the tables and the plot.

`run_benchmark` is what `mobiledets-benchmark` and `benchmarks/latency_table.py` call: it expands
model globs, dispatches to the local, adb or Edge TPU backend (each returns one `Measurement` per
model x target x device, failures included), joins model cards and AP, and writes
`{output_dir}/{name}.md|.csv|.json` plus `{name}.png` (latency vs AP, or vs multiply-adds).
"""
import dataclasses
import datetime
import os
import platform
import sys
from importlib import metadata
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from mobiledets_tf import fileio
from mobiledets_tf.benchmark import adb, edgetpu_backend, local
from mobiledets_tf.benchmark.latency import Measurement
from mobiledets_tf.benchmark.pareto import plot_pareto
from mobiledets_tf.benchmark.results import BenchmarkRow, make_rows, write_tables
from mobiledets_tf.benchmark.targets import Target
from mobiledets_tf.progress import progress_bar

BACKENDS = ("local", "adb", "edgetpu")


@dataclasses.dataclass
class BenchmarkOptions:
    threads: int = 1
    warmup_runs: int = 10
    num_runs: int = 50
    cpus: Sequence[int] = ()                      # local: pin the worker to these CPUs
    rounds: int = 1                               # local: passes over all models, samples pooled
    benchmark_binary: Optional[str] = None        # adb: TFLite's benchmark_model built for the device
    serials: Sequence[str] = ()                   # adb: devices (default: every attached device)
    cpu_mask: Optional[str] = None                # adb: taskset mask (default: one fastest core)
    adb: str = "adb"
    remote_dir: str = "/data/local/tmp/mobiledets"
    edgetpu_library: Optional[str] = None         # edgetpu: path of libedgetpu.so.1
    op_profile: bool = False                      # local, adb: latency per op type as well


def expand_models(patterns: Sequence[str]) -> List[str]:
    """Paths and globs -> sorted unique .tflite paths; FileNotFoundError names a pattern that matched none."""
    paths = []
    for pattern in patterns:
        matches = fileio.glob(pattern)
        if not matches:
            raise FileNotFoundError(f"--models: nothing matches {pattern!r}")
        paths += [m for m in matches if m not in paths]
    not_tflite = [p for p in paths if not p.endswith(".tflite")]
    if not_tflite:
        raise ValueError(f"--models: not .tflite files: {', '.join(not_tflite)}")
    return paths


def machine_context(backend: str) -> Dict[str, str]:
    """What the table was measured with: machine (with the local CPU's vector extensions), software
    versions, date."""
    versions = ", ".join(f"{package} {metadata.version(package)}"
                         for package in ("ai-edge-litert", "mobiledets_tf"))
    context = {"date": datetime.date.today().isoformat(), "backend": backend,
               "host": f"{local.cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} "
                       f"{platform.release()}, Python {platform.python_version()}",
               "versions": versions}
    if backend == "local":   # what the CPU kernels can use: the same model runs at other speeds elsewhere
        context["vector extensions"] = local.vector_extensions()
    return context


def measure(backend: str, models: Sequence[str], targets: Sequence[Target], options: BenchmarkOptions,
            on_measurement: Optional[Callable[[Measurement], None]] = None) -> List[Measurement]:
    """Every model on every target (and device, and round); `on_measurement` sees each one as it ends."""
    if options.op_profile and backend == "edgetpu":
        raise ValueError("--op_profile: the edgetpu backend has no per-op timing (the Edge TPU runs its "
                         "subgraph as one node); use the local or adb backend")
    devices = len(options.serials) if backend == "adb" else 1     # adb: unknown until `adb devices`
    rounds = options.rounds if backend == "local" else 1
    total = len(models) * len(targets) * devices * rounds or None
    with progress_bar(total=total, unit=" runs", desc=f"{backend} benchmark") as bar:
        def progress(measurement: Measurement) -> None:
            bar.set_postfix_str(f"{os.path.basename(measurement.model_path)} {measurement.target}",
                                refresh=False)
            bar.update(1)
            if on_measurement:
                on_measurement(measurement)

        common = dict(threads=options.threads, warmup_runs=options.warmup_runs,
                      num_runs=options.num_runs, progress=progress)
        if backend == "local":
            return local.benchmark_locally(models, targets, cpus=options.cpus, rounds=options.rounds,
                                           op_profile=options.op_profile, **common)
        if backend == "edgetpu":
            return edgetpu_backend.benchmark_on_edgetpu(models, targets, library=options.edgetpu_library,
                                                        **common)
        if backend == "adb":
            if not options.benchmark_binary:
                raise ValueError("the adb backend needs --benchmark_binary=PATH (TFLite's benchmark_model "
                                 "built for the device's ABI)")
            return adb.benchmark_on_devices(models, targets, options.benchmark_binary,
                                            serials=options.serials, cpu_mask=options.cpu_mask,
                                            adb=options.adb, remote_dir=options.remote_dir,
                                            op_profile=options.op_profile, **common)
    raise ValueError(f"unknown backend {backend!r}: choose from {', '.join(BACKENDS)}")


def run_benchmark(models: Sequence[str], backend: str, targets: Sequence[Target], output_dir: str,
                  name: str = "latency", options: BenchmarkOptions = BenchmarkOptions(),
                  eval_json: Mapping[str, str] = {}, title: str = "", plot: bool = True,
                  extra_context: Mapping[str, str] = {},
                  on_measurement: Optional[Callable[[Measurement], None]] = None) -> List[BenchmarkRow]:
    """Measures, writes `{output_dir}/{name}.{md,csv,json}` (and `.png`), returns the rows."""
    paths = expand_models(models)
    measurements = measure(backend, paths, targets, options, on_measurement)
    rows = make_rows(measurements, eval_json)
    context = {**machine_context(backend), "command": " ".join(sys.argv), **extra_context}
    stem = os.path.join(output_dir, name)
    write_tables(rows, stem, title or f"Latency ({backend})", context)
    if plot:
        plot_pareto(rows, stem + ".png", title)
    return rows
