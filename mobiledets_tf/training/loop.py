"""The training loop: resume, compiled multi-step loops, progress with ETA, summaries, checkpoints.

Steps run in compiled loops of `log_every` steps through orbit's `StandardTrainer`. After each loop
the global-batch losses are logged with steps/s and ETA and written to TensorBoard; a non-finite loss
stops the run before anything is saved, so the last checkpoint on disk is the last good one.
Checkpoints go through `tf.train.CheckpointManager`, which writes a new checkpoint under temporary
names and only then records it in the `checkpoint` state file, so a killed run resumes from the last
complete checkpoint. In multi-worker training only the chief writes to `model_dir`.

With `train.eval_every` and an evaluator (`evaluation.continuous.CheckpointEvaluator`, the one the
sidecar `mobiledets-eval --continuous` uses) the loop also saves a checkpoint every `eval_every`
steps and at the last step, and evaluates it before training on; a run resumed after a kill first
evaluates its latest checkpoint when that one was due and is not in the history yet.
"""
import math
import os
import shutil
import tempfile
import time
from typing import Dict, Optional

import orbit
import tensorflow as tf
from absl import logging

from mobiledets_tf.models.checkpoints import AVERAGED_DIR, checkpoint_step
from mobiledets_tf.training.strategy import is_chief
from mobiledets_tf.training.task import LOSS_KEYS, DetectionTask


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


