"""Benchmark: single-thread CPU latency of the four MobileDets and the four SSDLite baselines, float32
and int8, at 320x320 with a 90-class COCO head, measured with the package's local benchmark backend.

    python benchmarks/latency_table.py                      # build, export, measure (about 10 min)
    python benchmarks/latency_table.py --reuse_models --compare_to=benchmarks/results/latency_local_cpu.json

Builds each detector with untrained weights (latency does not depend on weight values), exports
float32 and int8 (post-training quantization calibrated on built-in images) with mobiledets'
exporter, then runs `run_benchmark` (one worker process per model, 1 thread, XNNPACK, pinned to one
CPU, 8 interleaved rounds of 40 timed runs pooled per model) and writes benchmarks/results/latency_local_cpu.{md,csv,json,png}. In the same run each model
is also timed directly right after each of its harness measurements (an `Interpreter.invoke()` loop
in this process, which never loads TensorFlow: the export runs in a child process), and the ratio of the two
medians is printed and recorded: the harness's figures must agree with plain interpreter timing.
With --compare_to, each median is compared with the same row of an earlier run's JSON.
"""
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

ARCHITECTURES = ("mobiledet_cpu", "mobiledet_edgetpu", "mobiledet_dsp", "mobiledet_gpu",
                 "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet_a1")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

WORK_DIR = flags.DEFINE_string("work_dir", "runs/latency_table", "Where the exported models go.")
INPUT_SIZE = flags.DEFINE_integer("input_size", 320, "Square input size (the paper's: 320).")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 90, "Classes of the detection head (COCO: 90).")
PRECISIONS = flags.DEFINE_list("precisions", ["float32", "int8"], "Export precisions to measure.")
NUM_RUNS = flags.DEFINE_integer("num_runs", 40, "Timed runs per model and round.")
WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 10, "Untimed runs per model and round.")
CPU = flags.DEFINE_integer("cpu", None, "Pin measurements to this CPU (default: the last one).")
ROUNDS = flags.DEFINE_integer("rounds", 8, "Interleaved passes over all models; samples pooled per model.")
REUSE_MODELS = flags.DEFINE_bool("reuse_models", False, "Measure the models a previous run exported.")
COMPARE_TO = flags.DEFINE_string("compare_to", None, "JSON of an earlier run to compare medians with.")
NAME = flags.DEFINE_string("name", "latency_local_cpu", "Result file stem under benchmarks/results/.")
EXPORT_ONLY = flags.DEFINE_bool("export_only", False, "Only export the models (run in a child process).")


def export_models(work_dir: str) -> list:
    """Exports every architecture at every precision (untrained weights); returns the .tflite paths."""
    import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
    import tensorflow as tf
    from mobiledets_tf.data.builtin import builtin_dataset
    from mobiledets_tf.export.exporter import representative_images, write_exports
    from mobiledets_tf.models.detector import SSDLiteDetector

    size, classes = INPUT_SIZE.value, NUM_CLASSES.value
    images = builtin_dataset(num_train=32, num_val=8, image_size=size, seed=0)
    calibration = representative_images(images.train_pattern, size, 32)
    labels = [f"class_{i}" for i in range(1, classes + 1)]
    paths = []
    for arch in ARCHITECTURES:
        started = time.time()
        detector = SSDLiteDetector(arch, num_classes=classes, input_size=size, batch_size=1)
        exported = write_exports(detector, os.path.join(work_dir, arch), PRECISIONS.value, labels,
                                 calibration_images=calibration, saved_model=False)
        paths += [model.tflite_path for model in exported.values()]
        tf.keras.backend.clear_session()
        print(f"exported {arch} ({', '.join(exported)}) in {time.time() - started:.0f} s", flush=True)
    return paths


