"""mobiledets-quickstart: the whole flow on the built-in dataset in one command, with a summary table.

    mobiledets-quickstart                                   # into runs/quickstart
    mobiledets-quickstart --output_dir=runs/qs2 --override=train.seed=1 --qat_steps=600
    mobiledets-quickstart --config=configs/experiments/quickstart.yaml --float32=false --benchmark_runs=100

Runs, one after the other, the binaries a user would run by hand: mobiledets-train (float, into
OUTPUT_DIR/float), mobiledets-eval, mobiledets-train --quantization=qat (into OUTPUT_DIR/qat),
mobiledets-export (int8 from the QAT checkpoint, float32 from the float one), mobiledets-eval
--tflite and mobiledets-benchmark (local CPU, 1 thread; tables and Pareto plot in OUTPUT_DIR/benchmark).
Each stage prints its command and its own progress. Stages whose outputs already exist are skipped,
so an interrupted run continues where it stopped; delete OUTPUT_DIR to start over. Ends with a table
of AP, AP50, latency and size per model and the time of each stage, also written to
OUTPUT_DIR/summary.md and summary.json.
"""
import sys

from absl import app, flags

from mobiledets_tf.pipeline.quickstart import DEFAULT_CONFIG, PipelineError, QuickstartOptions, run_quickstart

OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/quickstart", "Folder of every stage's outputs.")
CONFIG = flags.DEFINE_string("config", DEFAULT_CONFIG, "Experiment YAML (a relative path that is not "
                             "found from the working folder is looked up in the repository).")
OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "Config overrides of both trainings, such as train.steps=200 (repeatable; the "
    "QAT fine-tuning then sets its own steps and learning rate).")
QAT_STEPS = flags.DEFINE_integer("qat_steps", 300, "Steps of quantization-aware fine-tuning.")
QAT_LEARNING_RATE = flags.DEFINE_float("qat_learning_rate", 0.0005, "Peak learning rate of the QAT "
                                       "fine-tuning (no warmup).")
NMS = flags.DEFINE_enum("nms", "regular", ["fast", "regular"], "NMS of the exported .tflite files "
                        "(regular: per-class, as the float model's evaluation, so the APs compare).")
FLOAT32 = flags.DEFINE_bool("float32", True, "Also export, evaluate and time the float model as a "
                            "float32 .tflite, next to the int8 one.")
SAVED_MODEL = flags.DEFINE_bool("saved_model", False, "Also export TensorFlow SavedModels (about "
                                "doubles the export time; the .tflite files do not need them).")
BENCHMARK_RUNS = flags.DEFINE_integer("benchmark_runs", 50, "Timed runs per model.")
BENCHMARK_WARMUP_RUNS = flags.DEFINE_integer("benchmark_warmup_runs", 10, "Untimed runs per model first.")


def main(argv):
    del argv
    options = QuickstartOptions(
        output_dir=OUTPUT_DIR.value, config=CONFIG.value, overrides=tuple(OVERRIDES.value),
        qat_steps=QAT_STEPS.value, qat_learning_rate=QAT_LEARNING_RATE.value, nms=NMS.value,
        float32=FLOAT32.value, saved_model=SAVED_MODEL.value, benchmark_runs=BENCHMARK_RUNS.value,
        benchmark_warmup_runs=BENCHMARK_WARMUP_RUNS.value)
    try:
        run_quickstart(options)
    except PipelineError as e:
        sys.exit(f"mobiledets-quickstart: {e}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
