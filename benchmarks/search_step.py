"""Benchmark: a TuNAS supernet search step against a standalone training step, measured in one run.

    python benchmarks/search_step.py [--space=ibn_fused_tucker] [--platform=edgetpu] [--input_size=160]
        [--batch_size=16] [--depth_multiplier=0.5] [--rounds=5] [--steps=5]

Times, interleaved in the same process: (1) the supernet search step (forward, backward and optimizer
update of the shared weights, with a freshly sampled architecture every step), (2) the training step
of the standalone detector of the LARGEST architecture of the space (per layer the op with the most
multiply-adds at the widest widths, counted by `mobiledets_tf.stats`) and, for the supernet's own
overhead, (3) the same supernet step with that largest architecture every step. All use the training
optimizer (`train` defaults), the L2 terms of their `model.losses` and the same random batch (images
in [-1, 1], targets assigned to random boxes). Each round times `--steps` steps of each side, the
side that goes first rotating; the medians over rounds of the per-step times give the ratio
supernet (1) / standalone (2), which should stay <= 2: a search step costs about one sampled model. Compilation is done (and
reported) before timing.
The result is appended to benchmarks/results/search_step.md with the command, date and machine.
"""
import functools
import os
import platform
import sys
import time

from absl import app, flags

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import numpy as np
import tensorflow as tf

from mobiledets_tf import fileio
from mobiledets_tf.config import TrainConfig
from mobiledets_tf.keras import keras
from mobiledets_tf.layers.block_rules import round_filters
from mobiledets_tf.models.backbone import make_block
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.search.space import INPUT_CHANNELS, SearchSpace, load_space
from mobiledets_tf.search.supernet import Supernet
from mobiledets_tf.stats import model_stats
from mobiledets_tf.training.optimizer import build_optimizer

SPACE = flags.DEFINE_string("space", "ibn_fused_tucker", "Search space (name or YAML file).")
PLATFORM = flags.DEFINE_string("platform", "edgetpu", "Platform of the search space.")
INPUT_SIZE = flags.DEFINE_integer("input_size", 160, "Input size (the quickstart's).")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Batch size.")
DEPTH_MULTIPLIER = flags.DEFINE_float("depth_multiplier", 0.5, "Depth multiplier.")
ROUNDS = flags.DEFINE_integer("rounds", 5, "Timing rounds (each times both sides).")
STEPS = flags.DEFINE_integer("steps", 5, "Steps per side and round.")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 6, "Classes (the built-in dataset has 6).")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the batch and the sampled architectures.")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "search_step.md")


@functools.lru_cache(maxsize=None)
def _op_madds(space: SearchSpace, op, stride: int, residual: bool, in_width: int, out_width: int,
              resolution: int, depth_multiplier: float) -> int:
    """Multiply-adds of one block alone (`make_block` wired on an input of the layer's shape)."""
    arch = space.to_arch_spec([0] * len(space.decisions))
    in_channels = in_width if in_width == INPUT_CHANNELS else round_filters(in_width, depth_multiplier)
    inputs = keras.Input((resolution, resolution, in_channels))
    block = make_block(arch, op.block(stride, out_width, residual), in_channels, depth_multiplier,
                       "backbone_probe")
    return model_stats(keras.Model(inputs, block.wire(inputs)["output"]))["total"]["madds"]