def direct_times_ms(path: str, runs: int, warmup: int) -> list:
    """A plain `invoke()` loop in this process, 1 thread (independent of the harness's worker
    processes; the same seeded inputs, since the postprocess op's time depends on the scores)."""
    from ai_edge_litert.interpreter import Interpreter
    from mobiledets_tf.benchmark.interpreter_timing import random_inputs
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    random_inputs(interpreter)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def comparison_lines(rows, previous_json: str) -> list:
    from mobiledets_tf.benchmark.results import read_rows
    previous = {(r.model, r.target): r for r in read_rows(previous_json)}
    lines, worst = [], 0.0
    for row in rows:
        before = previous.get((row.model, row.target))
        if before and before.median_ms and row.median_ms:
            change = row.median_ms / before.median_ms - 1
            worst = max(worst, abs(change))
            lines.append(f"| {row.model} | {before.median_ms:.2f} | {row.median_ms:.2f} | {change:+.1%} |")
    header = [f"Repeat of {os.path.basename(previous_json)}: largest median change {worst:.1%}", "",
              "| model | first run median ms | this run median ms | change |", "|---|---|---|---|"]
    return header + lines


def main(argv):
    del argv
    from mobiledets_tf.benchmark.harness import BenchmarkOptions, run_benchmark
    from mobiledets_tf.benchmark.targets import parse_targets
    from mobiledets_tf import fileio

    started = time.time()
    work_dir = WORK_DIR.value
    patterns = [os.path.join(work_dir, arch, f"*_{p}.tflite") for arch in ARCHITECTURES for p in PRECISIONS.value]
    if EXPORT_ONLY.value:
        export_models(work_dir)
        return
    if not REUSE_MODELS.value:   # in a child process, so that this one times models without TensorFlow loaded
        subprocess.run([sys.executable, os.path.abspath(__file__), "--export_only",
                        f"--work_dir={work_dir}", f"--input_size={INPUT_SIZE.value}",
                        f"--num_classes={NUM_CLASSES.value}", f"--precisions={','.join(PRECISIONS.value)}"],
                       check=True)
    export_seconds = time.time() - started
    cpu = CPU.value if CPU.value is not None else os.cpu_count() - 1
    options = BenchmarkOptions(threads=1, warmup_runs=WARMUP_RUNS.value, num_runs=NUM_RUNS.value, cpus=[cpu],
                               rounds=ROUNDS.value)
    os.sched_setaffinity(0, {cpu})   # the direct timing runs on the CPU the workers are pinned to
    direct_samples = {}

    def time_directly(measurement):  # right after the harness measured the model: the same conditions
        direct_samples.setdefault(os.path.abspath(measurement.model_path), []).extend(
            direct_times_ms(measurement.model_path, NUM_RUNS.value, WARMUP_RUNS.value))

    rows = run_benchmark(patterns, "local", parse_targets(["cpu"], "local"), RESULTS_DIR, NAME.value, options,
                         title=f"Single-thread CPU latency, {INPUT_SIZE.value}x{INPUT_SIZE.value}, "
                               f"{NUM_CLASSES.value}-class head (untrained weights)",
                         extra_context={"command": "python " + " ".join(sys.argv)},
                         on_measurement=time_directly)
    measure_seconds = time.time() - started - export_seconds
    failed = [row for row in rows if row.error]
    if failed:
        sys.exit("could not measure: " + "; ".join(f"{r.model}: {r.error}" for r in failed))

    lines = ["", "## Harness vs direct interpreter timing (same run)", "",
             "| model | harness median ms | direct median ms | harness / direct |", "|---|---|---|---|"]
    worst = 0.0
    for row in rows:
        path = os.path.abspath(os.path.join(work_dir, row.architecture, row.model))
        direct = float(np.median(direct_samples[path]))
        worst = max(worst, abs(row.median_ms / direct - 1))
        lines.append(f"| {row.model} | {row.median_ms:.2f} | {direct:.2f} | {row.median_ms / direct:.3f} |")
    lines += ["", f"Largest difference: {worst:.1%}.", ""]
    if COMPARE_TO.value:
        lines += comparison_lines(rows, COMPARE_TO.value) + [""]
    total = time.time() - started
    lines.append(f"Wall time: {total / 60:.1f} min (export {export_seconds / 60:.1f} min, measurement "
                 f"{measure_seconds / 60:.1f} min).")
    table_path = os.path.join(RESULTS_DIR, NAME.value + ".md")
    table = fileio.read_text(table_path)
    fileio.write_text_atomically(table_path, table + "\n".join(lines) + "\n")
    print(table + "\n".join(lines))


if __name__ == "__main__":
    app.run(main)
