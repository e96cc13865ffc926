"""Latency datasets for the cost model: sampled architectures of a search space, measured on a target.

A dataset is a JSONL file. Its first line is the header: what was measured (space, platform,
skeleton, precision, input size, classes, depth multiplier, backend, target, threads, runs, seed).
Every other line is one architecture: its row number, choice indices and labels, ArchSpec, the
measured statistics (median, mean, p90, std, min in ms) and the device, or the error that stopped
its measurement. Row r always samples the same architecture (`np.random.default_rng([seed, r])`),
so a collection killed at any point resumes where it stopped: rows already in the file are skipped
and the header must match the request. The rows of each measured chunk are appended together (on an
object store, which cannot append, the file is rewritten whole); a line cut short by a kill is
dropped (and re-measured) on resume. The file and the models' folder may be URLs (`gs://...`);
models are staged to local files where a tool needs one.

Architectures are built with untrained weights (latency does not depend on weight values), exported
in chunks with the package's TFLite converter (int8: calibrated on random images), and each chunk
is measured by the benchmark harness in interleaved rounds, which steadies medians on a machine
whose speed drifts.
"""
import dataclasses
import json
import os
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mobiledets_tf import fileio
from mobiledets_tf.benchmark.harness import BenchmarkOptions, machine_context, measure
from mobiledets_tf.benchmark.latency import Measurement
from mobiledets_tf.benchmark.targets import Target, parse_target
from mobiledets_tf.progress import progress_bar
from mobiledets_tf.search.space import SearchSpace, load_space

HEADER_KIND = "latency-dataset"
FORMAT_VERSION = 1
EXPORT_PRECISIONS = ("float32", "float16", "int8")
CALIBRATION_IMAGES = 4


class LatencyDataError(ValueError):
    """A latency dataset that cannot be read, or that does not match the request."""


@dataclasses.dataclass(frozen=True)
class CollectionSettings:
    """What a latency dataset measures; every row of one file shares them."""
    space: str
    platform: str
    skeleton: Optional[str] = None          # None: the platform's default skeleton
    precision: str = "float32"
    input_size: int = 320
    num_classes: int = 90
    depth_multiplier: float = 1.0
    backend: str = "local"
    target: str = "cpu"
    threads: int = 1
    warmup_runs: int = 10
    num_runs: int = 30
    rounds: int = 2
    seed: int = 0

    def load_space(self) -> SearchSpace:
        return load_space(self.space, self.platform, skeleton=self.skeleton)

    def check(self) -> None:
        if self.precision not in EXPORT_PRECISIONS:
            raise LatencyDataError(f"precision must be one of {', '.join(EXPORT_PRECISIONS)}, "
                                   f"got {self.precision!r}")
        for field in ("input_size", "num_classes", "threads", "num_runs", "rounds"):
            if getattr(self, field) < 1:
                raise LatencyDataError(f"{field} must be at least 1, got {getattr(self, field)}")
        if self.backend == "edgetpu" and self.precision != "int8":
            raise LatencyDataError(f"the Edge TPU runs int8 models only: use precision int8, not {self.precision}")
        if self.depth_multiplier <= 0:
            raise LatencyDataError(f"depth_multiplier must be positive, got {self.depth_multiplier}")
        try:
            parse_target(self.target, self.backend)
        except ValueError as e:
            raise LatencyDataError(str(e)) from None

    def header(self, space: SearchSpace) -> Dict:
        """The header line: the settings with the skeleton resolved, and the search space's size."""
        settings = dataclasses.asdict(self)
        settings["skeleton"] = space.skeleton
        settings["space"] = space.name   # the name inside the file when --space is a YAML path
        return {"kind": HEADER_KIND, "version": FORMAT_VERSION, **settings,
                "space_source": space.source, "num_decisions": len(space.decisions)}


# The file ------------------------------------------------------------------------------------------
def read_dataset(path: str) -> Tuple[Dict, List[Dict]]:
    """(header, rows) of a latency dataset; a final line cut short by a kill is ignored."""
    lines = fileio.read_text(path).split("\n")
    complete, last = lines[:-1], lines[-1]   # a file ends with "\n"; anything after it is a cut line
    if last.strip():
        try:
            json.loads(last)
            complete.append(last)
        except json.JSONDecodeError:
            pass
    records = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise LatencyDataError(f"{path}:{number}: not JSON ({e.msg})") from None
    if not records or records[0].get("kind") != HEADER_KIND:
        raise LatencyDataError(f"{path}: not a latency dataset (the first line must be its header, "
                               f"with \"kind\": \"{HEADER_KIND}\")")
    header, rows = records[0], records[1:]
    for number, row in enumerate(rows, 2):
        if not isinstance(row, dict) or "row" not in row or "indices" not in row:
            raise LatencyDataError(f"{path}: line {number} is not a measurement row (needs 'row' and 'indices')")
    return header, rows


def measured_rows(rows: Sequence[Dict]) -> List[Dict]:
    """The rows that have a latency (not an error)."""
    return [r for r in rows if r.get("latency_ms") is not None]


