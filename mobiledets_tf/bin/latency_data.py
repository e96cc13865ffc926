"""mobiledets-latency-data: measure the latency of random architectures of a search space on a target.

    mobiledets-latency-data --space=ibn_fused_tucker --platform=cpu --num=250 --cpus=1 \
        --output=runs/latency/ibn_fused_tucker_cpu.jsonl
    mobiledets-latency-data --space=ibn_fused_tucker --platform=dsp --precision=int8 --num=500 \
        --backend=adb --benchmark_binary=benchmark_model --serials=R58M123ABC \
        --target=nnapi:accelerator=qti-dsp --output=runs/latency/pixel4_dsp.jsonl
    mobiledets-latency-data --space=ibn_fused_tucker --platform=edgetpu --precision=int8 --num=300 \
        --backend=edgetpu --target=edgetpu:device=usb:0 --output=runs/latency/coral.jsonl

Each architecture is sampled uniformly from the space, built with untrained weights, exported to
TFLite at --precision and timed by the benchmark harness; one JSONL row per architecture (choice
indices, ArchSpec, median/mean/p90/std/min ms). Running the same command again resumes: rows already
in --output are kept, and --num can be raised to add more. `mobiledets-cost-model fit` reads the file.
"""
import sys

from absl import app, flags, logging

from mobiledets_tf.benchmark.adb import AdbError
from mobiledets_tf.bin.benchmark_flags import backend_flag, benchmark_options_from_flags, define_benchmark_flags
from mobiledets_tf.export.edgetpu import CompilerNotFoundError
from mobiledets_tf.search.latency_data import EXPORT_PRECISIONS, CollectionSettings, collect
from mobiledets_tf.search.space import available_spaces

SPACE = flags.DEFINE_string("space", "ibn_fused_tucker", "Search space: a name among "
                            f"{', '.join(available_spaces())}, or a YAML file.")
PLATFORM = flags.DEFINE_string("platform", "cpu", "Platform adaptation: cpu, edgetpu, dsp or gpu.")
SKELETON = flags.DEFINE_string("skeleton", None, "Backbone skeleton (default: the platform's).")
NUM = flags.DEFINE_integer("num", 250, "Architectures the file should hold when done.")
OUTPUT = flags.DEFINE_string("output", None, "The JSONL dataset (created, or resumed when it exists).")
PRECISION = flags.DEFINE_enum("precision", "float32", list(EXPORT_PRECISIONS), "Export precision.")
INPUT_SIZE = flags.DEFINE_integer("input_size", 320, "Square input size of the detectors.")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 90, "Classes of the detection head (COCO: 90).")
DEPTH_MULTIPLIER = flags.DEFINE_float("depth_multiplier", 1.0, "Width multiplier of the detectors.")
TARGET = flags.DEFINE_string("target", None, "One target KIND[:key=value,...] (see mobiledets-benchmark); "
                             "default: cpu, or edgetpu for --backend=edgetpu.")
ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved passes over each chunk of models, samples pooled.")
SEED = flags.DEFINE_integer("seed", 0, "Row r samples its architecture from the seed [seed, r].")
CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 8, "Models exported, then measured, together.")
WORK_DIR = flags.DEFINE_string("work_dir", None, "Where the .tflite files go (default: next to --output).")
KEEP_MODELS = flags.DEFINE_bool("keep_models", False, "Keep the exported .tflite files.")
EXPORT_ONLY = flags.DEFINE_bool("export_only", False, "Only export the models of the missing rows (into --work_dir); "
                                "run again without it to measure them all in one pass, on a quiet machine.")
EDGETPU_COMPILER = flags.DEFINE_string("edgetpu_compiler", None, "edgetpu: the compiler (default: on PATH).")
define_benchmark_flags(num_runs=30)


def main(argv):
    del argv
    if not OUTPUT.value:
        sys.exit("mobiledets-latency-data: give --output=FILE.jsonl")
    backend = backend_flag()
    logging.set_verbosity(logging.WARNING)   # TensorFlow's SavedModel chatter, once per architecture
    try:
        options = benchmark_options_from_flags()
        settings = CollectionSettings(
            space=SPACE.value, platform=PLATFORM.value, skeleton=SKELETON.value, precision=PRECISION.value,
            input_size=INPUT_SIZE.value, num_classes=NUM_CLASSES.value,
            depth_multiplier=DEPTH_MULTIPLIER.value, backend=backend,
            target=TARGET.value or ("edgetpu" if backend == "edgetpu" else "cpu"),
            threads=options.threads, warmup_runs=options.warmup_runs, num_runs=options.num_runs,
            rounds=ROUNDS.value, seed=SEED.value)
        result = collect(settings, NUM.value, OUTPUT.value, work_dir=WORK_DIR.value, options=options,
                         chunk_size=CHUNK_SIZE.value, keep_models=KEEP_MODELS.value,
                         edgetpu_compiler=EDGETPU_COMPILER.value, export_only=EXPORT_ONLY.value)
    except (ValueError, FileNotFoundError, AdbError, CompilerNotFoundError) as e:
        sys.exit(f"mobiledets-latency-data: {e}")
    if EXPORT_ONLY.value:
        print(f"exported the models of the rows not yet in {result.path} in {result.seconds / 60:.1f} min; "
              f"run the same command without --export_only to measure them")
        return
    print(f"{result.path}: {result.num_rows} architectures ({result.num_new} measured now in "
          f"{result.seconds / 60:.1f} min, {result.num_errors} with errors)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
