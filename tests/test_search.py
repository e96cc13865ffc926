"""mobiledets-search end to end on the tiny built-in dataset: the search runs, writes an ArchSpec that
lies in the space with its predicted latency, logs its curves, resumes after SIGKILL with the
controller's logits and baseline intact, learns from the configured reward (TuNAS' absolute or
MnasNet's soft or hard), trains the controller alone on the frozen supernet (`search.controller_steps`),
and rejects bad input with clear messages; and the search benchmarks' report logic. The cost model
here is fitted on synthetic latencies (real measurements: test_latency_data.py)."""
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_binary, tiny_config_yaml
from mobiledets_tf.arch import load_arch
from mobiledets_tf.config import load_config
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.search import tunas
from mobiledets_tf.search.cost_model import CostModel, fit
from mobiledets_tf.search.search_task import SearchTask
from mobiledets_tf.search.space import load_space
from mobiledets_tf.search.tunas import architecture_name

# A small space keeps the supernet quick to compile: 4 searchable layers of 4 ops over a MobileDet-like
# skeleton (the shipped spaces have 19-30 decisions of up to 12 ops; test_supernet.py covers them).
SMALL_SPACE = """
description: a small space for search tests
skeletons:
  small:
    - {stride: 2, filters: 16, ops: [{type: conv, kernel: 3}]}
    - {stride: 1, filters: 8, ops: [{type: ibn, kernel: 3, expansion: 1}], endpoint: C1}
    - {stride: 2, filters: 16, endpoint: C2}
    - {stride: 2, filters: 24, layers: 2, endpoint: C3}
    - {stride: 2, filters: 40, ops: [{type: ibn, kernel: 3, expansion: 4}]}
    - {stride: 1, filters: 48, endpoint: C4}
    - {stride: 2, filters: 64, ops: [{type: ibn, kernel: 3, expansion: 4}], endpoint: C5}
spaces:
  small:
    ops:
      body:
        - {type: ibn, kernel: [3, 5], expansion: 4}
        - {type: fused, kernel: 3, expansion: 4}
        - {type: tucker, kernel: 3, input_rank_ratio: 0.25, output_rank_ratio: 0.75}
platforms:
  edgetpu: {skeleton: small, activation: relu6}
"""


@pytest.fixture(scope="module")
def space_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "small.yaml"
    path.write_text(SMALL_SPACE)
    return str(path)


@pytest.fixture(scope="module")
def cost_model_path(space_path, tmp_path_factory):
    """A linear cost model of the small space fitted on synthetic latencies."""
    space = load_space(space_path, "edgetpu")
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.0, 3.0, space.cost_features.size)
    rows = []
    for r in range(100):
        indices = space.sample(rng)
        rows.append({"row": r, "indices": indices, "latency_ms": float(weights @ space.cost_features.of(indices) + 10)})
    model = fit(space, rows, {"space": "small", "platform": "edgetpu", "skeleton": space.skeleton,
                              "space_source": space_path, "precision": "float32", "input_size": 320})
    path = str(tmp_path_factory.mktemp("cost") / "cost.json")
    model.save(path)
    return path


def search_config(tmp_path, steps, space_path, **search):
    values = {"space": space_path, "platform": "edgetpu", "validation_batch_multiple": 2, **search}
    text = tiny_config_yaml(steps=steps, checkpoint_every=4, log_every=2, batch_size=4)
    text += "search: {" + ", ".join(f"{k}: {v}" for k, v in values.items()) + "}\n"
    path = tmp_path / "search.yaml"
    path.write_text(text)
    return path


def checkpoint_controller(path):
    reader = tf.train.load_checkpoint(path)
    names = reader.get_variable_to_shape_map()
    logits = sorted((n for n in names if n.startswith("controller/logits/") and "OPTIMIZER" not in n),
                    key=lambda n: int(n.split("/")[2]))
    return ([reader.get_tensor(n) for n in logits], float(reader.get_tensor("controller/baseline/.ATTRIBUTES/VARIABLE_VALUE")),
            int(reader.get_tensor("controller/updates/.ATTRIBUTES/VARIABLE_VALUE")))


@pytest.mark.slow
def test_search_writes_an_architecture_of_the_space(tiny_data_dir, space_path, cost_model_path, tmp_path):
    model_dir = tmp_path / "search"
    cost = CostModel.load(cost_model_path)
    space = load_space(space_path, "edgetpu")
    target = float(cost.expected(space, [np.full(len(d.choices), 1 / len(d.choices)) for d in space.decisions]))
    run = run_binary("search", f"--config={search_config(tmp_path, 8, space_path, rl_delay=0.25, warmup=0.25)}",
                     f"--model_dir={model_dir}", f"--cost_model={cost_model_path}", f"--target_ms={target}")
    assert "searched architecture:" in run.stdout
    arch = load_arch(str(model_dir / "searched_arch.yaml"))
    record = json.loads((model_dir / "searched_arch.json").read_text())
    indices = space.indices_of(arch)
    assert record["indices"] == indices and record["step"] == 8
    assert record["predicted_ms"] == pytest.approx(cost.predict(space, indices), rel=1e-9)
    assert set(record["probabilities"]) == {d.tag for d in space.decisions}
    assert "step 8/8" in run.stderr and "Q " in run.stderr and "expected" in run.stderr
    tags = set()
    for event_file in (model_dir / "search").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {v.tag for v in event.summary.value}
    assert {"search/quality", "search/cost_ms", "search/reward", "search/expected_cost_ms",
            "search/total_loss"} <= tags
    assert any(t.startswith("probabilities/layer") for t in tags)
    # The controller learned after the RL delay (2 of 8 steps): its logits left zero.
    logits, _, updates = checkpoint_controller(str(model_dir / "ckpt-8"))
    assert updates == 6 and any(np.abs(l).max() > 0 for l in logits)

    # The searched architecture trains with mobiledets-train as it is.
    trained = run_binary("train", f"--config={search_config(tmp_path, 2, space_path)}", f"--arch={model_dir / 'searched_arch.yaml'}",
                         f"--model_dir={tmp_path / 'train'}")
    assert (tmp_path / "train" / "ckpt-2.index").exists(), trained.stderr[-2000:]
    # ... exports to int8 and is timed by the benchmark harness.
    out = tmp_path / "export"
    run_binary("export", f"--model_dir={tmp_path / 'train'}", f"--output_dir={out}", "--precision=int8",
               "--calibration_images=4", "--nosaved_model")
    name = architecture_name("searched", space, target)
    assert arch.name == name and name.startswith("searched_small_edgetpu_") and "." not in name
    model = out / f"{name}_64_int8.tflite"
    assert model.exists(), sorted(os.listdir(out))
    timed = run_binary("benchmark", f"--models={model}", "--num_runs=3", "--warmup_runs=1",
                       f"--output_dir={tmp_path / 'tables'}", "--name=searched")
    row = json.loads((tmp_path / "tables" / "searched.json").read_text())["rows"][0]
    assert row["architecture"] == name and row["median_ms"] > 0, timed.stdout


def test_the_config_accepts_exactly_the_rewards_and_finalist_measures_the_search_knows():
    # config sits below search/ in the import graph, so it names the choices again: they must agree.
    from mobiledets_tf.config import _CHOICES
    from mobiledets_tf.search.finalists import FINALIST_MEASURES
    from mobiledets_tf.search.rewards import REWARDS
    assert set(_CHOICES["search.finalist_measure"]) == set(FINALIST_MEASURES)
    assert set(_CHOICES["search.reward"]) == set(REWARDS)


def test_finalists_are_distinct_controller_draws_within_the_band():
    from mobiledets_tf.search.finalists import draw_finalists
    pool = [[0, 0], [0, 1], [1, 0], [1, 1]]
    latency = {(0, 0): 10.0, (0, 1): 10.4, (1, 0): 13.0, (1, 1): 9.8}   # (1, 0) lies 30% off a 10 ms target
    sample = lambda rng: pool[rng.integers(len(pool))]  # noqa: E731
    drawn = draw_finalists(sample, [0, 1], lambda i: latency[tuple(i)], 10.0, 0.05, 3, seed=0)
    assert drawn[0].indices == [0, 1] and drawn[0].predicted_ms == 10.4   # the controller's pick first
    assert sorted(map(tuple, (f.indices for f in drawn))) == [(0, 0), (0, 1), (1, 1)]
    assert [f.name for f in drawn] == ["finalist_00", "finalist_01", "finalist_02"] and drawn[0].ap50 is None
    fewer = draw_finalists(sample, [1, 0], lambda i: latency[tuple(i)], 10.0, 0.05, 10, seed=0, max_draws=200)
    assert len(fewer) == 3 and [1, 0] not in [f.indices for f in fewer]   # out of the band, and no more exist