def check_header(path: str, header: Dict, expected: Dict) -> None:
    different = [f"{k}: file {header.get(k)!r}, requested {v!r}" for k, v in expected.items()
                 if k != "num_decisions" and header.get(k) != v]
    if different:
        raise LatencyDataError(f"{path} was collected with other settings ({'; '.join(different)}); "
                               f"choose another --output or the same settings to resume it")


def _truncate_cut_line(path: str) -> None:
    """Drops a trailing partial line, so that appended rows start on a line of their own."""
    data = fileio.read_bytes(path)
    end = data.rfind(b"\n") + 1
    if end < len(data):
        fileio.write_bytes_atomically(path, data[:end])


# Sampling, export, measurement ----------------------------------------------------------------------
def sample_row(space: SearchSpace, seed: int, row: int) -> List[int]:
    """The architecture of row `row`: the same for the same seed, whatever was collected before."""
    return space.sample(np.random.default_rng([seed, row]))


def export_architecture(space: SearchSpace, indices: Sequence[int], settings: CollectionSettings,
                        path: str) -> None:
    """Builds the detector of `indices` with untrained weights and writes its .tflite to `path`."""
    import tensorflow as tf

    from mobiledets_tf.export.exporter import tflite_model_bytes
    from mobiledets_tf.keras import keras
    from mobiledets_tf.models.detector import SSDLiteDetector

    arch = space.to_arch_spec(indices)
    detector = SSDLiteDetector(arch, num_classes=settings.num_classes, input_size=settings.input_size,
                               depth_multiplier=settings.depth_multiplier, batch_size=1)
    calibration = None
    if settings.precision == "int8":
        rng = np.random.default_rng(0)
        size = settings.input_size
        calibration = [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
                       for _ in range(CALIBRATION_IMAGES)]
    labels = [f"class_{i}" for i in range(1, settings.num_classes + 1)]
    model_bytes = tflite_model_bytes(detector, settings.precision, labels,
                                     calibration_images=calibration)
    fileio.write_bytes_atomically(path, model_bytes)
    keras.backend.clear_session()
    tf.compat.v1.reset_default_graph()


def measurement_row(row: int, space: SearchSpace, indices: Sequence[int], measurement: Measurement) -> Dict:
    record = {"row": row, "indices": list(indices),
              "choices": {d.tag: d.choices[i].label for d, i in zip(space.decisions, indices)},
              "arch": space.to_arch_spec(indices).to_dict(), "device": measurement.device,
              "latency_ms": None, "error": measurement.error or None}
    if not measurement.error and measurement.latency is not None:
        stats = measurement.latency
        record["latency_ms"] = stats.typical_ms   # the median; adb's benchmark_model reports the mean
        record["stats"] = {"median_ms": stats.median_ms, "mean_ms": stats.mean_ms, "p90_ms": stats.p90_ms,
                           "std_ms": stats.std_ms, "min_ms": stats.min_ms, "count": stats.count}
    return record


