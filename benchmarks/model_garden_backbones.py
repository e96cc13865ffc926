"""Benchmark: this package's four MobileDet backbones against TF Model Garden's, side by side on this CPU.

    python benchmarks/model_garden_backbones.py                  # export, then time (about 14 min on 2 cores)
    python benchmarks/model_garden_backbones.py --reuse_models   # time the files of a previous run

Builds each backbone as a Keras model, image [1, 320, 320, 3] float32 -> (C4 stride 16, C5 stride 32),
the two maps the SSDLite head reads: this package's from its ArchSpec (`wire_backbone`, endpoints C4
and C5) and tf-models-official's `MobileDet(model_id=..., filter_size_scale=1.0)` (endpoint levels
'4' and '5'). Weights are untrained (latency does not depend on their values); each BatchNorm's moving
statistics are set to those of its input over the calibration images (one training-mode pass with
momentum 0), so that activations stay in a normal range for int8 calibration, as trained ones do.
Both are exported with this package's conversion settings (`mobiledets_tf.export.converter`):
float32 with the default converter, int8 by post-training full-integer quantization
(TFLITE_BUILTINS_INT8, uint8 input) calibrated on the same 16 built-in images. Both are traced under
the package's hard-swish form for the precision ("decomposed" in int8, "fused" in float32), which
changes only the package's own HardSwish layers: Model Garden's backbone keeps its own op forms.
The export runs in a child process, so that the timing process never loads TensorFlow.

The 16 files are then timed with the package's local backend (`run_benchmark`: 1 thread, XNNPACK,
each model in its own worker pinned to the last CPU, `--rounds` interleaved passes of 30 timed runs
after 10 warm-up runs, samples pooled per model), each package file next to its Model Garden twin.
The whole timing is repeated `--runs` times; the ratio package / Model Garden of each run and their
median go to benchmarks/results/{name}.md, with the delegation report of every file (what XNNPACK
took) and the op-type counts of each pair (whether the graphs match op for op). The harness's own
tables of each run are written beside it ({name}_rows_run{k}.md/.csv/.json).

Complete detectors are not compared: Model Garden has no SSDLite head for MobileDet.
Known graph differences, both deliberate: in int8 the package's hard-swish is ADD+RELU6 and MUL, its
1/6 folded into quantization scales (`mobiledets_tf.export.scale_folding`; both are run by XNNPACK),
where Model Garden's converts to HARD_SWISH (left to TFLite's kernel on x86; the same conversion
settings, folding included, find nothing to fold in it); and
MobileDet-DSP's block 20 keeps its residual ADD as in TF1, which Model Garden's spec drops.
"""
import collections
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

BACKBONES = {"mobiledet_cpu": "MobileDetCPU", "mobiledet_edgetpu": "MobileDetEdgeTPU",
             "mobiledet_dsp": "MobileDetDSP", "mobiledet_gpu": "MobileDetGPU"}   # ArchSpec -> model_id
SOURCES = {"package": "package", "model_garden": "Model Garden"}
PRECISIONS = ("float32", "int8")
INPUT_SIZE = 320
CALIBRATION_IMAGES = 16
WARMUP_RUNS = 10
NUM_RUNS = 30
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

WORK_DIR = flags.DEFINE_string("work_dir", "runs/model_garden_backbones", "Where the exported backbones go.")
REUSE_MODELS = flags.DEFINE_bool("reuse_models", False, "Time the files a previous run exported.")
RUNS = flags.DEFINE_integer("runs", 3, "Repeats of the whole timing (not of the export).")
ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved passes over all files per run; samples pooled per file.")
NAME = flags.DEFINE_string("name", "model_garden_backbones", "Result file stem under benchmarks/results/.")
EXPORT_ONLY = flags.DEFINE_bool("export_only", False, "Only export the backbones (run in a child process).")


def model_path(work_dir: str, source: str, arch: str, precision: str) -> str:
    return os.path.join(work_dir, source, f"{arch}_backbone_{INPUT_SIZE}_{precision}.tflite")


def model_keys():
    """(arch, precision, source) in timing order: each package file right before its Model Garden twin."""
    return [(arch, precision, source) for arch in BACKBONES for precision in PRECISIONS for source in SOURCES]


# --- export (child process: loads TensorFlow) ---

def package_backbone(arch: str, size: int):
    """This package's backbone of ArchSpec `arch`: image -> [C4, C5]."""
    from mobiledets_tf.arch import load_arch
    from mobiledets_tf.keras import keras
    from mobiledets_tf.models.backbone import wire_backbone
    image = keras.Input((size, size, 3), name="image")
    endpoints, _ = wire_backbone(load_arch(arch), image)
    return keras.Model(image, [endpoints["C4"], endpoints["C5"]], name=f"{arch}_backbone")