@pytest.mark.slow
def test_the_finalist_stage_keeps_the_best_finalist_and_resumes(tiny_data_dir, space_path, cost_model_path,
                                                                tmp_path, monkeypatch):
    """Two finalists trained for 2 steps and scored by the stage itself; then, with the training
    replaced by fixed scores, the choice of the best (the first of equal scores) and the resumption."""
    from mobiledets_tf.search import finalists as finalists_lib
    model_dir = tmp_path / "search"
    cost = CostModel.load(cost_model_path)
    space = load_space(space_path, "edgetpu")
    target = float(cost.expected(space, [np.full(len(d.choices), 1 / len(d.choices)) for d in space.decisions]))
    config = search_config(tmp_path, 2, space_path, rl_delay=0, warmup=0, finalists=2, finalist_steps=2,
                           finalist_band=1.0)
    run = run_binary("search", f"--config={config}", f"--model_dir={model_dir}", f"--cost_model={cost_model_path}",
                     f"--target_ms={target}")
    record = json.loads((model_dir / "finalists.json").read_text())
    assert len(record["finalists"]) == 2 and record["steps"] == 2
    chosen = max(record["finalists"], key=lambda f: f["ap50"])
    assert record["chosen"] == chosen["name"] and f"{chosen['name']}: predicted" in run.stdout
    for finalist in record["finalists"]:
        trained = model_dir / "finalists" / finalist["name"]
        assert (trained / "ckpt-2.index").exists() and (trained / "eval" / "metrics.json").exists()
        recipe = load_config(str(trained / "config.yaml"))
        assert recipe.train.steps == 2 and recipe.train.seed == load_config(str(config)).train.seed + 1000
        metrics = json.loads((trained / "eval" / "metrics.json").read_text())
        assert finalist["ap50"] == pytest.approx(metrics["AP50"])
    searched = json.loads((model_dir / "searched_arch.json").read_text())
    controller = json.loads((model_dir / "controller_arch.json").read_text())
    assert searched["indices"] == chosen["indices"] and searched["finalist_ap50"] == chosen["ap50"]
    assert controller["indices"] == record["finalists"][0]["indices"]   # the controller's pick is the first
    assert space.indices_of(load_arch(str(model_dir / "searched_arch.yaml"))) == chosen["indices"]

    # The choice and the resumption, the training replaced by fixed scores.
    scores = iter([0.1, 0.3, 0.3])
    monkeypatch.setattr(finalists_lib, "train_and_score", lambda config, model_dir, strategy, measure: next(scores))
    loop = tunas.SearchLoop(SearchTask(load_config(str(model_dir / "config.yaml")), tf.distribute.get_strategy()),
                            cost, str(model_dir))
    loop.restore()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text((model_dir / "config.yaml").read_text().replace("finalists: 2", "finalists: 3"))
    search = load_config(str(other / "config.yaml")).search
    draw = lambda: finalists_lib.controller_finalists(loop.controller, loop.predicted_ms, search)  # noqa: E731
    chosen, drawn = finalists_lib.run_finalists(space, draw, str(other), tf.distribute.get_strategy(), "searched",
                                                "synthetic")
    assert [f.ap50 for f in drawn] == [0.1, 0.3, 0.3] and chosen.name == "finalist_01"
    assert json.loads((other / "finalists.json").read_text())["chosen"] == "finalist_01"
    again, _ = finalists_lib.run_finalists(space, draw, str(other), tf.distribute.get_strategy(), "searched",
                                           "synthetic")
    assert again == chosen   # every finalist scored: nothing trained again (the scores would have run out)

    # By the training loss the lowest wins (the first of equal ones), scored into its own field.
    losses = iter([2.0, 1.5, 1.5])
    monkeypatch.setattr(finalists_lib, "train_and_score",
                        lambda config, model_dir, strategy, measure: next(losses) if measure == "training_loss" else 0)
    by_loss = tmp_path / "by_loss"
    by_loss.mkdir()
    (by_loss / "config.yaml").write_text((other / "config.yaml").read_text().replace(
        "finalist_measure: ap50", "finalist_measure: training_loss"))
    chosen, drawn = finalists_lib.run_finalists(space, draw, str(by_loss), tf.distribute.get_strategy(), "searched",
                                                "synthetic")
    assert [f.training_loss for f in drawn] == [2.0, 1.5, 1.5] and chosen.name == "finalist_01"
    assert all(f.ap50 is None for f in drawn)
    assert json.loads((by_loss / "finalists.json").read_text())["measure"] == "training_loss"


@pytest.mark.slow
def test_a_random_search_judges_architectures_near_the_target_by_short_trainings(
        tiny_data_dir, space_path, cost_model_path, tmp_path):
    """search.finalist_source=band: no supernet; uniform draws within the band, the best of their
    short trainings written as the search's result."""
    model_dir = tmp_path / "search"
    cost = CostModel.load(cost_model_path)
    space = load_space(space_path, "edgetpu")
    target = float(cost.expected(space, [np.full(len(d.choices), 1 / len(d.choices)) for d in space.decisions]))
    config = search_config(tmp_path, 2, space_path, finalists=2, finalist_steps=4, finalist_source="band",
                           finalist_band=0.1, finalist_measure="training_loss", finalist_seeds=2)
    run = run_binary("search", f"--config={config}", f"--model_dir={model_dir}", f"--cost_model={cost_model_path}",
                     f"--target_ms={target}")
    record = json.loads((model_dir / "finalists.json").read_text())
    assert record["source"] == "band" and record["measure"] == "training_loss" and len(record["finalists"]) == 2
    seed = load_config(str(config)).train.seed + 1000
    for finalist in record["finalists"]:
        assert abs(cost.predict(space, finalist["indices"]) / target - 1) <= 0.1
        per_seed = []
        for k, folder in enumerate([finalist["name"], finalist["name"] + "_run1"]):
            trained = model_dir / "finalists" / folder
            assert not (trained / "eval").exists()   # judged without an evaluation
            assert load_config(str(trained / "config.yaml")).train.seed == seed + k
            # The detection loss averaged over both logged loops of 2 steps (log_every 2), read back by hand.
            logged = {}
            for event_file in (trained / "train").glob("events.out.tfevents.*"):
                for event in tf.compat.v1.train.summary_iterator(str(event_file)):
                    for value in event.summary.value:
                        if value.tag in ("losses/classification_loss", "losses/localization_loss"):
                            logged[event.step] = logged.get(event.step, 0.0) + float(tf.make_ndarray(value.tensor))
            assert sorted(logged) == [2, 4]
            per_seed.append((logged[2] + logged[4]) / 2)
        assert finalist["per_seed"] == pytest.approx(per_seed, rel=1e-6) and finalist["ap50"] is None
        assert finalist["training_loss"] == pytest.approx(np.mean(per_seed), rel=1e-6)
    chosen = min(record["finalists"], key=lambda f: f["training_loss"])
    searched = json.loads((model_dir / "searched_arch.json").read_text())
    assert searched["indices"] == chosen["indices"] and "searched architecture:" in run.stdout
    assert searched["finalist_training_loss"] == chosen["training_loss"]
    assert "mean training loss" in run.stdout
    assert "random search over" in load_arch(str(model_dir / "searched_arch.yaml")).description
    assert not list(model_dir.glob("ckpt-*")) and not (model_dir / "controller_arch.yaml").exists()   # no supernet