class _StepLoop(orbit.StandardTrainer):
    """Runs `task.train_step` on every replica and averages the global-batch losses over a loop."""

    def __init__(self, task: DetectionTask, dataset):
        self.task = task
        self._sums = tf.Variable(tf.zeros([len(LOSS_KEYS)]), trainable=False, name="loss_sums")
        self._count = tf.Variable(0.0, trainable=False, name="loss_count")
        super().__init__(dataset, options=orbit.StandardTrainerOptions(use_tf_while_loop=True))

    def train_loop_begin(self):
        self._sums.assign(tf.zeros_like(self._sums))
        self._count.assign(0.0)

    def train_step(self, iterator):
        strategy = self.task.strategy
        images, targets = next(iterator)
        per_replica = strategy.run(self.task.train_step, args=(images, targets))
        losses = [strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None) for k in LOSS_KEYS]
        self._sums.assign_add(tf.stack(losses))
        self._count.assign_add(1.0)

    def train_loop_end(self) -> Dict[str, tf.Tensor]:
        means = self._sums / tf.maximum(self._count, 1.0)
        return {k: means[i] for i, k in enumerate(LOSS_KEYS)}


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrainingLoop:
    def __init__(self, task: DetectionTask, model_dir: str, image_summary_fn=None, evaluator=None):
        self.task = task
        self.evaluator = evaluator if task.config.train.eval_every > 0 else None
        self.model_dir = model_dir
        self.chief = is_chief(task.strategy)
        self.checkpoint = tf.train.Checkpoint(model=task.model, optimizer=task.optimizer)
        self._checkpoint_dir = model_dir if self.chief else tempfile.mkdtemp(prefix="worker-ckpt-")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self._checkpoint_dir, max_to_keep=task.config.train.keep_checkpoints,
            step_counter=task.optimizer.iterations)
        self.averaged_manager = None
        if task.moving_average is not None:   # the averaged weights, for evaluation and export
            self.averaged_manager = tf.train.CheckpointManager(
                tf.train.Checkpoint(model=task.model), os.path.join(self._checkpoint_dir, AVERAGED_DIR),
                max_to_keep=task.config.train.keep_checkpoints)
        self.image_summary_fn = image_summary_fn
        self.writer = (tf.summary.create_file_writer(os.path.join(model_dir, "train")) if self.chief
                       else tf.summary.create_noop_writer())

    @property
    def step(self) -> int:
        return int(self.task.optimizer.iterations.numpy())

    def restore(self) -> Optional[str]:
        """Resumes from the latest checkpoint in model_dir (train.init_checkpoint, if any, was
        already restored into the float model when the task was built)."""
        latest = self.manager.latest_checkpoint
        self._restored = self.checkpoint.restore(latest) if latest else None
        if latest:
            logging.info("Resumed from %s at step %d", latest, self.step)
        elif self.task.config.train.init_checkpoint:
            logging.info("Initialised the model from %s", self.task.config.train.init_checkpoint)
        return latest

    def run(self) -> Dict[str, float]:
        train = self.task.config.train
        if self.restore() is None and self.task.config.model.quantization == "qat" and train.qat_range_batches:
            self.task.calibrate_qat_ranges()
        if self.step >= train.steps:
            if self._restored is not None:   # the optimizer slots are never built: not a partial restore
                self._restored.expect_partial()
            logging.info("Already at step %d of %d: nothing to train", self.step, train.steps)
            self._evaluate_if_due()
            return {}
        self._evaluate_if_due()
        loop = _StepLoop(self.task, self.task.distributed_train_dataset())
        start_step, start_time = self.step, time.time()
        results: Dict[str, float] = {}
        while self.step < train.steps:
            step = self.step
            boundary = min((step // every + 1) * every for every in self._save_intervals())
            num_steps = min(train.log_every - step % train.log_every, boundary - step, train.steps - step)
            loop_start = time.time()
            losses = loop.train(tf.constant(num_steps, tf.int32))
            elapsed = time.time() - loop_start
            results = {k: float(v) for k, v in losses.items()}
            if not all(math.isfinite(v) for v in results.values()):
                raise TrainingDivergedError(
                    f"the loss became {results['total_loss']} between steps {step} and {self.step}; "
                    f"stopped without saving. The last good checkpoint is "
                    f"{self.manager.latest_checkpoint or '(none yet)'}. Lower the learning rate or "
                    f"enable train.gradient_clip_norm.")
            self._log(results, num_steps / elapsed, start_step, start_time)
            if any(self.step % every == 0 for every in self._save_intervals()) or self.step >= train.steps:
                self.manager.save(checkpoint_number=self.step)
                self._save_averaged()
                self._evaluate_if_due()
            if self.image_summary_fn and (
                    self.step // train.image_summary_every > step // train.image_summary_every
                    or self.step >= train.steps):
                # Every worker computes the pictures: reading BatchNorm statistics of a distributed
                # model is a collective operation. Only the chief's writer records them.
                with self.writer.as_default():
                    tf.summary.image("detections", self.image_summary_fn(), step=self.step, max_outputs=8)
        self.writer.flush()
        if not self.chief:
            shutil.rmtree(self._checkpoint_dir, ignore_errors=True)
        return results

    def _save_intervals(self):
        train = self.task.config.train
        return [train.checkpoint_every] + ([train.eval_every] if self.evaluator else [])

    def _evaluate_if_due(self) -> None:
        """Evaluates the latest checkpoint when it is at an `eval_every` multiple or the last step."""
        latest = self.manager.latest_checkpoint
        train = self.task.config.train
        if self.evaluator and latest and self.step == checkpoint_step(latest) and (
                self.step % train.eval_every == 0 or self.step >= train.steps):
            self.evaluator.evaluate(latest)

    def _save_averaged(self) -> None:
        """Writes the moving averages as the model's weights (the training weights are put back)."""
        if self.averaged_manager is None:
            return
        average = self.task.moving_average
        variables = self.task.model.trainable_variables
        with self.task.strategy.scope():
            current = [tf.identity(v) for v in variables]
            for v in variables:
                v.assign(average.get_slot(v, "average"))
            self.averaged_manager.save(checkpoint_number=self.step)
            for v, value in zip(variables, current):
                v.assign(value)

    def _log(self, losses: Dict[str, float], steps_per_second: float, start_step: int, start_time: float):
        train = self.task.config.train
        step = self.step
        learning_rate = float(self.task.learning_rate(step))
        overall = (step - start_step) / max(time.time() - start_time, 1e-9)
        eta = format_duration((train.steps - step) / max(overall, 1e-9))
        logging.info("step %d/%d  loss %.4f (cls %.4f loc %.4f reg %.4f)  lr %.4g  %.2f steps/s  ETA %s",
                     step, train.steps, losses["total_loss"], losses["classification_loss"],
                     losses["localization_loss"], losses["regularization_loss"], learning_rate,
                     steps_per_second, eta)
        with self.writer.as_default():
            for key, value in losses.items():
                tf.summary.scalar(f"losses/{key}", value, step=step)
            tf.summary.scalar("learning_rate", learning_rate, step=step)
            tf.summary.scalar("steps_per_second", steps_per_second, step=step)