def largest_indices(space: SearchSpace, input_size: int, depth_multiplier: float):
    """The widest width choices and, per layer, the op with the most multiply-adds."""
    indices = [0] * len(space.decisions)
    for d, decision in enumerate(space.decisions):
        if decision.tag.endswith("/width"):
            indices[d] = int(np.argmax([w.filters for w in decision.choices]))
    resolution, in_width = input_size, INPUT_CHANNELS
    for layer in space.layers:
        out_width = max(w.filters for w in layer.widths)
        if layer.op_decision is not None:
            costs = [_op_madds(space, op, layer.stride, layer.residual(op),
                               in_width, out_width, resolution, depth_multiplier) for op in layer.ops]
            indices[layer.op_decision] = int(np.argmax(costs))
        resolution, in_width = -(-resolution // layer.stride), out_width
    return indices


def make_step(model_call, model, losses_fn, variables, optimizer, signature):
    """A compiled training step: losses + L2 terms, gradients, optimizer update."""
    @tf.function(input_signature=signature)
    def step(images, targets, *call_args):
        with tf.GradientTape() as tape:
            predictions = model_call(images, *call_args)
            loss = losses_fn(predictions, targets)["total"] + tf.add_n([tf.constant(0.0)] + model.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
    return step


def main(argv):
    del argv
    space = load_space(SPACE.value, PLATFORM.value)
    size, batch, multiplier = INPUT_SIZE.value, BATCH_SIZE.value, DEPTH_MULTIPLIER.value
    keras.utils.set_random_seed(SEED.value)
    supernet = Supernet(space, NUM_CLASSES.value, size, depth_multiplier=multiplier)
    largest = largest_indices(space, size, multiplier)
    standalone = SSDLiteDetector(space.to_arch_spec(largest, name="largest"), NUM_CLASSES.value, size,
                                 depth_multiplier=multiplier)
    print(f"largest architecture of {space.tag}:\n{space.describe(largest)}")

    rng = np.random.default_rng(SEED.value)
    images = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)), tf.float32)
    corner, side = rng.uniform(0, 0.6, (batch, 4, 2)), rng.uniform(0.1, 0.4, (batch, 4, 2))
    boxes = tf.constant(np.concatenate([corner, corner + side], axis=-1), tf.float32)  # 4 per image
    targets = supernet.assign_targets(boxes, tf.constant(rng.integers(0, NUM_CLASSES.value, (batch, 4))))
    signature = [tf.TensorSpec(images.shape, tf.float32),
                 {k: tf.TensorSpec(v.shape, v.dtype) for k, v in targets.items()}]

    steps = {}
    for name, detector, model_call, extra in (
            ("supernet", supernet, supernet, [tf.TensorSpec([len(space.decisions)], tf.int32)]),
            ("standalone", standalone, functools.partial(standalone.model, training=True), [])):
        optimizer, _ = build_optimizer(TrainConfig())
        steps[name] = make_step(model_call, detector.model, detector.losses,
                                detector.model.trainable_variables, optimizer, signature + extra)

    largest_choices = tf.constant(largest, tf.int32)
    sides = {  # name: one step
        "supernet": lambda: steps["supernet"](images, targets, tf.constant(space.sample(rng), tf.int32)),
        "supernet_largest": lambda: steps["supernet"](images, targets, largest_choices),
        "standalone": lambda: steps["standalone"](images, targets),
    }
    compile_seconds = {}
    for name in steps:
        start = time.perf_counter()
        sides[name]().numpy()
        compile_seconds[name] = time.perf_counter() - start
        print(f"{name}: compiled and ran the first step in {compile_seconds[name]:.1f} s")
        sides[name]().numpy()
    traces = steps["supernet"].experimental_get_tracing_count()

    times = {name: [] for name in sides}
    order = list(sides)
    for r in range(ROUNDS.value):
        for name in order[r % 3:] + order[:r % 3]:  # each side goes first in turn
            start = time.perf_counter()
            for _ in range(STEPS.value):
                loss = sides[name]()
            loss.numpy()
            times[name].append((time.perf_counter() - start) / STEPS.value)
    assert steps["supernet"].experimental_get_tracing_count() == traces, "the search step retraced"
    ms = {name: 1000 * float(np.median(t)) for name, t in times.items()}
    ratio = ms["supernet"] / ms["standalone"]
    same_ratio = ms["supernet_largest"] / ms["standalone"]

    verdict = "OK" if ratio <= 2 else "ABOVE THE ACCEPTANCE OF 2"
    print(f"supernet search step (sampled architectures): {ms['supernet']:.1f} ms "
          f"(median of {ROUNDS.value} rounds)")
    print(f"supernet step of the largest architecture:    {ms['supernet_largest']:.1f} ms")
    print(f"standalone step of the largest architecture:  {ms['standalone']:.1f} ms")
    print(f"ratio supernet/standalone: {ratio:.2f} ({verdict}); on the same (largest) architecture "
          f"{same_ratio:.2f}")
    per_round = "; ".join("/".join(f"{1000 * t:.0f}" for t in round_times) for round_times in zip(*times.values()))
    section = (
        f"\n## {time.strftime('%Y-%m-%d %H:%M')}\n\n"
        f"Command: `python {' '.join(sys.argv)}`\n\n"
        f"| space | input | batch | depth mult. | supernet ms/step (sampled) | supernet ms/step (largest) | "
        f"largest standalone ms/step | ratio | ratio on the largest | machine |\n"
        f"|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {space.name}/{space.platform} | {size} | {batch} | {multiplier:g} | {ms['supernet']:.1f} | "
        f"{ms['supernet_largest']:.1f} | {ms['standalone']:.1f} | {ratio:.2f} | {same_ratio:.2f} | "
        f"{os.cpu_count()} cores {platform.machine()}, TF {tf.__version__} |\n\n"
        f"Per round (ms, sampled/largest/standalone): {per_round}. First step (compilation included): "
        f"supernet {compile_seconds['supernet']:.0f} s, standalone {compile_seconds['standalone']:.0f} s. "
        f"Largest architecture: indices {largest}.\n")
    header = ("# Supernet search step vs standalone training step (measured in one run)\n\n"
              "`benchmarks/search_step.py`: medians over interleaved rounds; the largest architecture takes "
              "per layer the op with the most multiply-adds. Target: ratio <= 2 (a search step should cost about one sampled model).\n")
    previous = fileio.read_text(RESULTS) if fileio.exists(RESULTS) else header
    fileio.write_text_atomically(RESULTS, previous + section)
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    app.run(main)