def test_each_reward_is_what_the_controller_learns_from(tiny_data_dir, space_path, cost_model_path, tmp_path,
                                                       monkeypatch):
    # Q is pinned to 0.5 (a few steps on tiny data detect nothing, and Q = 0 zeroes MnasNet's rewards);
    # everything else is the search's own step: sampling, cost model, reward, controller update.
    monkeypatch.setattr(tunas, "minibatch_quality", lambda *args: 0.5)
    config = load_config(str(search_config(tmp_path, 3, space_path, rl_delay=0, warmup=0)),
                         [f"search.cost_model={cost_model_path}", "search.target_ms=30",
                          "search.reward_exponent=-0.5"])
    task = SearchTask(config, tf.distribute.get_strategy())
    loop = tunas.SearchLoop(task, CostModel.load(cost_model_path), str(tmp_path / "search"))
    train, validation = iter(task.distributed_train_dataset()), iter(task.distributed_validation_dataset())
    expected = {"mnas_soft": lambda t: 0.5 * (t / 30) ** -0.5,
                "mnas_hard": lambda t: 0.5 * (30 / t if t > 30 else 1.0),
                "absolute": lambda t: 0.5 - 0.10 * abs(t / 30 - 1)}
    for updates, (kind, formula) in enumerate(expected.items(), start=1):
        config.search.reward = kind
        step = loop.search_step(train, validation)   # one replica: one architecture per step
        assert step["quality"] == 0.5
        assert step["reward"] == pytest.approx(formula(step["cost_ms"]), rel=1e-9)
        assert int(loop.controller.updates.numpy()) == updates and step["capacity"] == 0.0
    # search.capacity_weight: Q + weight x ln(the sampled architecture's trainable parameters in millions).
    config.search.capacity_weight = 0.05
    (sample,), _, _ = loop._sample(loop.step)
    step = loop.search_step(train, validation)
    arch = task.space.to_arch_spec(sample)
    standalone = SSDLiteDetector(arch, num_classes=config.model.num_classes, input_size=config.model.input_size,
                                 depth_multiplier=config.model.depth_multiplier).model
    capacity = 0.05 * np.log(sum(w.shape.num_elements() for w in standalone.trainable_weights) / 1e6)
    assert step["capacity"] == pytest.approx(capacity, rel=1e-9)
    assert step["reward"] == pytest.approx(0.5 + capacity - 0.10 * abs(step["cost_ms"] / 30 - 1), rel=1e-9)
    config.search.reward = "mnas_soft"   # a multiplied Q must stay positive: refused
    with pytest.raises(ValueError, match="capacity_weight .* use it with search.reward=absolute"):
        tunas.SearchLoop(task, CostModel.load(cost_model_path), str(tmp_path / "other"))


def _model_weights(checkpoint_path):
    """The supernet's weights in a checkpoint; BatchNorm moving statistics left out: the supernet always
    normalises with batch statistics, so the head's, which move on every call, are never read."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    names = [n for n in reader.get_variable_to_shape_map()
             if n.startswith("model/") and "OPTIMIZER" not in n and "/moving_" not in n]
    return {n: reader.get_tensor(n) for n in names}


def test_controller_steps_search_on_the_frozen_supernet_and_resume(tiny_data_dir, space_path, cost_model_path,
                                                                    tmp_path):
    # rl_delay 1: the shared weights train on uniformly drawn paths and the controller does not learn;
    # then the controller alone learns on the frozen supernet for search.controller_steps steps.
    model_dir = str(tmp_path / "search")

    def loop_of(controller_steps):
        config = load_config(str(search_config(tmp_path, 4, space_path, rl_delay=1, warmup=0, rl_learning_rate=2)),
                             [f"search.cost_model={cost_model_path}", "search.target_ms=30",
                              f"search.controller_steps={controller_steps}"])
        return tunas.SearchLoop(SearchTask(config, tf.distribute.get_strategy()), CostModel.load(cost_model_path),
                                model_dir)

    result = loop_of(4).run()
    shared = os.path.join(model_dir, "ckpt-4")
    logits, _, updates = checkpoint_controller(shared)
    assert updates == 0 and all(np.abs(l).max() == 0 for l in logits)   # nothing learned before
    logits, _, updates = checkpoint_controller(os.path.join(model_dir, "ckpt-8"))
    assert updates == 4 and any(np.abs(l).max() > 0 for l in logits)
    before, after = _model_weights(shared), _model_weights(os.path.join(model_dir, "ckpt-8"))
    assert before and before.keys() == after.keys()
    assert all(np.array_equal(before[n], after[n]) for n in before)      # the supernet stayed frozen
    record = json.loads(open(result.json_path).read())
    assert record["step"] == 4 and record["controller_steps"] == 4

    # Resumed with more controller steps: it goes on from ckpt-8 with the controller's state.
    resumed = loop_of(6)
    resumed.run()
    assert resumed.progress == 10 and int(resumed.controller.updates.numpy()) == 6
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-10")


def test_the_sandwich_rule_takes_the_paths_of_most_and_fewest_parameters(space_path):
    from mobiledets_tf.search.sandwich import extreme_architecture
    from mobiledets_tf.search.supernet import Supernet
    # The small space's supernet: every one of its 256 architectures counted.
    space = load_space(space_path, "edgetpu")
    supernet = Supernet(space, 2, 64)
    counts = [supernet.parameter_count(list(ix)) for ix in itertools.product(*(range(len(d.choices))
                                                                                for d in space.decisions))]
    num_choices = [len(d.choices) for d in space.decisions]
    assert supernet.parameter_count(extreme_architecture(num_choices, supernet.parameter_count, True)) == max(counts)
    assert supernet.parameter_count(extreme_architecture(num_choices, supernet.parameter_count, False)) == min(counts)


def test_search_step_benchmark_times_the_path_of_most_multiply_adds(space_path):
    """benchmarks/search_step.py's largest architecture, by the sandwich rule's coordinate ascent on the
    backbone's multiply-adds, against every architecture of the small space counted."""
    from mobiledets_tf.stats import model_stats
    step = _benchmark("search_step")
    space = load_space(space_path, "edgetpu")
    everything = list(itertools.product(*(range(len(d.choices)) for d in space.decisions)))
    madds = [step.backbone_madds(space, list(ix), 64, 1.0) for ix in everything]
    largest = step.largest_indices(space, 64, 1.0)
    assert step.backbone_madds(space, largest, 64, 1.0) == max(madds) > min(madds)
    # The walk's sum is the standalone backbone's count.
    detector = SSDLiteDetector(space.to_arch_spec(largest), num_classes=2, input_size=64, depth_multiplier=1.0)
    assert max(madds) == model_stats(detector.float_model)["backbone"]["madds"]


def test_in_place_distillation_pulls_a_path_toward_the_largest_and_no_further():
    from mobiledets_tf.search.sandwich import distillation_losses
    rng = np.random.default_rng(0)
    boxes, logits = (tf.constant(rng.normal(size=(2, 6, k)), tf.float32) for k in (4, 3))
    positives = tf.constant([[1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1]], tf.float32)
    same = distillation_losses((boxes, logits), (boxes, logits), positives, 3.0)
    assert abs(float(same["classification"])) < 1e-6 and float(same["localization"]) == 0.0
    student_boxes, student_logits = tf.Variable(boxes + 0.5), tf.Variable(logits - 1.0)
    teacher = (tf.Variable(boxes), tf.Variable(logits))
    with tf.GradientTape() as tape:
        losses = distillation_losses((student_boxes, student_logits), teacher, positives, 3.0)
        total = losses["classification"] + losses["localization"]
    assert float(losses["classification"]) > 0 and float(losses["localization"]) > 0
    gradients = tape.gradient(total, [student_boxes, student_logits, *teacher])
    assert gradients[2] is None and gradients[3] is None            # the teacher only gives targets
    # Boxes are pulled only on the positive anchors; every class logit toward the teacher's.
    box_moved = np.abs(gradients[0].numpy()).sum(-1) > 0
    assert np.array_equal(box_moved, positives.numpy() > 0)
    assert np.all(gradients[1].numpy() < 0)   # each logit sits below the teacher's: descent raises it


def test_a_sandwich_search_step_runs_the_largest_smallest_and_sampled_paths(tiny_data_dir, space_path,
                                                                            cost_model_path, tmp_path):
    config = load_config(str(search_config(tmp_path, 2, space_path, rl_delay=0, warmup=0, sandwich="true")),
                         [f"search.cost_model={cost_model_path}", "search.target_ms=30"])
    task = SearchTask(config, tf.distribute.get_strategy())
    largest, smallest = task.extreme_architecture(True), task.extreme_architecture(False)
    assert task.detector.parameter_count(largest) > task.detector.parameter_count(smallest)
    loop = tunas.SearchLoop(task, CostModel.load(cost_model_path), str(tmp_path / "search"))
    step = task.train_step_fn()
    ran, teacher, student = [], step._teacher, step._student

    def recording_teacher(images, targets, choices):
        gradients, losses = teacher(images, targets, choices)
        ran.append(("teacher", list(choices.numpy()), losses["predictions"]))
        return gradients, losses

    def recording_student(images, targets, choices, teacher_predictions):
        ran.append(("student", list(choices.numpy()), teacher_predictions))
        return student(images, targets, choices, teacher_predictions)

    step._teacher, step._student = recording_teacher, recording_student
    samples, runs, _ = loop._sample(0)
    before = [v.numpy() for v in task.model.trainable_variables]
    losses = step(next(iter(task.distributed_train_dataset())), task.per_replica_choices(runs))
    # The largest path first (the teacher), then the smallest and the sampled one, both learning from it.
    assert [(role, choices) for role, choices, _ in ran] == [("teacher", largest), ("student", smallest),
                                                             ("student", runs[0])]
    assert all(predictions is ran[0][2] for _, _, predictions in ran)
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert float(losses["total_loss"]) == pytest.approx(sum(float(losses[k]) for k in
                                                            ("classification_loss", "localization_loss",
                                                             "regularization_loss")), rel=1e-5)
    after = [v.numpy() for v in task.model.trainable_variables]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))
    loop.run()   # and the search goes on from there to its end
    assert loop.step == 2