def _chunks(items: Sequence[int], size: int) -> Iterator[List[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


@dataclasses.dataclass
class CollectionResult:
    path: str
    num_rows: int            # rows in the file (measured or failed)
    num_new: int             # rows this call added
    num_errors: int          # rows in the file with an error
    seconds: float


def collect(settings: CollectionSettings, num: int, output: str, work_dir: Optional[str] = None,
            options: BenchmarkOptions = BenchmarkOptions(), chunk_size: int = 8, keep_models: bool = False,
            edgetpu_compiler: Optional[str] = None, export_only: bool = False,
            log: Callable[[str], None] = print) -> CollectionResult:
    """Measures rows 0..num-1 of `settings` into `output` (JSONL), resuming what is already there.

    With `export_only` the models of the missing rows are only exported into `work_dir` (which needs
    no quiet machine); a later call without it measures them, all in one pass, so that the timing
    itself can run while nothing else does.
    """
    settings.check()
    if num < 1:
        raise LatencyDataError(f"--num must be at least 1, got {num}")
    if chunk_size < 1:
        raise LatencyDataError(f"chunk size must be at least 1, got {chunk_size}")
    if settings.backend == "adb" and len(options.serials) != 1:
        raise LatencyDataError("a latency dataset is measured on one device: pass exactly one --serials")
    if settings.backend == "edgetpu":
        from mobiledets_tf.export.edgetpu import find_compiler
        find_compiler(edgetpu_compiler)   # CompilerNotFoundError before any work
    space = settings.load_space()
    header = settings.header(space)
    done = set()
    if fileio.exists(output) and fileio.getsize(output) > 0:
        existing_header, rows = read_dataset(output)
        check_header(output, existing_header, header)
        _truncate_cut_line(output)
        done = {r["row"] for r in rows}
        log(f"Resuming {output}: {len(done)} of {num} architectures already measured")
    else:
        context = {k: v for k, v in machine_context(settings.backend).items() if k != "backend"}
        fileio.write_text_atomically(output, json.dumps({**header, "context": context}) + "\n")
    todo = [r for r in range(num) if r not in done]
    work_dir = work_dir or os.path.splitext(output)[0] + "_models"
    target = parse_target(settings.target)
    options = dataclasses.replace(options, threads=settings.threads, warmup_runs=settings.warmup_runs,
                                  num_runs=settings.num_runs, rounds=settings.rounds)
    started, added = time.time(), 0
    with progress_bar(total=num, initial=len(done), unit=" archs", desc="latency data") as bar:
        for chunk in _chunks(todo, chunk_size):
            fileio.makedirs(work_dir)
            samples = {r: sample_row(space, settings.seed, r) for r in chunk}
            models = {r: _prepare_model(space, samples[r], settings, os.path.join(work_dir, f"row{r:05d}.tflite"),
                                        edgetpu_compiler) for r in chunk}
            if export_only:
                bar.update(len(chunk))
                continue
            to_measure = [r for r in chunk if isinstance(models[r], str)]
            measurements = dict(zip(to_measure, _measure(settings.backend, [models[r] for r in to_measure],
                                                         target, options)))
            lines = []
            for r in chunk:
                m = measurements.get(r) or Measurement(
                    "", settings.backend, target.label, "", settings.threads, error=models[r].error)
                lines.append(json.dumps(measurement_row(r, space, samples[r], m)) + "\n")
                if m.error:
                    log(f"row {r}: {m.error}")
            fileio.append_text(output, "".join(lines))
            added += len(lines)
            if not keep_models:
                _remove_models(work_dir, chunk)
            bar.update(len(chunk))
    if export_only:
        return CollectionResult(output, len(done), 0, 0, time.time() - started)
    _, rows = read_dataset(output)
    errors = sum(1 for r in rows if r.get("latency_ms") is None)
    return CollectionResult(output, len(rows), added, errors, time.time() - started)


def _remove_models(work_dir: str, rows: Sequence[int]) -> None:
    """Deletes the files of `rows` (models, compiled models, compiler logs); the folder when empty."""
    prefixes = tuple(f"row{r:05d}" for r in rows)
    for name in fileio.listdir(work_dir):
        if name.startswith(prefixes):
            fileio.remove(os.path.join(work_dir, name))
    if fileio.isdir(work_dir) and not fileio.listdir(work_dir):
        fileio.rmtree(work_dir)


@dataclasses.dataclass
class _NotMeasured:
    error: str


def _prepare_model(space: SearchSpace, indices: Sequence[int], settings: CollectionSettings, path: str,
                   edgetpu_compiler: Optional[str] = None):
    """The path of the model to measure (exported to `path` unless there), or `_NotMeasured` saying why
    there is none."""
    if not fileio.exists(path):
        export_architecture(space, indices, settings, path)
    if settings.backend != "edgetpu":
        return path
    from mobiledets_tf.export.edgetpu import compile_model

    compiled = compile_model(path, os.path.dirname(path), compiler=edgetpu_compiler)
    if not compiled.report.compiled or not compiled.output_paths:
        return _NotMeasured("edgetpu_compiler: " + ("; ".join(compiled.report.errors) or "no compiled model"))
    return compiled.output_paths[0]


def measure_architectures(settings: CollectionSettings, space: SearchSpace,
                          architectures: Dict[str, Sequence[int]], work_dir: str,
                          options: BenchmarkOptions = BenchmarkOptions(),
                          edgetpu_compiler: Optional[str] = None) -> Dict[str, Measurement]:
    """Measures architectures of `space` exactly as a dataset's rows are measured (same export,
    precision, backend, target and rounds), e.g. to check a searched architecture against the cost
    model's prediction. `architectures` maps a file-name stem to choice indices."""
    settings.check()
    fileio.makedirs(work_dir)
    target = parse_target(settings.target)
    options = dataclasses.replace(options, threads=settings.threads, warmup_runs=settings.warmup_runs,
                                  num_runs=settings.num_runs, rounds=settings.rounds)
    models = {name: _prepare_model(space, indices, settings, os.path.join(work_dir, f"{name}.tflite"),
                                   edgetpu_compiler) for name, indices in architectures.items()}
    ready = [name for name, model in models.items() if isinstance(model, str)]
    measured = dict(zip(ready, _measure(settings.backend, [models[n] for n in ready], target, options)))
    return {name: measured.get(name) or Measurement("", settings.backend, target.label, "", settings.threads,
                                                    error=models[name].error)
            for name in architectures}


def _measure(backend: str, paths: Sequence[str], target: Target, options: BenchmarkOptions) -> List[Measurement]:
    """One measurement per path (rounds pooled), in the order of `paths`."""
    measurements = measure(backend, paths, [target], options)
    by_path: Dict[str, Measurement] = {}
    for m in measurements:
        by_path.setdefault(m.model_path, m)   # adb: several devices; the first device's row is kept
    return [by_path[p] for p in paths]
