"""Benchmark: a whole TuNAS search iteration against a standalone training step, measured in one run.

    python benchmarks/search_step.py [--config=configs/experiments/search_quickstart.yaml]
        [--space=ibn_fused_tucker] [--platform=cpu] [--input_size=160] [--batch_size=16]
        [--depth_multiplier=0.5] [--rounds=5] [--steps=5] [--override=search.sandwich=true]

Times, interleaved in the same process:
1. the **whole search iteration** of `mobiledets-search` (`SearchLoop.search_step`: sampling from
   the controller, the shared-weight update on a training batch, detections and AP50 on a validation
   mini-batch, the controller's REINFORCE update), on --config's data and cost model with the flags'
   space, platform, input size, batch and depth multiplier, past the warmup and the RL delay (the
   iteration of most of a search);
2. the supernet's **shared-weight step** alone (forward, backward and optimizer update, a freshly
   sampled architecture every step);
3. the **training step of the standalone detector of the LARGEST architecture** of the space (per
   layer the op with the most multiply-adds at the widest widths, counted by `mobiledets_tf.stats`);
4. for the supernet's own overhead, the shared-weight step (2) with that largest architecture.
(2)-(4) use the training optimizer (`train` defaults), the L2 terms of their `model.losses` and the
same random batch (images in [-1, 1], targets assigned to random boxes), so the standalone step
(3) pays no input pipeline while the iteration (1) does. Each round times `--steps` steps of each
side, the side that goes first rotating; the medians over rounds of the per-step times give the
ratio iteration (1) / standalone (3), which should stay <= 2: a search iteration costs about one
sampled model. Compilation is done (and reported) before timing.
The result is appended to benchmarks/results/search_step.md with the command, date and machine.
"""
import functools
import os
import platform
import sys
import tempfile
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
from mobiledets_tf.search.sandwich import extreme_architecture
from mobiledets_tf.search.space import INPUT_CHANNELS, SearchSpace, load_space
from mobiledets_tf.search.supernet import Supernet
from mobiledets_tf.stats import model_stats
from mobiledets_tf.training.optimizer import build_optimizer
from pinned_jobs import QUICKSTART_SEARCH, repository_path

CONFIG = flags.DEFINE_string(
    "config", QUICKSTART_SEARCH,
    "Search config of the whole iteration (data, cost model of --space/--platform, search settings).")
SPACE = flags.DEFINE_string("space", "ibn_fused_tucker", "Search space (name or YAML file).")
PLATFORM = flags.DEFINE_string("platform", "cpu", "Platform of the search space.")
INPUT_SIZE = flags.DEFINE_integer("input_size", 160, "Input size (the quickstart's).")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Batch size.")
DEPTH_MULTIPLIER = flags.DEFINE_float("depth_multiplier", 0.5, "Depth multiplier.")
ROUNDS = flags.DEFINE_integer("rounds", 5, "Timing rounds (each times both sides).")
STEPS = flags.DEFINE_integer("steps", 5, "Steps per side and round.")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 6, "Classes (the built-in dataset has 6).")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the batch and the sampled architectures.")
OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "Config override of the whole iteration (1), after the flags above, e.g. search.sandwich=true "
                    "(repeatable).")
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


