"""The TuNAS search loop: shared weights and controller trained together, with checkpoints and resume.

Each step (reference section 8):
1. every replica draws its own architecture from the controller (numpy generator seeded by
   (search seed, step, replica), so a resumed search draws the same ones); during the warmup share
   of the steps its decisions are replaced by op warmup (-1: every op, averaged) or the widest width
   with a probability falling from 1 to 0;
2. one optimizer step of the shared weights on each replica's training batch, only its path running;
3. after the update, detections of each replica's architecture on its share of a validation
   mini-batch, scored with COCO AP50 (or AP): the quality Q;
4. the reward (`search.reward`, `rewards.py`): by default `Q + beta * |T/T0 - 1|` with T the cost
   model's latency of the architecture, or MnasNet's `Q * (T/T0)^w`; with `search.capacity_weight` c
   (absolute reward only) Q gains `c * ln(trainable parameters in millions)` of the architecture;
5. once the RL delay is over, one REINFORCE update of the controller from the non-warmup samples.
After these `train.steps`, `search.controller_steps` more steps (default 0) train the controller alone
on the frozen supernet: steps 1, 3, 4 and 5 without the weight update, at an RL learning rate rising
from the base rate to `rl_boost` times it over these steps. With `rl_delay: 1` the shared weights then
train on uniformly drawn paths and the controller searches afterwards (a decoupled one-shot search).
Logged every `train.log_every` steps and written to TensorBoard (`search/`): losses, Q, cost,
reward, baseline, the controller's exact expected cost and entropy, and every decision's
probabilities. Checkpoints (`tf.train.CheckpointManager`, atomic) hold the supernet, its optimizer
and the controller (logits, Adam slots, baseline), so a killed search resumes where it was. At the
end the controller's argmax architecture is written as an ArchSpec (`searched_arch.yaml`, which
`mobiledets-train --arch` reads) with its choices and predicted latency (`searched_arch.json`).
"""
import dataclasses
import json
import math
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from mobiledets_tf.evaluation.coco_metrics import DetectionEvaluator
from mobiledets_tf.fileio import write_text_atomically
from mobiledets_tf.search.controller import Controller, rl_learning_rate, warmup_probability
from mobiledets_tf.search.cost_model import CostModel
from mobiledets_tf.search.rewards import capacity_term, reward
from mobiledets_tf.search.search_task import SearchTask
from mobiledets_tf.training.loop import TrainingDivergedError, format_duration

RL_BATCH_IMAGES = 256   # the controller's learning rate is given per this many training images


@dataclasses.dataclass
class SearchResult:
    indices: List[int]
    predicted_ms: float
    arch_path: str
    json_path: str


def architecture_name(kind: str, space, target_ms: float) -> str:
    """ArchSpec name of a search result ("searched") or random baseline ("random"): the space, the
    platform and the target, so results of different targets keep distinct names
    (searched_ibn_fused_tucker_cpu_20ms, ..._12p5ms)."""
    return f"{kind}_{space.name}_{space.platform}_{target_ms:.4g}ms".replace(".", "p")


def save_result(space, indices: List[int], predicted_ms: float, model_dir: str, stem: str, description: str,
                target_ms: float, cost_model_description: str, **record) -> SearchResult:
    """A search's result: the ArchSpec MODEL_DIR/STEM.yaml (named by `architecture_name`) and the JSON
    record MODEL_DIR/STEM.json of its choices, predicted latency, target, cost model and `record`."""
    arch = space.to_arch_spec(indices, name=architecture_name("searched", space, target_ms),
                              description=f"{description}, target {target_ms:g} ms, predicted {predicted_ms:.2f} ms "
                                          f"({cost_model_description})")
    arch_path = os.path.join(model_dir, f"{stem}.yaml")
    arch.save(arch_path)
    result = json.loads(space.to_json(indices))
    result.update(record)
    result.update(predicted_ms=predicted_ms, target_ms=target_ms, cost_model=cost_model_description)
    json_path = os.path.join(model_dir, f"{stem}.json")
    write_text_atomically(json_path, json.dumps(result, indent=2) + "\n")
    return SearchResult(indices, predicted_ms, arch_path, json_path)


QUALITY_IOU_THRESHOLDS = {"AP50": 0.5, "AP": None}   # search.quality_metric -> COCO IoU threshold(s)


def minibatch_quality(groundtruth: Dict[str, Any], detections: Dict[str, Any], label_map,
                      metric: str) -> float:
    """COCO AP50 (or AP) of detections (arrays or tensors) on one mini-batch; 0 when nothing is detected."""
    evaluator = DetectionEvaluator(label_map)
    evaluator.add({k: np.asarray(v) for k, v in groundtruth.items()},
                  {k: np.asarray(v) for k, v in detections.items()})
    value = evaluator.average_precision(QUALITY_IOU_THRESHOLDS[metric])
    return max(value, 0.0)   # COCO's -1 (undefined) counts as no quality


