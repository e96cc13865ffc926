"""mobiledets-benchmark: latency tables of exported .tflite models on the local CPU, phones, Edge TPUs.

    mobiledets-benchmark --models='runs/quickstart/*/export/*.tflite'
    mobiledets-benchmark --models='export/*.tflite' --targets=cpu,cpu:xnnpack=false --cpus=1
    mobiledets-benchmark --models='export/*int8.tflite' --backend=adb --benchmark_binary=benchmark_model \
        --targets='cpu,gpu,nnapi:accelerator=qti-dsp,hexagon:lib=/data/local/tmp' --serials=R58M123ABC
    mobiledets-benchmark --models='export/*_edgetpu.tflite' --backend=edgetpu --targets=edgetpu:device=usb:0

Single-threaded by default (the paper's protocol), warm-up runs then timed runs. Writes
OUTPUT_DIR/NAME.md, .csv and .json (model, architecture, precision, backend/target, device, threads,
median/mean/p90/std/min latency, multiply-adds, parameters, AP when known) and NAME.png, a
latency-vs-AP Pareto plot. A row that cannot be measured says why; the others are still produced,
and the command then exits with status 1, so scripts notice.
"""
import os
import sys

from absl import app, flags

from mobiledets_tf import fileio
from mobiledets_tf.benchmark.adb import AdbError
from mobiledets_tf.benchmark.harness import run_benchmark
from mobiledets_tf.benchmark.results import format_markdown
from mobiledets_tf.benchmark.targets import parse_targets
from mobiledets_tf.bin.benchmark_flags import backend_flag, benchmark_options_from_flags, define_benchmark_flags

MODELS = flags.DEFINE_list("models", None, "Comma-separated .tflite paths or globs.")
TARGETS = flags.DEFINE_multi_string(
    "targets", [], "Targets KIND[:key=value,...], comma-separated or repeated: cpu, cpu:xnnpack=false, "
    "external:path=LIB,options=k:v;k:v (local); cpu, gpu, nnapi:accelerator=NAME, hexagon:lib=DIR, "
    "external:... (adb); edgetpu:device=usb:0 (edgetpu). Default: cpu, or edgetpu.")
ROUNDS = flags.DEFINE_integer("rounds", 1, "local: measure every model this many times over, interleaved, "
                              "and pool the samples (steadier medians on a machine whose speed drifts).")
define_benchmark_flags()
EVAL_JSON = flags.DEFINE_multi_string("eval_json", [], "MODEL=metrics.json: the AP of a model (file name "
                                      "or stem); default eval_STEM/metrics.json next to the model.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmark_results", "Where the tables and plot go.")
NAME = flags.DEFINE_string("name", "latency", "File name stem of the tables and plot.")
TITLE = flags.DEFINE_string("title", "", "Table and plot title.")


def parse_eval_json(values):
    mapping = {}
    for value in values:
        model, sep, path = value.partition("=")
        if not sep or not model or not path:
            raise ValueError(f"--eval_json: {value!r} is not MODEL=PATH")
        if not fileio.exists(path):
            raise FileNotFoundError(f"--eval_json: {path}: no such file")
        mapping[model] = path
    return mapping


def main(argv):
    del argv
    if not MODELS.value:
        sys.exit("mobiledets-benchmark: give --models=PATH_OR_GLOB[,...]")
    try:
        targets = parse_targets(TARGETS.value, backend_flag())
        options = benchmark_options_from_flags(rounds=ROUNDS.value)
        rows = run_benchmark(MODELS.value, backend_flag(), targets, OUTPUT_DIR.value, NAME.value, options,
                             parse_eval_json(EVAL_JSON.value), TITLE.value)
    except (ValueError, FileNotFoundError, AdbError) as e:
        sys.exit(f"mobiledets-benchmark: {e}")
    print(format_markdown(rows))
    stem = os.path.join(OUTPUT_DIR.value, NAME.value)
    print(f"tables: {stem}.md {stem}.csv {stem}.json\nplot: {stem}.png")
    failed = sum(1 for row in rows if row.error)
    if failed:
        sys.exit(f"mobiledets-benchmark: {failed} of {len(rows)} rows could not be measured (see their error "
                 f"column in {stem}.md)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