def _latest_step(model_dir) -> int:
    latest = tf.train.latest_checkpoint(str(model_dir)) if model_dir.exists() else None
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_sigkill_resumes_with_the_controller_intact(tiny_data_dir, space_path, cost_model_path, tmp_path):
    model_dir = tmp_path / "search"
    config = search_config(tmp_path, 40, space_path, rl_delay=0.1, warmup=0.1, rl_learning_rate=0.5)
    command = [sys.executable, "-m", "mobiledets_tf.bin.search", f"--config={config}", f"--model_dir={model_dir}",
               f"--cost_model={cost_model_path}", "--target_ms=30"]
    log = tmp_path / "killed_search.log"  # a file, not a pipe that nobody reads while it fills
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + 600
        # Waits on the checkpoint state file, which is written after a checkpoint's files: a kill
        # between the two leaves the previous checkpoint as the latest.
        while time.time() < deadline and _latest_step(model_dir) < 12:
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
    latest = tf.train.latest_checkpoint(str(model_dir))
    step = int(latest.rsplit("-", 1)[1])
    assert 12 <= step < 40
    logits, baseline, updates = checkpoint_controller(latest)
    assert updates > 0 and any(np.abs(l).max() > 0 for l in logits)

    resumed = run_binary("search", f"--config={config}", f"--model_dir={model_dir}",
                         f"--cost_model={cost_model_path}", "--target_ms=30")
    line = next(l for l in resumed.stderr.splitlines() if "Resumed the search from" in l)
    assert f"ckpt-{step} at step {step}: controller after {updates} updates" in line
    restored_baseline = baseline / (1 - 0.95 ** updates)
    assert f"baseline {restored_baseline}" in line
    assert str([np.round(l, 4).tolist() for l in logits]) in line
    assert json.loads((model_dir / "searched_arch.json").read_text())["step"] == 40


def test_bad_input_is_named(tiny_data_dir, space_path, cost_model_path, tmp_path):
    config = search_config(tmp_path, 2, space_path)
    no_model = run_binary("search", f"--config={config}", f"--model_dir={tmp_path / 's'}", check=False)
    assert no_model.returncode != 0 and "give --cost_model=FILE" in no_model.stderr
    no_target = run_binary("search", f"--config={config}", f"--model_dir={tmp_path / 's'}",
                           f"--cost_model={cost_model_path}", check=False)
    assert no_target.returncode != 0 and "search.target_ms must be a positive latency" in no_target.stderr
    other_space = run_binary("search", f"--config={config}", f"--model_dir={tmp_path / 's'}",
                             "--space=ibn_fused_tucker", "--platform=cpu", f"--cost_model={cost_model_path}",
                             "--target_ms=20", check=False)
    assert other_space.returncode != 0 and "does not know" in other_space.stderr
    bad_metric = run_binary("search", f"--config={config}", f"--model_dir={tmp_path / 's'}",
                            f"--cost_model={cost_model_path}", "--target_ms=20",
                            "--override=search.quality_metric=mAP", check=False)
    assert bad_metric.returncode != 0 and "search.quality_metric must be one of" in bad_metric.stderr
    assert not os.path.exists(tmp_path / "s" / "searched_arch.yaml")


def test_result_names_carry_the_target():
    space = load_space("ibn_fused_tucker", "cpu")
    assert architecture_name("searched", space, 20.0) == "searched_ibn_fused_tucker_cpu_20ms"
    assert architecture_name("random", space, 12.5) == "random_ibn_fused_tucker_cpu_12p5ms"
    assert architecture_name("searched", space, 12.34567) == "searched_ibn_fused_tucker_cpu_12p35ms"


def test_random_baseline_samples_near_the_target(tiny_data_dir, space_path, cost_model_path, tmp_path):
    cost, space = CostModel.load(cost_model_path), load_space(space_path, "edgetpu")
    uniform = [np.full(len(d.choices), 1 / len(d.choices)) for d in space.decisions]
    target = cost.expected(space, uniform)
    out = tmp_path / "random"
    run = run_binary("search", f"--config={search_config(tmp_path, 2, space_path)}", f"--model_dir={out}",
                     f"--cost_model={cost_model_path}", f"--target_ms={target}", "--random_baseline=3",
                     "--random_band=0.1")
    record = json.loads((out / "random_archs.json").read_text())
    assert len(record["architectures"]) == 3 and run.stdout.count("predicted") == 3
    seen = set()
    for k, entry in enumerate(record["architectures"]):
        arch = load_arch(str(out / f"random_arch_{k}.yaml"))
        assert arch.name == f"{architecture_name('random', space, target)}_{k}"
        indices = space.indices_of(arch)
        assert indices == entry["indices"] and tuple(indices) not in seen
        seen.add(tuple(indices))
        assert entry["predicted_ms"] == pytest.approx(cost.predict(space, indices))
        assert abs(entry["predicted_ms"] / target - 1) <= 0.1
    impossible = run_binary("search", f"--config={search_config(tmp_path, 2, space_path)}", f"--model_dir={out}",
                            f"--cost_model={cost_model_path}", "--target_ms=0.5", "--random_baseline=3", check=False)
    assert impossible.returncode != 0 and "are predicted within 5% of 0.5 ms" in impossible.stderr


