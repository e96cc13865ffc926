"""Benchmark: input-pipeline throughput against training-step consumption, measured in one run.

    python benchmarks/input_pipeline.py [--arch=mobiledet_edgetpu] [--input_size=320] [--batch_size=16]

Measures, one after the other in the same process: (1) images/s the training input pipeline
produces (decode, SSD random crop, flip, resize, target assignment; parallel and prefetched) on the
built-in dataset, and (2) images/s a training step consumes on a batch already in memory. The ratio
pipeline / training must be >= 2 for the pipeline not to be the bottleneck. Results are appended to
benchmarks/results/input_pipeline.md with the machine and versions.
"""
import os
import platform
import time

from absl import app, flags

import mobiledets_tf  # noqa: F401
import tensorflow as tf

from mobiledets_tf import fileio
from mobiledets_tf.config import load_config
from mobiledets_tf.training.strategy import make_strategy
from mobiledets_tf.training.task import DetectionTask

ARCH = flags.DEFINE_string("arch", "mobiledet_edgetpu", "Architecture.")
INPUT_SIZE = flags.DEFINE_integer("input_size", 320, "Input size.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Batch size.")
SECONDS = flags.DEFINE_float("seconds", 20.0, "Seconds to measure each side.")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "input_pipeline.md")


def images_per_second(run_batch, batch_size: int, seconds: float) -> float:
    run_batch()  # warm-up (tracing, first fill of buffers)
    run_batch()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run_batch()
        count += batch_size
    return count / (time.perf_counter() - start)


def main(argv):
    del argv
    config = load_config(overrides=[
        f"model.arch={ARCH.value},model.input_size={INPUT_SIZE.value},model.num_classes=6",
        f"train.batch_size={BATCH_SIZE.value},data.dataset=builtin,data.cache=false"])
    task = DetectionTask(config, make_strategy("default"))
    dataset = iter(task.train_dataset_fn(None))
    pipeline_rate = images_per_second(lambda: next(dataset), BATCH_SIZE.value, SECONDS.value)

    images, targets = next(dataset)
    step = tf.function(task.train_step)
    train_rate = images_per_second(lambda: step(images, targets)["total_loss"].numpy(),
                                   BATCH_SIZE.value, SECONDS.value)
    ratio = pipeline_rate / train_rate
    line = (f"| {time.strftime('%Y-%m-%d')} | {ARCH.value} | {INPUT_SIZE.value} | {BATCH_SIZE.value} | "
            f"{pipeline_rate:.1f} | {train_rate:.1f} | {ratio:.2f} | {os.cpu_count()} cores "
            f"{platform.machine()}, TF {tf.__version__} |")
    print(f"input pipeline: {pipeline_rate:.1f} images/s")
    print(f"training step:  {train_rate:.1f} images/s")
    print(f"ratio pipeline/training: {ratio:.2f} ({'OK' if ratio >= 2 else 'PIPELINE IS A BOTTLENECK'})")
    if not fileio.exists(RESULTS):
        fileio.write_text_atomically(
            RESULTS, "# Input pipeline vs training step (images/s, measured in one run)\n\n"
                     "Command: `python benchmarks/input_pipeline.py` (built-in dataset; JPEG decode of every "
                     "image, SSD random crop, flip, resize, target assignment).\n\n"
                     "| date | arch | input | batch | pipeline img/s | train img/s | ratio | machine |\n"
                     "|---|---|---|---|---|---|---|---|\n")
    fileio.append_text(RESULTS, line + "\n")


if __name__ == "__main__":
    app.run(main)