def model_garden_backbone(model_id: str, size: int):
    """Model Garden's `MobileDet` backbone `model_id` at the paper's width: image -> [level 4, level 5]."""
    from mobiledets_tf.keras import keras
    from official.vision.modeling.backbones.mobiledet import MobileDet
    backbone = MobileDet(model_id=model_id, filter_size_scale=1.0,
                         input_specs=keras.layers.InputSpec(shape=[None, size, size, 3]))
    image = keras.Input((size, size, 3), name="image")
    levels = backbone(image)
    return keras.Model(image, [levels["4"], levels["5"]], name=f"{model_id}_model_garden")


def check_strides(model, size: int) -> None:
    shapes = [tuple(output.shape[1:3]) for output in model.outputs]
    if shapes != [(size // 16, size // 16), (size // 32, size // 32)]:
        raise ValueError(f"{model.name}: outputs {shapes} are not at strides 16 and 32")


def set_batch_norm_statistics(model, images) -> int:
    """Sets every BatchNorm's moving mean and variance to those of its input over `images` (one
    training-mode pass with momentum 0); returns how many BatchNorm layers there are."""
    import numpy as np
    from mobiledets_tf.keras import keras
    layers = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(np.concatenate(images), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def tflite_bytes(model, precision: str, calibration) -> bytes:
    """`model` converted with the package's settings, traced in the precision's hard-swish form."""
    import tensorflow as tf
    from mobiledets_tf.export.converter import convert_function, holding_variables, trace_in_form
    size = model.inputs[0].shape[1]
    function = tf.function(lambda image: dict(zip(("C4", "C5"), model(image, training=False))),
                           input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, "image")])
    concrete = trace_in_form(function, precision)      # a fresh tf.function: traced in this form
    return convert_function(concrete, holding_variables(model.variables), precision, calibration)


def export_backbones(work_dir: str) -> None:
    """Writes model_path(work_dir, source, arch, precision) with its model card, for every key."""
    import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
    from mobiledets_tf import fileio
    from mobiledets_tf.data.builtin import builtin_dataset
    from mobiledets_tf.export.exporter import representative_images
    from mobiledets_tf.export.model_card import ModelCard, save_model_card
    from mobiledets_tf.keras import keras

    dataset = builtin_dataset(num_train=32, num_val=8, image_size=INPUT_SIZE, seed=0)
    calibration = representative_images(dataset.train_pattern, INPUT_SIZE, CALIBRATION_IMAGES)
    builders = {"package": lambda arch: package_backbone(arch, INPUT_SIZE),
                "model_garden": lambda arch: model_garden_backbone(BACKBONES[arch], INPUT_SIZE)}
    for arch in BACKBONES:
        for source, build in builders.items():
            started = time.time()
            model = build(arch)
            check_strides(model, INPUT_SIZE)
            batch_norms = set_batch_norm_statistics(model, calibration)
            for precision in PRECISIONS:
                path = model_path(work_dir, source, arch, precision)
                fileio.makedirs(os.path.dirname(path))
                fileio.write_bytes_atomically(path, tflite_bytes(model, precision, calibration))
                save_model_card(ModelCard(architecture=f"{arch} ({SOURCES[source]})", precision=precision,
                                          input_size=INPUT_SIZE, parameters=model.count_params()), path)
            keras.backend.clear_session()
            print(f"exported {source} {arch} ({batch_norms} BatchNorms) in {time.time() - started:.0f} s",
                  flush=True)


# --- timing and report (this process: no TensorFlow) ---

def time_all(paths, runs: int, rounds: int, command: str):
    """`runs` full timings of `paths` (each `rounds` interleaved passes); one list of rows per run."""
    from mobiledets_tf.benchmark.harness import BenchmarkOptions, run_benchmark
    from mobiledets_tf.benchmark.targets import parse_targets
    cpu = os.cpu_count() - 1
    options = BenchmarkOptions(threads=1, warmup_runs=WARMUP_RUNS, num_runs=NUM_RUNS, cpus=[cpu], rounds=rounds)
    all_rows = []
    for run in range(1, runs + 1):
        rows = run_benchmark(paths, "local", parse_targets(["cpu"], "local"), RESULTS_DIR,
                             f"{NAME.value}_rows_run{run}", options, plot=False,
                             title=f"MobileDet backbones, package vs Model Garden: run {run} of {runs}",
                             extra_context={"command": command})
        failed = [row for row in rows if row.error]
        if failed:
            sys.exit("could not measure: " + "; ".join(f"{r.model}: {r.error}" for r in failed))
        all_rows.append(rows)
    return all_rows, cpu


def ratio_table(keys, all_rows) -> list:
    """Per backbone and precision: medians over runs of each side, each run's ratio, their median."""
    runs = len(all_rows)
    by_run = [dict(zip(keys, rows)) for rows in all_rows]
    lines = ["| backbone | precision | package ms | Model Garden ms | "
             + " | ".join(f"ratio run {k}" if k == 1 else f"run {k}" for k in range(1, runs + 1))
             + " | median ratio |", "|---|---|---|---|" + "---|" * runs + "---|"]
    for arch in BACKBONES:
        for precision in PRECISIONS:
            ours = [rows[(arch, precision, "package")].median_ms for rows in by_run]
            theirs = [rows[(arch, precision, "model_garden")].median_ms for rows in by_run]
            ratios = [a / b for a, b in zip(ours, theirs)]
            lines.append(f"| {arch} | {precision} | {statistics.median(ours):.2f} | "
                         f"{statistics.median(theirs):.2f} | " + " | ".join(f"{r:.3f}" for r in ratios)
                         + f" | {statistics.median(ratios):.3f} |")
    return lines


def delegation_table(keys, paths, rows) -> list:
    lines = ["| file | delegation |", "|---|---|"]
    for key, path, row in zip(keys, paths, rows):
        lines.append(f"| {key[2]}/{os.path.basename(path)} | {row.delegation} |")
    return lines


def op_counts(path: str) -> collections.Counter:
    from mobiledets_tf.export.tflite_model import read_tflite
    return collections.Counter(op.name for op in read_tflite(path).main.operators)


def op_count_tables(work_dir: str) -> list:
    """Per backbone: each op type's count in the four files; the pairs that differ are marked."""
    lines = []
    for arch in BACKBONES:
        counts = {(p, s): op_counts(model_path(work_dir, s, arch, p)) for p in PRECISIONS for s in SOURCES}
        same = {p: counts[(p, "package")] == counts[(p, "model_garden")] for p in PRECISIONS}
        verdict = ", ".join(f"{p}: {'same op counts' if same[p] else 'op counts differ'}" for p in PRECISIONS)
        columns = [(p, s) for p in PRECISIONS for s in SOURCES]
        lines += [f"### {arch} ({verdict})", "",
                  "| op | " + " | ".join(f"{SOURCES[s]} {p}" for p, s in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for op in sorted(set().union(*counts.values())):
            cells = []
            for p, s in columns:
                differs = counts[(p, "package")][op] != counts[(p, "model_garden")][op]
                cells.append(f"**{counts[(p, s)][op]}**" if differs else str(counts[(p, s)][op]))
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
        totals = [str(sum(counts[c].values())) for c in columns]
        lines += ["| total | " + " | ".join(totals) + " |", ""]
    return lines


def write_report(keys, paths, all_rows, cpu: int, command: str, started: float) -> str:
    from mobiledets_tf import fileio
    from mobiledets_tf.benchmark.local import cpu_name, vector_extensions
    lines = ["# MobileDet backbones: this package vs TF Model Garden", "",
             f"CPU: {cpu_name()} ({os.cpu_count()} CPUs), vector extensions: {vector_extensions()}  ",
             f"Command: {command}  ",
             f"Protocol: backbones only, image [1, {INPUT_SIZE}, {INPUT_SIZE}, 3] -> C4 (stride 16), C5 (stride 32); "
             "untrained weights, BatchNorm statistics set on the calibration images; both exported with the "
             f"package's converter settings (int8: calibrated on the same {CALIBRATION_IMAGES} built-in images, "
             "uint8 input). Local backend, 1 thread, XNNPACK, pinned to CPU "
             f"{cpu}; per run {ROUNDS.value} interleaved rounds of {NUM_RUNS} timed runs (after {WARMUP_RUNS} "
             f"warm-up runs) pooled per file; {len(all_rows)} runs. ms: median over the runs of each file's "
             "median; ratio: package / Model Garden.", "",
             *ratio_table(keys, all_rows), "",
             "## Delegation to XNNPACK (last run)", "", *delegation_table(keys, paths, all_rows[-1]), "",
             "## Op types per file (bold: the package and Model Garden counts differ at that precision)", "",
             *op_count_tables(WORK_DIR.value),
             f"Wall time: {(time.time() - started) / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    fileio.write_text_atomically(os.path.join(RESULTS_DIR, NAME.value + ".md"), text)
    return text


def main(argv):
    del argv
    work_dir = WORK_DIR.value
    if EXPORT_ONLY.value:
        export_backbones(work_dir)
        return
    started = time.time()
    command = "python " + " ".join(sys.argv)
    if not REUSE_MODELS.value:   # in a child process, so that this one times models without TensorFlow loaded
        subprocess.run([sys.executable, os.path.abspath(__file__), "--export_only", f"--work_dir={work_dir}"],
                       check=True)
    keys = model_keys()
    paths = [model_path(work_dir, source, arch, precision) for arch, precision, source in keys]
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        sys.exit("missing exports: " + ", ".join(missing))
    all_rows, cpu = time_all(paths, RUNS.value, ROUNDS.value, command)
    print(write_report(keys, paths, all_rows, cpu, command, started))


if __name__ == "__main__":
    app.run(main)
