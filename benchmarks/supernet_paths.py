"""Benchmark: how far the supernet's shared weights train with a new sampled path every step, against
the same supernet trained on one fixed path, side by side in one run.

    python benchmarks/supernet_paths.py [--config=configs/experiments/search_quickstart.yaml]
        [--arch_json=benchmarks/results/search_quickstart/searched_20ms.json] [--steps=400]
        [--override=train.base_learning_rate=0.002 ...]

The search's quality signal Q is only as good as the shared weights: if the supernet does not learn
to detect on the sampled paths, Q does not separate architectures and the reward follows the latency
term alone. This trains two fresh supernets of the config's search task on the same batches and
schedule (`train.steps` = --steps): (1) "sampled", a uniformly sampled architecture every step (as
the search after its warmup with uniform logits), (2) "fixed", every step the architecture of
--arch_json (any architecture of the space; by default the committed 20 ms search result). It
prints the classification and localisation losses of both every `--report_every` steps, and at the
end Q (COCO AP50 on validation mini-batches, batch statistics, as the search measures it) of the
fixed architecture on the fixed-path supernet and of sampled architectures on the sampled-path
supernet. The table is appended to benchmarks/results/supernet_paths.md with the command and machine.
"""
import json
import os
import platform
import sys
import time

from absl import app, flags

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from mobiledets_tf import fileio
from mobiledets_tf.config import load_config
from mobiledets_tf.keras import keras
from mobiledets_tf.search.search_task import SearchTask, search_space_of
from mobiledets_tf.search.tunas import minibatch_quality

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = flags.DEFINE_string("config", os.path.join(ROOT, "configs/experiments/search_quickstart.yaml"),
                             "Search experiment config (data, supernet, optimizer).")
OVERRIDE = flags.DEFINE_multi_string("override", [], "Config overrides, key=value.")
ARCH_JSON = flags.DEFINE_string(
    "arch_json", os.path.join(ROOT, "benchmarks/results/search_quickstart/searched_20ms.json"),
    "JSON with the 'indices' of the fixed architecture (a searched_arch.json).")
STEPS = flags.DEFINE_integer("steps", 400, "Training steps of each supernet (the schedule's length).")
REPORT_EVERY = flags.DEFINE_integer("report_every", 50, "Print and record the losses every this many steps.")
QUALITY_BATCHES = flags.DEFINE_integer("quality_batches", 4, "Validation mini-batches Q is measured on.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the sampled architectures and the weights.")
RESULTS = os.path.join(ROOT, "benchmarks", "results", "supernet_paths.md")


def train_supernet(config, choices_at, label: str):
    """Trains a fresh supernet, `choices_at(step)` the path of each step; returns (task, loss rows)."""
    keras.utils.set_random_seed(SEED.value)
    task = SearchTask(config, tf.distribute.get_strategy())
    step_fn = task.train_step_fn()
    batches = iter(task.distributed_train_dataset())
    rows, window, start = [], [], time.perf_counter()
    for step in range(1, STEPS.value + 1):
        losses = step_fn(next(batches), tf.constant(choices_at(step), tf.int32))
        window.append([float(losses["classification_loss"]), float(losses["localization_loss"])])
        if step % REPORT_EVERY.value == 0 or step == STEPS.value:
            classification, localization = np.mean(window, axis=0)
            rows.append((step, classification, localization))
            window = []
            print(f"{label}: step {step}/{STEPS.value}  classification {classification:.3f}  localisation "
                  f"{localization:.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    return task, rows


def quality(task: SearchTask, architectures):
    """Q (AP50) of each architecture on its own validation mini-batch, as the search measures it."""
    label_map = [{"id": c.id, "name": c.name} for c in task.data.label_map]
    detect, batches = task.detect_fn(), iter(task.distributed_validation_dataset())
    values = []
    for indices in architectures:
        images, groundtruth = next(batches)
        detections = detect(images, tf.constant(indices, tf.int32))
        values.append(minibatch_quality(groundtruth, detections, label_map, "AP50"))
    return values


def main(argv):
    del argv
    config = load_config(CONFIG.value, [f"train.steps={STEPS.value}"] + OVERRIDE.value)
    fixed = json.loads(fileio.read_text(ARCH_JSON.value))["indices"]
    space = search_space_of(config)
    paths = {"sampled": lambda step: space.sample(np.random.default_rng([SEED.value, step])),
             "fixed": lambda step: fixed}
    rng = np.random.default_rng(SEED.value + 1)
    scored = {"sampled": [space.sample(rng) for _ in range(QUALITY_BATCHES.value)],
              "fixed": [fixed] * QUALITY_BATCHES.value}
    results = {}
    for label in ("sampled", "fixed"):
        task, rows = train_supernet(config, paths[label], label)
        qualities = quality(task, scored[label])
        print(f"{label}: Q (AP50) per validation mini-batch {np.round(qualities, 3).tolist()}")
        results[label] = (rows, qualities)

    losses = "\n".join(
        f"| {s} | {sc:.3f} / {sl:.3f} | {fc:.3f} / {fl:.3f} |"
        for (s, sc, sl), (_, fc, fl) in zip(results["sampled"][0], results["fixed"][0]))
    q = {label: results[label][1] for label in results}
    section = (
        f"\n## {time.strftime('%Y-%m-%d %H:%M')}\n\n"
        f"Command: `python {' '.join(sys.argv)}`\n\n"
        f"{config.search.space}/{config.search.platform}, {config.model.input_size}x{config.model.input_size}, "
        f"batch {config.train.batch_size}, {config.train.optimizer} peak {config.train.base_learning_rate:g}, "
        f"{STEPS.value} steps; {os.cpu_count()} cores {platform.machine()}, TF {tf.__version__}.\n\n"
        f"| step | sampled paths: classification / localisation | fixed path |\n|---|---|---|\n{losses}\n\n"
        f"Q (AP50) at the end: sampled architectures on the sampled-path supernet "
        f"{np.round(q['sampled'], 3).tolist()} (mean {np.mean(q['sampled']):.3f}); the fixed architecture on "
        f"the fixed-path supernet {np.round(q['fixed'], 3).tolist()} (mean {np.mean(q['fixed']):.3f}).\n")
    header = ("# Supernet trained on sampled paths vs one fixed path (measured in one run)\n\n"
              "`benchmarks/supernet_paths.py`: the same supernet, data and schedule; losses averaged over "
              "each reporting window, Q on validation mini-batches with batch statistics.\n")
    previous = fileio.read_text(RESULTS) if fileio.exists(RESULTS) else header
    fileio.write_text_atomically(RESULTS, previous + section)
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    app.run(main)