def _benchmark(name):
    """benchmarks/{name}.py as a module (its flags parsed by the caller). The benchmarks share flag
    names, so the flags any benchmark loaded before registered are dropped first."""
    import importlib.util

    from absl import flags
    benchmarks = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    scripts = {os.path.splitext(f)[0] for f in os.listdir(benchmarks) if f.endswith(".py")}
    loaded = [flag.name for module, module_flags in flags.FLAGS.flags_by_module_dict().items() if module in scripts
              for flag in module_flags]
    for flag_name in set(loaded):
        delattr(flags.FLAGS, flag_name)
    sys.path.insert(0, benchmarks)
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(benchmarks, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(benchmarks)
    return module


def test_pinned_jobs_queue_what_waits_for_a_job_once_it_has_succeeded(tmp_path):
    """run_pinned's `then`: a job's followers run after it (a search's trainings as soon as it ends), each
    job on one CPU; a failure stops the run and names its log."""
    pinned = _benchmark("pinned_jobs")
    done = tmp_path / "done.txt"

    def job(name: str, seconds: float = 0.0):
        return str(tmp_path / f"{name}.log"), ["bash", "-c", f"sleep {seconds}; taskset -p $$ | tail -c 3 > "
                                                             f"{tmp_path / name}.cpu; echo {name} >> {done}"]

    followers = {str(tmp_path / "search_a.log"): [job("train_a0"), job("train_a1")],
                 str(tmp_path / "search_b.log"): [job("train_b0")]}
    pinned.run_pinned([job("search_a", 0.2), job("search_b", 1.0)], 1,
                      then=lambda finished: followers.pop(finished[0], []), poll_seconds=0.05)
    order = done.read_text().split()
    assert sorted(order) == ["search_a", "search_b", "train_a0", "train_a1", "train_b0"] and not followers
    assert order.index("train_a0") > order.index("search_a") and order.index("train_b0") > order.index("search_b")
    assert {(tmp_path / f"{name}.cpu").read_text().strip() for name in order} == {
        format(1 << min(os.sched_getaffinity(0)), "x")}   # --jobs 1: every job pinned to the first CPU
    with pytest.raises(SystemExit, match="failed \\(exit 3\\); see .*broken.log"):
        pinned.run_pinned([(str(tmp_path / "broken.log"), ["bash", "-c", "exit 3"])], 1,
                          then=lambda finished: [job("never")], poll_seconds=0.05)
    assert "never" not in done.read_text()


def test_supernet_ranking_scores_architectures_near_the_target_and_reports_tau(
        tiny_data_dir, space_path, cost_model_path, tmp_path):
    from absl import flags
    from scipy import stats

    from mobiledets_tf.config import save_config
    ranking = _benchmark("supernet_ranking")
    cost, space = CostModel.load(cost_model_path), load_space(space_path, "edgetpu")
    target = cost.expected(space, [np.full(len(d.choices), 1 / len(d.choices)) for d in space.decisions])
    work = tmp_path / "ranking"
    flags.FLAGS(["supernet_ranking", f"--work_dir={work}", f"--target_ms={target}", "--band=0.2",
                 "--num_archs=3", "--quality_batches=2", "--standalone_seeds=0,1"])
    # What stage 1 leaves: the search's config and a supernet checkpoint (here untrained).
    config = load_config(str(search_config(tmp_path, 2, space_path)), [f"search.cost_model={cost_model_path}"])
    task = SearchTask(config, tf.distribute.get_strategy())
    task.detect_fn()(next(iter(task.distributed_validation_dataset()))[0], tf.constant(space.sample(0), tf.int32))
    supernet = work / "supernet"
    tf.train.Checkpoint(model=task.model).save(str(supernet / "ckpt"))
    save_config(config, str(supernet / "config.yaml"))

    config = ranking.supernet_config()
    archs = ranking.architectures(str(work), config)
    assert len(archs) == 3 and len({tuple(a["indices"]) for a in archs}) == 3
    for arch in archs:
        assert space.indices_of(load_arch(arch["arch"])) == arch["indices"]
        assert abs(cost.predict(space, arch["indices"]) / target - 1) <= 0.2
    ranking.claim_standalone_root(str(work), archs)
    ranking.claim_standalone_root(str(work), archs)   # the same architectures and recipe: shared
    other = [{**archs[0], "indices": archs[1]["indices"]}]
    with pytest.raises(SystemExit, match=f"{archs[0]['name']} name other architectures"):
        ranking.claim_standalone_root(str(work), other)
    scores = ranking.one_shot_scores(str(work), config, archs)
    for arch in archs:
        assert set(scores[arch["name"]]) == set(ranking.MEASURES)
        quality = {k: v for k, v in scores[arch["name"]].items() if k != "validation_loss"}
        assert all(0.0 <= v <= 1.0 for v in quality.values())
        assert -1e3 < scores[arch["name"]]["validation_loss"] < 0.0
    assert ranking.one_shot_scores(str(work), config, archs) == scores   # resumed from oneshot.json
    with open(work / "oneshot.json") as f:
        stored = json.load(f)
    del stored[archs[0]["name"]]["validation_loss"]
    stored[archs[1]["name"]]["pooled_quality"] = 0.123
    with open(work / "oneshot.json", "w") as f:
        json.dump(stored, f)
    # A measure missing: computed again, the recorded scores of the same checkpoint kept.
    again = ranking.one_shot_scores(str(work), config, archs)
    assert again[archs[1]["name"]].pop("pooled_quality") == 0.123
    assert again == {**scores, archs[1]["name"]: {k: v for k, v in scores[archs[1]["name"]].items()
                                                  if k != "pooled_quality"}}
    with open(work / "oneshot.json", "w") as f:
        json.dump(scores, f)
    # --finetune_steps: each architecture's detector from the supernet's weights, written where its short
    # training starts from, restores into the standalone detector the recalibrated measure scores.
    flags.FLAGS.finetune_steps = 5
    try:
        jobs = ranking.finetune_jobs(str(work), archs, ["0", "1"])
    finally:
        flags.FLAGS.finetune_steps = 0
    from mobiledets_tf.search.supernet import standalone_from_supernet
    restored, _ = ranking.restored_search_task(str(work), config, archs[0]["indices"])
    calibration = ranking.calibration_images(restored, ranking.CALIBRATION_IMAGES.value)
    images = tf.random.stateless_uniform((2, config.model.input_size, config.model.input_size, 3), (1, 2), -1, 1)
    for arch, (log_path, command) in zip(archs, jobs):
        prefix = ranking.inherited_prefix(str(work), arch["name"])
        assert f"train.init_checkpoint={prefix}" in command[-1] and "train.steps=5" in command[-1]
        assert log_path.startswith(os.path.join(str(work), "finetune5", f"{arch['name']}_seed3"))
        expected_detector = standalone_from_supernet(restored.detector, arch["indices"], calibration_images=calibration)
        inherited = SSDLiteDetector(load_arch(arch["arch"]), num_classes=config.model.num_classes,
                                    input_size=config.model.input_size, depth_multiplier=config.model.depth_multiplier,
                                    float_checkpoint=prefix)
        for got, want in zip(inherited.float_model(images, training=False),
                             expected_detector.float_model(images, training=False)):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    # Stage 4's results (standalone AP50 per seed), then the report.
    ap50 = {}
    for k, arch in enumerate(archs):
        for seed in ("0", "1"):
            model_dir = ranking.standalone_dir(str(work), arch["name"], seed)
            os.makedirs(os.path.join(model_dir, "eval"))
            ap50[arch["name"], seed] = 0.1 * (k + 1) + (0.01 * k if seed == "1" else 0.0)
            with open(os.path.join(model_dir, "eval", "metrics.json"), "w") as f:
                json.dump({"AP50": ap50[arch["name"], seed]}, f)
    parameters = ranking.parameter_counts(config, archs)
    for arch in archs:   # the trainable weights of the standalone detector standalone training builds
        detector = SSDLiteDetector(load_arch(arch["arch"]), num_classes=config.model.num_classes,
                                   input_size=config.model.input_size, depth_multiplier=config.model.depth_multiplier)
        model = detector.float_model
        assert parameters[arch["name"]] == pytest.approx(
            (model.count_params() - sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)) / 1e6)
    text = ranking.report(ranking.trained_ground_truth(str(work), archs), archs, scores, parameters, 1.0)
    shipped = [scores[a["name"]][ranking.SHIPPED_MEASURE] for a in archs]
    mean_ap50 = [(ap50[a["name"], "0"] + ap50[a["name"], "1"]) / 2 for a in archs]
    expected = stats.kendalltau(shipped, mean_ap50).statistic
    assert text.rstrip().splitlines()[-1] == f"Kendall tau (shipped defaults): {expected:.3f}"
    assert "| standalone seed 0 vs seed 1 (the ceiling) | 1.000 |" in text
    per_seed = np.mean([stats.kendalltau(shipped, [ap50[a["name"], s] for a in archs]).statistic for s in ("0", "1")])
    rho = stats.spearmanr(shipped, mean_ap50).statistic
    assert f"| {ranking.SHIPPED_MEASURE} (shipped) | {expected:.3f} | {rho:.3f} | {per_seed:.3f} |" in text
    counted = [parameters[a["name"]] for a in archs]
    # A supernet searched with search.capacity_weight: its search measure is Q + w ln(parameters).
    weighted = ranking.report(ranking.trained_ground_truth(str(work), archs), archs, scores, parameters, 1.0, 0.1)
    with_capacity = [q + 0.1 * np.log(p) for q, p in zip(shipped, counted)]
    assert weighted.rstrip().splitlines()[-1].endswith(f": {stats.kendalltau(with_capacity, mean_ap50).statistic:.3f}")
    assert "| minibatch_quality + capacity (the search's Q, w 0.1) | " in weighted
    assert f" | {with_capacity[0]:.4f} | " in weighted.split(archs[0]["name"], 1)[1].splitlines()[0]
    assert (f"| parameters (zero-cost reference: millions of trainable weights, no supernet) | "
            f"{stats.kendalltau(counted, mean_ap50).statistic:.3f} | {stats.spearmanr(counted, mean_ap50).statistic:.3f} |"
            in text)
    flags.FLAGS.search_override = ["train.steps=2"]   # not the shipped search: not called shipped defaults
    try:
        text = ranking.report(ranking.trained_ground_truth(str(work), archs), archs, scores, parameters, 1.0)
    finally:
        flags.FLAGS.search_override = []
    assert text.rstrip().splitlines()[-1] == f"Kendall tau (the search measure of this supernet): {expected:.3f}"
    assert "against the mean of the others" not in text   # two seeds: that is the seed-to-seed line
    # The short trainings' AP50, each a column and a ranking row.
    finetuned = {a["name"]: 0.05 * (3 - k) for k, a in enumerate(archs)}
    text = ranking.report(ranking.trained_ground_truth(str(work), archs), archs, scores, parameters, 1.0,
                          references={ranking.FINETUNED: ("finetuned (label)", finetuned)})
    assert ranking.FINETUNED + " | standalone AP50 seed 0 |" in text
    assert f" | {finetuned[archs[0]['name']]:.4f} | " in text.split(archs[0]["name"] + " |", 1)[1].splitlines()[0]
    assert f"| finetuned (label) | {stats.kendalltau(list(finetuned.values()), mean_ap50).statistic:.3f} |" in text
    # A third seed that ranks the architectures otherwise: each seed against the mean of the other two.
    for k, arch in enumerate(archs):
        model_dir = ranking.standalone_dir(str(work), arch["name"], "2")
        os.makedirs(os.path.join(model_dir, "eval"))
        ap50[arch["name"], "2"] = [0.3, 0.1, 0.2][k]
        with open(os.path.join(model_dir, "eval", "metrics.json"), "w") as f:
            json.dump({"AP50": ap50[arch["name"], "2"]}, f)
    flags.FLAGS.standalone_seeds = ["0", "1", "2"]
    text = ranking.report(ranking.trained_ground_truth(str(work), archs), archs, scores, parameters, 1.0)
    held_out = [stats.kendalltau([ap50[a["name"], s] for a in archs],
                                 [np.mean([ap50[a["name"], o] for o in "012" if o != s]) for a in archs]).statistic
                for s in "012"]
    assert f"| standalone: each seed against the mean of the others (mean over seeds) | {np.mean(held_out):.3f} |" in text
    ceiling = ranking.ground_truth_ceiling([[ap50[a["name"], s] for s in "012"] for a in archs])
    assert (f"one training's by {ceiling.noise:.3f} around it" in text and
            f"noise-free measure at Kendall tau {ceiling.tau_mean:.2f} against the mean of 3 seeds" in text)
    # --ground_truth_only: the same standalone rows, ceiling and zero-cost reference, no one-shot measure
    # nor a tau claimed for one.
    alone = ranking.report(ranking.trained_ground_truth(str(work), archs), archs, None, parameters, 1.0)
    assert "ground truth:" in alone and "pairwise, mean of 3 (the ceiling) |" in alone
    assert not any(measure in alone for measure in ranking.MEASURES) and "Kendall tau (" not in alone
    name = archs[0]["name"]
    assert f"| {name} | {archs[0]['predicted_ms']:.2f} | {parameters[name]:.4f} | {ap50[name, '0']:.3f} |" in alone
    assert "| parameters (zero-cost reference" in alone
    # --standalone_results: a report's AP50 columns read back are the ground truth of another supernet's report.
    recorded_path = tmp_path / "recorded.md"
    recorded_path.write_text(text)
    recorded = ranking.recorded_ground_truth(str(recorded_path), archs)
    assert recorded.seeds == ["0", "1", "2"] and f"the AP50 columns of `{recorded_path}`" in recorded.recipe
    assert recorded.ap50 == {a["name"]: [round(ap50[a["name"], s], 3) for s in "012"] for a in archs}
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert [line for line in ranking.report(recorded, archs, scores, parameters, 1.0).splitlines()
            if line.startswith("|")] == table
    assert ranking.read_ranking_table(str(recorded_path)).rows[name].scores["parameters"] == round(parameters[name], 4)
    moved = [{**archs[0], "predicted_ms": archs[0]["predicted_ms"] + 0.1}]
    with pytest.raises(SystemExit, match=f"{archs[0]['name']} .* is predicted at .* there: it holds other"):
        ranking.recorded_ground_truth(str(recorded_path), moved)
    # --proxy_steps: each architecture trained from scratch that long under a seed none of the ground
    # truth's, its AP50 ranked as a second reference.
    assert ranking.proxy_jobs(str(work), archs, recorded.seeds) == []
    flags.FLAGS.proxy_steps = 30
    try:
        jobs = ranking.proxy_jobs(str(work), archs, recorded.seeds)
        first_dir = ranking.proxy_dir(str(work), name)
        with pytest.raises(SystemExit, match="--proxy_seed=3 is a seed of the ground truth"):
            ranking.proxy_jobs(str(work), archs, ["0", "3"])
        proxy = {a["name"]: ap for a, ap in zip(archs, [0.05, 0.01, 0.03])}
        with_proxy = ranking.report(recorded, archs, None, parameters, 1.0,
                                    references={ranking.PROXY: (ranking.proxy_label(), proxy)})
    finally:
        flags.FLAGS.proxy_steps = 0
    assert len(jobs) == 3
    script = jobs[0][1][-1]
    assert first_dir.endswith(os.path.join("standalone", "proxy30", f"{name}_seed3"))
    assert f"--model_dir={first_dir} " in script and f"archs/{name}.yaml" in script
    assert script.split("--override=")[1].split()[0].endswith(
        "train.steps=30,train.warmup_steps=3,train.checkpoint_every=30,train.seed=3")
    recorded_mean = [np.mean(recorded.ap50[a["name"]]) for a in archs]
    tau = stats.kendalltau(list(proxy.values()), recorded_mean).statistic
    assert (f"| proxy (reference: AP50 after 30 standalone steps from scratch, seed 3, no supernet) | {tau:.3f} |"
            in with_proxy)
    assert f"| {name} | {archs[0]['predicted_ms']:.2f} | {parameters[name]:.4f} | 0.0500 | {ap50[name, '0']:.3f} |" in with_proxy
    with pytest.raises(SystemExit, match="no architecture table"):
        ranking.recorded_ground_truth(str(tmp_path / "ranking" / "oneshot.json"), archs)