def backbone_madds(space: SearchSpace, indices, input_size: int, depth_multiplier: float) -> int:
    """Multiply-adds of the chosen backbone: its blocks' `_op_madds` along the space's walk."""
    total, resolution = 0, input_size
    for choice in space.walk(indices):
        total += _op_madds(space, choice.op, choice.layer.stride, choice.residual, choice.in_width,
                           choice.out_width, resolution, depth_multiplier)
        resolution = -(-resolution // choice.layer.stride)
    return total


def largest_indices(space: SearchSpace, input_size: int, depth_multiplier: float):
    """The backbone of the most multiply-adds, found as the sandwich rule finds its largest path by
    parameters (`sandwich.extreme_architecture`)."""
    return extreme_architecture([len(d.choices) for d in space.decisions],
                                lambda indices: backbone_madds(space, indices, input_size, depth_multiplier),
                                largest=True)


def search_iteration(space: SearchSpace, size: int, batch: int, multiplier: float, model_dir: str):
    """One whole `SearchLoop.search_step` on --config's data, as a function of no arguments."""
    from mobiledets_tf.config import load_config
    from mobiledets_tf.search.cost_model import CostModel
    from mobiledets_tf.search.search_task import SearchTask
    from mobiledets_tf.search.tunas import SearchLoop
    config = load_config(CONFIG.value, [
        f"search.space={SPACE.value}", f"search.platform={PLATFORM.value}", f"model.input_size={size}",
        f"train.batch_size={batch}", f"model.depth_multiplier={multiplier}", *OVERRIDE.value])
    cost_model = CostModel.load(repository_path(config.search.cost_model))
    uniform = [np.full(len(d.choices), 1 / len(d.choices)) for d in space.decisions]
    config.search.target_ms = cost_model.expected(space, uniform)
    task = SearchTask(config, tf.distribute.get_strategy())
    loop = SearchLoop(task, cost_model, model_dir)
    s = config.search
    task.optimizer.iterations.assign(int(config.train.steps * max(s.warmup, s.rl_delay)) + 1)
    train, validation = iter(task.distributed_train_dataset()), iter(task.distributed_validation_dataset())

    def iteration():
        result = loop.search_step(train, validation)
        assert result["warmup_share"] == 0 and result["rl_learning_rate"] > 0, result
        return result
    return iteration


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
    with tempfile.TemporaryDirectory() as model_dir:
        sides = {  # name: one step, returning something to wait for
            "iteration": search_iteration(space, size, batch, multiplier, model_dir),
            "supernet": lambda: steps["supernet"](images, targets, tf.constant(space.sample(rng), tf.int32)),
            "supernet_largest": lambda: steps["supernet"](images, targets, largest_choices),
            "standalone": lambda: steps["standalone"](images, targets),
        }
        compile_seconds = compile_sides(sides)
        traces = steps["supernet"].experimental_get_tracing_count()
        times = time_sides(sides)
    assert steps["supernet"].experimental_get_tracing_count() == traces, "the shared-weight step retraced"
    report(space, largest, compile_seconds, times)


def _wait(result) -> None:
    if hasattr(result, "numpy"):
        result.numpy()


def compile_sides(sides):
    """{side: seconds of its first call}; each side then runs once more before timing."""
    compile_seconds = {}
    for name, side in sides.items():
        start = time.perf_counter()
        _wait(side())
        compile_seconds[name] = time.perf_counter() - start
        print(f"{name}: compiled and ran the first step in {compile_seconds[name]:.1f} s", flush=True)
        _wait(side())
    return compile_seconds


def time_sides(sides):
    """{side: [seconds per step of each round]}, the rounds interleaved."""
    times = {name: [] for name in sides}
    order = list(sides)
    for r in range(ROUNDS.value):
        shift = r % len(order)
        for name in order[shift:] + order[:shift]:  # each side goes first in turn
            start = time.perf_counter()
            for _ in range(STEPS.value):
                result = sides[name]()
            _wait(result)
            times[name].append((time.perf_counter() - start) / STEPS.value)
        print(f"round {r + 1}/{ROUNDS.value}: " + ", ".join(f"{k} {1000 * v[-1]:.0f} ms" for k, v in times.items()),
              flush=True)
    return times


def report(space, largest, compile_seconds, times) -> None:
    size, batch, multiplier = INPUT_SIZE.value, BATCH_SIZE.value, DEPTH_MULTIPLIER.value
    ms = {name: 1000 * float(np.median(t)) for name, t in times.items()}
    ratio = ms["iteration"] / ms["standalone"]
    step_ratio = ms["supernet"] / ms["standalone"]
    same_ratio = ms["supernet_largest"] / ms["standalone"]
    verdict = "OK" if ratio <= 2 else "ABOVE THE ACCEPTANCE OF 2"
    print(f"whole search iteration:                       {ms['iteration']:.1f} ms (median of {ROUNDS.value} rounds)")
    print(f"supernet shared-weight step (sampled):        {ms['supernet']:.1f} ms")
    print(f"supernet shared-weight step (largest):        {ms['supernet_largest']:.1f} ms")
    print(f"standalone step of the largest architecture:  {ms['standalone']:.1f} ms")
    print(f"ratio iteration/standalone: {ratio:.2f} ({verdict}); shared-weight step alone {step_ratio:.2f}; "
          f"on the same (largest) architecture {same_ratio:.2f}")
    from mobiledets_tf.benchmark.local import cpu_name, vector_extensions
    per_round = "; ".join("/".join(f"{1000 * t:.0f}" for t in round_times) for round_times in zip(*times.values()))
    section = (
        f"\n## {time.strftime('%Y-%m-%d %H:%M')}\n\n"
        f"Command: `python {' '.join(sys.argv)}` (config `{os.path.relpath(CONFIG.value)}`)\n\n"
        f"| space | input | batch | depth mult. | whole iteration ms | shared-weight step ms (sampled) | "
        f"shared-weight step ms (largest) | largest standalone ms/step | ratio iteration / standalone | "
        f"ratio shared-weight step / standalone | ratio on the largest |\n"
        f"|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {space.name}/{space.platform} | {size} | {batch} | {multiplier:g} | {ms['iteration']:.1f} | "
        f"{ms['supernet']:.1f} | {ms['supernet_largest']:.1f} | {ms['standalone']:.1f} | {ratio:.2f} | "
        f"{step_ratio:.2f} | {same_ratio:.2f} |\n\n"
        f"Machine: {cpu_name()} ({os.cpu_count()} CPUs), vector extensions: {vector_extensions()}; "
        f"{platform.machine()}, TF {tf.__version__}. Per round (ms, {'/'.join(times)}): {per_round}. "
        f"First call (compilation included): " + ", ".join(f"{k} {v:.0f} s" for k, v in compile_seconds.items()) +
        f". Largest architecture: indices {largest}.\n")
    header = ("# Search iteration vs standalone training step (measured in one run)\n\n"
              "`benchmarks/search_step.py`: medians over interleaved rounds; the largest architecture takes "
              "per layer the op with the most multiply-adds. Target: ratio <= 2 (a search iteration should "
              "cost about one sampled model).\n")
    previous = fileio.read_text(RESULTS) if fileio.exists(RESULTS) else header
    fileio.write_text_atomically(RESULTS, previous + section)
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    app.run(main)