class SearchLoop:
    def __init__(self, task: SearchTask, cost_model: CostModel, model_dir: str):
        self.task = task
        self.config = task.config
        self.space = task.space
        self.cost_model = cost_model
        self.predicted_ms = cost_model.predictor(self.space)   # fails early on a mismatched model
        cost_model.check_positive(self.space)                  # and on one that would break the reward
        s = self.config.search
        if s.target_ms <= 0:
            raise ValueError(f"search.target_ms must be a positive latency in ms, got {s.target_ms}")
        if s.capacity_weight and s.reward != "absolute":
            raise ValueError(f"search.capacity_weight adds to Q, which the {s.reward} reward multiplies (Q must "
                             "stay positive there): use it with search.reward=absolute")
        self.model_dir = model_dir
        rl_rate = s.rl_learning_rate * self.config.train.batch_size / RL_BATCH_IMAGES
        self.controller = Controller(self.space, learning_rate=rl_rate, baseline_momentum=s.baseline_momentum)
        # Steps of the controller alone done so far (after the shared-weight steps).
        self.controller_steps_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="controller_steps")
        self.checkpoint = tf.train.Checkpoint(model=task.model, optimizer=task.optimizer,
                                              controller=tf.train.Checkpoint(**self.controller.checkpoint_items()),
                                              controller_steps=self.controller_steps_done)
        self.manager = tf.train.CheckpointManager(self.checkpoint, model_dir,
                                                  max_to_keep=self.config.train.keep_checkpoints,
                                                  step_counter=task.optimizer.iterations)
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "search"))
        self.label_map = [{"id": c.id, "name": c.name} for c in task.data.label_map]

    @property
    def step(self) -> int:
        """Shared-weight steps done."""
        return int(self.task.optimizer.iterations.numpy())

    @property
    def progress(self) -> int:
        """Steps of both phases done: shared-weight steps, then steps of the controller alone."""
        return self.step + int(self.controller_steps_done.numpy())

    @property
    def total_steps(self) -> int:
        return self.config.train.steps + self.config.search.controller_steps

    def expected_ms(self) -> float:
        return self.cost_model.expected(self.space, self.controller.probabilities())

    # One step ----------------------------------------------------------------------------------
    def _sample(self, step: int):
        """(sampled architectures, what each replica's supernet runs, whether it is a warmup sample)."""
        s, total = self.config.search, self.config.train.steps
        probability = warmup_probability(step, total, s.warmup)
        samples, runs = [], []
        for replica in range(self.task.strategy.num_replicas_in_sync):
            rng = np.random.default_rng([s.seed, step, replica])
            sample = self.controller.sample(rng)
            samples.append(sample)
            runs.append(self.controller.warmup_choices(sample, probability, rng))
        return samples, runs, [run != sample for sample, run in zip(samples, runs)]

    def search_step(self, train_iterator, validation_iterator) -> Dict[str, float]:
        step, total = self.step, self.config.train.steps
        s = self.config.search
        samples, runs, warm = self._sample(step)
        choices = self.task.per_replica_choices(runs)
        losses = {k: float(v) for k, v in self.task.train_step_fn()(next(train_iterator), choices).items()}
        if not all(math.isfinite(v) for v in losses.values()):
            raise TrainingDivergedError(
                f"the supernet loss became {losses['total_loss']} at step {step}; the last good checkpoint "
                f"is {self.manager.latest_checkpoint or '(none yet)'}. Lower train.base_learning_rate.")
        learning_rate = rl_learning_rate(step, total, self.controller.base_learning_rate, s.rl_delay, s.rl_boost)
        scores = self._score_and_learn(samples, choices, warm, next(validation_iterator), learning_rate)
        return {**losses, **scores, "warmup_share": float(np.mean(warm))}

    def controller_step(self, validation_iterator) -> Dict[str, float]:
        """One step of the controller alone: the supernet's weights stay as the shared-weight steps left them."""
        s = self.config.search
        done = int(self.controller_steps_done.numpy())
        samples, runs, _ = self._sample(self.progress)   # past the warmup: runs == samples
        learning_rate = rl_learning_rate(done, s.controller_steps, self.controller.base_learning_rate, 0.0,
                                         s.rl_boost)
        scores = self._score_and_learn(samples, self.task.per_replica_choices(runs), [False] * len(samples),
                                       next(validation_iterator), learning_rate)
        self.controller_steps_done.assign_add(1)
        return scores

    def capacity(self, indices) -> float:
        """The capacity term added to the architecture's Q (`rewards.capacity_term`)."""
        weight = self.config.search.capacity_weight
        return capacity_term(weight, self.task.detector.parameter_count(indices) / 1e6) if weight else 0.0

    def _score_and_learn(self, samples, choices, warm, validation_batch, learning_rate: float) -> Dict[str, float]:
        """Q, cost and reward of each replica's architecture on its share of the validation mini-batch;
        then the controller's update from the non-warmup samples when the learning rate is positive."""
        s = self.config.search
        images, groundtruth = validation_batch
        detections = self.task.detect_fn()(images, choices)
        local = self.task.strategy.experimental_local_results
        qualities, capacities, costs, rewards = [], [], [], []
        for r, (gt, det) in enumerate(zip(local(groundtruth), local(detections))):
            quality = minibatch_quality(gt, det, self.label_map, s.quality_metric)
            capacity = self.capacity(samples[r])
            cost = self.predicted_ms(samples[r])
            qualities.append(quality)
            capacities.append(capacity)
            costs.append(cost)
            rewards.append(reward(s.reward, quality + capacity, cost, s.target_ms, s.reward_beta, s.reward_exponent))
        learn = [r for r in range(len(samples)) if not warm[r]]
        update = {}
        if learning_rate > 0 and learn:
            update = self.controller.update([samples[r] for r in learn], [rewards[r] for r in learn],
                                            learning_rate)
        return {"quality": float(np.mean(qualities)), "capacity": float(np.mean(capacities)),
                "cost_ms": float(np.mean(costs)),
                "reward": float(np.mean(rewards)), "rl_learning_rate": learning_rate, **update}

    # The loop ----------------------------------------------------------------------------------
    def restore(self) -> Optional[str]:
        latest = self.manager.restore_or_initialize()
        if latest:
            c = self.controller
            logging.info("Resumed the search from %s at step %d: controller after %d updates, baseline %s, "
                         "entropy %.4f, logits %s", latest, self.step, int(c.updates.numpy()),
                         c.baseline_value(), c.entropy(), [l.numpy().round(4).tolist() for l in c.logits])
        return latest

    def run(self, result_stem: str = "searched_arch") -> SearchResult:
        """Both phases from the latest checkpoint; the controller's most likely architecture is written as
        RESULT_STEM.yaml/json (`write_result`)."""
        train = self.config.train
        self.restore()
        train_iterator = iter(self.task.distributed_train_dataset())
        validation_iterator = iter(self.task.distributed_validation_dataset())
        phases = [(lambda: self.step < train.steps,
                   lambda: self.search_step(train_iterator, validation_iterator)),
                  (lambda: self.progress < self.total_steps,
                   lambda: self.controller_step(validation_iterator))]
        for unfinished, one_step in phases:
            start_step, start_time = self.progress, time.time()
            window: List[Dict[str, float]] = []
            while unfinished():
                window.append(one_step())
                step = self.progress
                if step % train.log_every == 0 or not unfinished():
                    self._log(window, start_step, start_time)
                    window = []
                if step % train.checkpoint_every == 0 or not unfinished():
                    self.manager.save(checkpoint_number=step)
        self.writer.flush()
        return self.write_result(stem=result_stem)

    def _log(self, window: List[Dict[str, float]], start_step: int, start_time: float) -> None:
        step, total = self.progress, self.total_steps
        means = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
        rate = (step - start_step) / max(time.time() - start_time, 1e-9)
        expected, entropy = self.expected_ms(), self.controller.entropy()
        loss = f"loss {means['total_loss']:.4f}" if "total_loss" in means else "controller only"
        quality = f"Q {means['quality']:.3f}" + (f" + capacity {means['capacity']:.3f}"
                                                   if self.config.search.capacity_weight else "")
        logging.info("step %d/%d  %s  %s  cost %.2f ms (expected %.2f, target %.2f)  reward %.4f  "
                     "entropy %.2f  %.2f steps/s  ETA %s", step, total, loss, quality,
                     means["cost_ms"], expected, self.config.search.target_ms, means["reward"], entropy,
                     rate, format_duration((total - step) / max(rate, 1e-9)))
        with self.writer.as_default():
            for key, value in means.items():
                tf.summary.scalar(f"search/{key}", value, step=step)
            tf.summary.scalar("search/expected_cost_ms", expected, step=step)
            tf.summary.scalar("search/entropy", entropy, step=step)
            if "total_loss" in means:
                tf.summary.scalar("search/learning_rate", float(self.task.learning_rate(step)), step=step)
            for decision, probabilities in zip(self.space.decisions, self.controller.probabilities()):
                for label, p in zip(decision.labels, probabilities):
                    tf.summary.scalar(f"probabilities/{decision.tag}/{label}", p, step=step)

    def write_result(self, indices: Optional[List[int]] = None, stem: str = "searched_arch", how: str = "",
                     **extra) -> SearchResult:
        """An architecture (the controller's most likely one unless `indices` are given) as STEM.yaml and
        STEM.json (`save_result`) with the controller's state and `extra`; `how` tells in the ArchSpec's
        description how it was chosen."""
        indices = self.controller.argmax() if indices is None else list(indices)
        s = self.config.search
        return save_result(self.space, indices, self.predicted_ms(indices), self.model_dir, stem,
                           f"TuNAS search over {self.space.tag}{how}", s.target_ms, self.cost_model.describe(),
                           **extra, step=self.step, controller_steps=int(self.controller_steps_done.numpy()),
                           probabilities={d.tag: dict(zip(d.labels, map(float, p)))
                                          for d, p in zip(self.space.decisions, self.controller.probabilities())})