def test_ground_truth_ceiling_matches_simulated_trainings():
    """The ceiling's bivariate-normal estimate against trainings simulated by its own model, and its limits."""
    from scipy import stats
    ranking = _benchmark("supernet_ranking")
    rng = np.random.default_rng(0)
    true_ap50 = 0.6 + 0.05 * rng.standard_normal(4000)
    ap50 = true_ap50[:, None] + 0.04 * rng.standard_normal((4000, 3))   # [architecture][seed]
    ceiling = ranking.ground_truth_ceiling(ap50.tolist())
    assert ceiling.spread == pytest.approx(0.05, abs=0.003) and ceiling.noise == pytest.approx(0.04, abs=0.002)
    assert ceiling.tau_mean == pytest.approx(stats.kendalltau(true_ap50, ap50.mean(axis=1)).statistic, abs=0.02)
    assert ceiling.tau_seed_pair == pytest.approx(stats.kendalltau(ap50[:, 0], ap50[:, 1]).statistic, abs=0.02)
    assert ceiling.seed_offset == pytest.approx(0.0, abs=0.003)
    # Each seed moving every architecture alike (one data order per seed) ranks nothing: it is set apart.
    offsets = np.array([0.0, 0.06, -0.05])
    shifted = ranking.ground_truth_ceiling((ap50 + offsets).tolist())
    assert shifted.noise == pytest.approx(ceiling.noise, rel=1e-9) and shifted.spread == pytest.approx(ceiling.spread)
    assert shifted.tau_mean == pytest.approx(ceiling.tau_mean) and shifted.seed_offset == pytest.approx(0.0551, abs=0.002)
    exact = ranking.ground_truth_ceiling([[0.5, 0.5], [0.6, 0.6], [0.7, 0.7]])   # seeds agree exactly
    assert exact.tau_mean == exact.tau_seed_pair == 1.0 and exact.noise == 0.0
    offset_only = ranking.ground_truth_ceiling([[0.5, 0.55], [0.6, 0.65], [0.7, 0.75]])   # one seed higher throughout
    assert offset_only.tau_mean == offset_only.tau_seed_pair == 1.0 and offset_only.noise == pytest.approx(0.0, abs=1e-9)
    alike = ranking.ground_truth_ceiling([[0.5, 0.6], [0.6, 0.5], [0.55, 0.55]])   # one quality, noise only
    assert alike.spread == 0.0 and alike.tau_mean == alike.tau_seed_pair == 0.0


def test_selection_power_simulates_best_of_n_searches_against_the_random_group(tmp_path):
    """The simulation's searches against order statistics of the normal, its tau-to-correlation
    conversion against the ground truth's ceiling, and its refusal of reports of other recipes."""
    power = _benchmark("selection_power")
    rng = np.random.default_rng(0)
    ceiling = power.Ceiling(spread=0.05, noise=0.04, seed_offset=0.0, tau_mean=0.0, tau_seed_pair=0.0)
    simulate = lambda correlation, n, threshold=0.6: power.simulate(  # noqa: E731
        ceiling, 0.6, 3, correlation, n, 3, 6, threshold, 20000, rng)
    assert simulate(1.0, 1).found_ap50 == pytest.approx(0.6, abs=0.002)      # one candidate: nothing chosen
    assert simulate(0.0, 100).found_ap50 == pytest.approx(0.6, abs=0.002)    # a signal of chance chooses nothing
    # A perfect signal finds the best of 100: the expected maximum of 100 standard normals is 2.5076.
    assert simulate(1.0, 100).found_ap50 == pytest.approx(0.6 + 0.05 * 2.5076, abs=0.002)
    assert simulate(0.5, 100).found_ap50 == pytest.approx(0.6 + 0.5 * 0.05 * 2.5076, abs=0.002)
    assert simulate(1.0, 100, threshold=0.5).pass_recorded == 1.0 and simulate(1.0, 100, threshold=0.9).pass_recorded == 0
    fresh = [simulate(c, 30).pass_fresh for c in (0.0, 0.5, 1.0)]
    assert fresh == sorted(fresh) and fresh[0] < 0.3 < 0.8 < fresh[2]
    # Kendall tau against the mean of the seeds: a noise-free measure's tau there (the ceiling) is a
    # correlation of 1 with the true AP50; beyond it no signal can rank.
    from scipy import stats
    true = 0.6 + 0.05 * rng.standard_normal(20000)
    mean_of_seeds = true + 0.04 / np.sqrt(3) * rng.standard_normal(20000)
    tau_ceiling = stats.kendalltau(true[:4000], mean_of_seeds[:4000]).statistic
    ceiling = ceiling._replace(tau_mean=tau_ceiling)
    assert power.signal_correlation(tau_ceiling, ceiling, 3) == pytest.approx(1.0, abs=0.03)
    assert power.signal_correlation(0.0, ceiling, 3) == 0.0 and power.signal_correlation(0.95, ceiling, 3) is None
    half = 0.5 * true + np.sqrt(0.75) * 0.05 * rng.standard_normal(20000)   # correlation 0.5 with the truth
    tau_half = stats.kendalltau(half[:4000], mean_of_seeds[:4000]).statistic
    assert power.signal_correlation(tau_half, ceiling, 3) == pytest.approx(0.5, abs=0.04)

    results = os.path.join(os.path.dirname(power.__file__), "results")
    text = power.report([os.path.join(results, "supernet_ranking.md")], os.path.join(results, "searched_vs_random.md"),
                        [0.2], [5], searches=3, trials=200, seed=0)
    assert "| 0.20 |" in text and "(the ceiling) | 1.00 |" in text and "threshold 0.673" in text
    assert "ground truth: 14 architectures" in text   # 10 + 6, two of them the same architectures
    other = tmp_path / "other.md"
    with open(os.path.join(results, "supernet_ranking.md")) as f:
        other.write_text(f.read().replace("train.steps=2000", "train.steps=1000"))
    with pytest.raises(SystemExit, match="different recipes or seeds"):
        power.pooled_ground_truth([str(other)], os.path.join(results, "searched_vs_random.md"))


def test_reward_comparison_scores_each_architecture_by_its_mean_over_the_standalone_seeds(tmp_path):
    import statistics

    from absl import flags
    comparison = _benchmark("reward_comparison")
    work = str(tmp_path / "comparison")
    flags.FLAGS(["reward_comparison", f"--work_dir={work}", "--target_ms=20", "--rewards=absolute", "--seeds=0,1",
                 "--num_random=3", "--standalone_seeds=0,1"])
    keys = {**{comparison.run_key("absolute", s): ("absolute", s) for s in ("0", "1")},
            **{f"random_0{k}": ("random", f"0{k}") for k in range(3)}}
    os.makedirs(os.path.join(work, "archs"))
    for key in keys:
        with open(os.path.join(work, "archs", f"{key}.yaml"), "w") as f:
            f.write(f"name: {key}\n")
    ap50 = dict(zip(keys, [(0.70, 0.74), (0.66, 0.70), (0.50, 0.60), (0.60, 0.62), (0.55, 0.57)]))

    def evaluated(seed):
        for key, per_seed in ap50.items():
            model_dir = comparison.standalone_dir(work, key, seed)
            os.makedirs(os.path.join(model_dir, "eval"))
            with open(os.path.join(model_dir, "eval", "metrics.json"), "w") as f:
                json.dump({"AP50": per_seed[int(seed)]}, f)

    evaluated("0")   # every architecture's first seed done: the second seed's trainings are left, seeded
    jobs = comparison.standalone_jobs(work, keys)
    assert [log for log, _ in jobs] == [os.path.join(comparison.standalone_dir(work, key, "1"), "standalone.log")
                                        for key in keys]
    assert all("train.seed=1" in command[-1] and f"--arch={work}/archs/" in command[-1] for _, command in jobs)
    evaluated("1")
    assert comparison.standalone_jobs(work, keys) == []
    measured = [{"arch": key, "predicted_ms": 20.0, "measured_ms": 20.0} for key in keys]
    text = comparison.report(keys, measured, {key: comparison.ap50_per_seed(work, key) for key in keys}, 1.0)
    assert "| absolute | 0 | 20.00 | 20.00 | +0.0% | 0.720 | 0.700 / 0.740 |" in text
    assert "| random | 00 | 20.00 | 20.00 | +0.0% | 0.550 | 0.500 / 0.600 |" in text
    searched, random = [0.72, 0.68], [0.55, 0.61, 0.56]
    margin, spread = statistics.mean(searched) - statistics.mean(random), statistics.stdev(random)
    assert (f"| absolute | 0.0% | {statistics.mean(searched):.3f} +- {statistics.stdev(searched):.3f} | "
            f"{margin:+.3f} vs {spread:.3f}: yes |") in text
    assert f"| random | 0.0% | {statistics.mean(random):.3f} +- {spread:.3f} |  |" in text
    noise = np.sqrt(np.mean([np.var(pair, ddof=1) for pair in ap50.values()]))   # root mean square over the architectures
    assert f"a standard deviation of {noise:.3f} over the seeds" in text
    assert "finalist stages" not in text   # the searches ended without one

    # Each search's finalist stage: seed 0 judged 3 finalists by two trainings' loss, seed 1 is a record of
    # the stage before it had a measure (one AP50 each). Seed 0's two-way layout by hand: residual mean
    # square 0.00333 / 2 (noise 0.041), finalist means' variance 0.01083 less 0.00167 / 2 (spread 0.100),
    # tau of the mean 2 / pi * asin(sqrt(0.01 / (0.01 + 0.00167 / 2))) = 0.82.
    losses = [[1.8, 1.9], [1.9, 1.9], [2.0, 2.1]]
    records = {"0": {"measure": "training_loss", "steps": 200, "seeds": 2, "chosen": "finalist_00",
                     "finalists": [{"name": f"finalist_0{k}", "training_loss": float(np.mean(runs)), "ap50": None,
                                    "per_seed": runs} for k, runs in enumerate(losses)]},
               "1": {"steps": 500, "chosen": "finalist_01", "finalists": [
                   {"name": "finalist_00", "ap50": 0.10}, {"name": "finalist_01", "ap50": 0.20},
                   {"name": "finalist_02", "ap50": None}]}}
    for seed, record in records.items():
        folder = comparison.search_dir(work, comparison.run_key("absolute", seed))
        os.makedirs(folder)
        with open(os.path.join(folder, "finalists.json"), "w") as f:
            json.dump(record, f)
    with_finalists = comparison.report(keys, measured, {key: comparison.ap50_per_seed(work, key) for key in keys},
                                       1.0, finalists=comparison.finalist_records(work, keys))
    assert ("| absolute | 0 | 3 of 3 | mean training loss, 200 steps x 2 | finalist_00 | 1.850 | 1.850-2.050 | "
            "0.041 | 0.100 | 0.82 |") in with_finalists
    assert "| absolute | 1 | 2 of 3 | AP50, 500 steps x 1 | finalist_01 | 0.200 | 0.100-0.200 | - | - | - |" in with_finalists

    # --random_results: the random rows read back stand for the random group (same table, nothing trained).
    path = tmp_path / "recorded.md"
    path.write_text(text)
    archs = [{"name": f"random_0{k}", "predicted_ms": 20.0} for k in range(3)]
    recorded = comparison.recorded_random(str(path), archs)
    assert recorded == {f"random_0{k}": list(ap50[f"random_0{k}"]) for k in range(3)}
    searched_ap50 = {key: comparison.ap50_per_seed(work, key) for key in keys if not key.startswith("random")}
    again = comparison.report(keys, measured, {**searched_ap50, **recorded}, 1.0, str(path))
    assert [l for l in again.splitlines() if l.startswith("|")] == [l for l in text.splitlines() if l.startswith("|")]
    assert f"recorded in `{path}`" in again
    with pytest.raises(SystemExit, match="random_01 .* is predicted at 20.00 ms there: it holds other"):
        comparison.recorded_random(str(path), [{**archs[1], "predicted_ms": 20.1}])
    flags.FLAGS.standalone_seeds = ["0", "1", "2"]
    with pytest.raises(SystemExit, match="trained under seeds 0, 1 with standalone overrides"):
        comparison.recorded_random(str(path), archs)


def test_the_committed_searched_vs_random_report_holds_the_random_architectures_drawn_today():
    """benchmarks/results/searched_vs_random.md's random group can stand in (--random_results) for the
    random architectures the shipped search config and cost model draw at its target."""
    from absl import flags
    comparison = _benchmark("reward_comparison")
    results = os.path.join(os.path.dirname(comparison.__file__), "results", "searched_vs_random.md")
    with tempfile.TemporaryDirectory() as work:
        flags.FLAGS(["reward_comparison", f"--work_dir={work}", "--target_ms=25", "--num_random=6",
                     "--random_band=0.03", "--random_seed=0", "--standalone_seeds=0,1,2"])
        archs = comparison.random_architectures(work)
        recorded = comparison.recorded_random(results, archs)
    assert len(archs) == 6 and sorted(recorded) == [a["name"] for a in archs]
    assert all(len(per_seed) == 3 for per_seed in recorded.values())


def test_write_results_keeps_the_notes_of_the_report_it_replaces(tmp_path, monkeypatch):
    jobs = _benchmark("pinned_jobs")
    monkeypatch.setattr(jobs, "RESULTS_DIR", str(tmp_path))
    jobs.write_results("report", "# first\n\n| a | 1 |\n")
    assert (tmp_path / "report.md").read_text() == "# first\n\n| a | 1 |\n"   # no notes yet: the text alone
    notes = "## Notes (today)\n\n- why the table says 1\n\n## More notes\n- later\n"
    (tmp_path / "report.md").write_text("# first\n\n| a | 1 |\n\n" + notes)
    jobs.write_results("report", "# second\n\n| a | 2 |\n")
    assert (tmp_path / "report.md").read_text() == "# second\n\n| a | 2 |\n\n" + notes


def test_supernet_spread_reads_each_supernets_report_and_ranks_their_consensus(tmp_path):
    from absl import flags
    from scipy import stats
    spread = _benchmark("supernet_spread")
    rng = np.random.default_rng(0)
    archs = {stem: [f"{stem}_{k}" for k in range(5)] for stem in ("first", "second")}
    ap50 = {a: rng.uniform(0.4, 0.7, 2).round(3).tolist() for names in archs.values() for a in names}
    quality = {suffix: {a: round(float(rng.uniform(0.0, 0.3)), 4) for a in ap50} for suffix in ("", "_b", "_c")}

    counted = {a: round(float(rng.uniform(1.0, 2.5)), 4) for a in ap50}   # the zero-cost reference's column

    def write(stem, suffix, names, column="minibatch_quality", score=None):
        score = score or quality[suffix]
        rows = [f"| {a} | 25.00 | {score[a]:.4f} | {ap50[a][0]:.3f} | {ap50[a][1]:.3f} |" for a in names]
        (tmp_path / f"{stem}{suffix}.md").write_text("\n".join(
            ["# report", "", f"| architecture | predicted ms | {column} | standalone AP50 seed 0 | "
             "standalone AP50 seed 1 |", "|---|---|---|---|---|", *rows, "", "Kendall tau (...): 0"]) + "\n")

    for stem, names in archs.items():
        for suffix in quality:
            write(stem, suffix, names)
        write(stem, "_parameters", names, "parameters", counted)
    flags.FLAGS(["supernet_spread"])
    supernets = ["x:", "x:_b", "y:_c"]
    text = spread.report(str(tmp_path), list(archs), supernets, "minibatch_quality", "_parameters:parameters")
    both = archs["first"] + archs["second"]
    truth = [np.mean(ap50[a]) for a in both]

    def tau(scores, names):
        return stats.kendalltau([scores[a] for a in names], [np.mean(ap50[a]) for a in names]).statistic

    taus = [tau(quality[s], both) for s in quality]
    for (setting, suffix), value in zip([e.split(":") for e in supernets], taus):
        row = (f"| {setting} | `{suffix or '-'}` | {tau(quality[suffix], archs['first']):.3f} | "
               f"{tau(quality[suffix], archs['second']):.3f} | {value:.3f} (p ")
        assert row in text, text
    assert f"| x | 2 | {np.mean(taus[:2]):.3f} | {np.std(taus[:2], ddof=1):.3f} |" in text
    assert f"| y | 1 | {taus[2]:.3f} | - |" in text
    consensus = np.mean([stats.rankdata([quality[s][a] for a in both]) for s in quality], axis=0)
    assert f"{stats.kendalltau(consensus, truth).statistic:.3f} on both" in text
    pairs = [stats.kendalltau([quality[a][x] for x in both], [quality[b][x] for x in both]).statistic
             for a, b in [("", "_b"), ("", "_c"), ("_b", "_c")]]
    assert f"Kendall tau between their minibatch_quality {np.mean(pairs):.3f} on average" in text
    assert (f"zero-cost reference, no supernet (`parameters` of `{{set}}_parameters.md`): Kendall tau "
            f"{tau(counted, archs['first']):.3f} on first, {tau(counted, archs['second']):.3f} on second, "
            f"{tau(counted, both):.3f} on both") in text
    against = [stats.kendalltau([quality[s][a] for a in both], [counted[a] for a in both]).statistic for s in quality]
    assert (f"against the zero-cost reference (both): Kendall tau {np.mean(against):.3f} on average "
            f"(from {min(against):.3f} to {max(against):.3f})") in text

    def together(suffix, names):   # each architecture's mean rank of the measure and the reference
        ranks = np.mean([stats.rankdata([quality[suffix][a] for a in names]), stats.rankdata([counted[a] for a in names])],
                        axis=0)
        return stats.kendalltau(ranks, [np.mean(ap50[a]) for a in names]).statistic

    assert ("mean over the supernets: Kendall tau " +
            ", ".join(f"{np.mean([together(s, names) for s in quality]):.3f} on {group}"
                      for group, names in [("first", archs["first"]), ("second", archs["second"]), ("both", both)]) +
            f" (the supernets alone: {np.mean([tau(quality[s], archs['first']) for s in quality]):.3f}, "
            f"{np.mean([tau(quality[s], archs['second']) for s in quality]):.3f}, {np.mean(taus):.3f})") in text
    assert "zero-cost" not in spread.report(str(tmp_path), list(archs), supernets, "minibatch_quality")
    # The search's Q with a capacity term, as search.capacity_weight adds it: measure + w ln(reference).
    weighted = spread.report(str(tmp_path), list(archs), supernets, "minibatch_quality", "_parameters:parameters", [0.1])
    cells = []
    for names in (archs["first"], archs["second"], both):
        taus_w = [tau({a: quality[s][a] + 0.1 * np.log(counted[a]) for a in names}, names) for s in quality]
        cells.append(f"{np.mean(taus_w):.3f} ({min(taus_w):.3f} to {max(taus_w):.3f})")
    assert "| 0.1 | " + " | ".join(cells) + " |" in weighted
    assert f"| 0 | {np.mean([tau(quality[s], archs['first']) for s in quality]):.3f} (" in weighted
    with pytest.raises(SystemExit, match="no parameters column"):
        spread.report(str(tmp_path), list(archs), supernets, "minibatch_quality", ":parameters")
    write("second", "_c", archs["first"])   # a report of other architectures
    with pytest.raises(SystemExit, match="other architectures than second.md"):
        spread.report(str(tmp_path), list(archs), supernets, "minibatch_quality")

