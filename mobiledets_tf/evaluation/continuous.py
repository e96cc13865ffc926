"""Evaluation beside training: scores a run's checkpoints as they appear and keeps the best one.

`CheckpointEvaluator` serves both the sidecar (`mobiledets-eval --continuous`: a second process or
machine that follows model_dir) and `mobiledets-train --eval_every=N` (the training process). For
each checkpoint it restores the weights (the moving averages when the run keeps them) into its own
detector, computes COCO metrics on the validation split, writes them as TensorBoard scalars
`eval/AP`, `eval/AP50`, ... at the checkpoint's step (under `model_dir/eval`), offers the weights to
`model_dir/best/` and then appends an entry to the history `model_dir/eval_history.json`.

Restarts lose nothing: the history is rewritten whole and atomically, and a checkpoint counts as
evaluated only once its entry is in it; a process killed between the `best/` update and the
history write evaluates that checkpoint again on restart (to the same metrics), and a best
checkpoint the history does not list yet is entered from `best/`'s own record.

The sidecar reads which checkpoints exist from the trainer's `checkpoint` state file whenever it
is free, and evaluates, oldest first, each one newer than the last in the history. The trainer's
retention (`train.keep_checkpoints`) may delete checkpoints before the evaluator gets to them: one
listed but gone when its turn comes, or one at a `train.checkpoint_every` multiple that was never
listed while the evaluator looked, is entered as skipped. (orbit's `Controller.evaluate_continuously`
and `tf.train.checkpoints_iterator` are not used: they hand over only the newest checkpoint when
the evaluator wakes, so checkpoints written during a long evaluation would vanish without a trace,
and they keep no history to resume from.) The sidecar stops once the run's last step
(`train.steps` of the run's `config.yaml`, read again at each look, as a resumed run may have
changed it) is evaluated or skipped, or after `timeout` seconds without a new checkpoint.
"""
import datetime
import json
import os
import time
from typing import Any, Dict, List, Optional

import tensorflow as tf
from absl import logging

from mobiledets_tf import fileio
from mobiledets_tf.config import ConfigError, ExperimentConfig, load_config
from mobiledets_tf.evaluation.best_checkpoint import BestCheckpoint
from mobiledets_tf.evaluation.coco_metrics import METRIC_NAMES
from mobiledets_tf.evaluation.keras_eval import evaluate_predict_fn, keras_predict_fn
from mobiledets_tf.models.checkpoints import (BEST_DIR, CheckpointError, checkpoint_step, restore_weights,
                                              weights_of)
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.data.sources import DataSources

HISTORY_FILE = "eval_history.json"
RUN_CONFIG_FILE = "config.yaml"
SUMMARY_DIR = "eval"
EVALUATED, SKIPPED = "evaluated", "skipped"


def listed_checkpoints(model_dir: str) -> List[str]:
    """The checkpoint prefixes the trainer's state file lists now, oldest first."""
    state = tf.train.get_checkpoint_state(model_dir) if fileio.isdir(model_dir) else None
    if state is None:
        return []
    prefixes = [p if fileio.is_remote(p) or os.path.isabs(p) else os.path.join(model_dir, p)
                for p in state.all_model_checkpoint_paths]
    return sorted(prefixes, key=checkpoint_step)


class EvalHistory:
    """The JSON list of evaluated and skipped checkpoints of a run, rewritten atomically per entry."""

    def __init__(self, path: str):
        self.path = path
        self.entries: List[Dict[str, Any]] = (
            json.loads(fileio.read_text(path))["entries"] if fileio.exists(path) else [])

    def steps(self) -> set:
        return {e["step"] for e in self.entries}

    def last_step(self) -> int:
        return max(self.steps(), default=-1)

    def append(self, entry: Dict[str, Any]) -> None:
        entry = dict(entry, time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        entries = sorted(self.entries + [entry], key=lambda e: e["step"])
        fileio.write_text_atomically(self.path, json.dumps({"entries": entries}, indent=2) + "\n")
        self.entries = entries


class CheckpointEvaluator:
    """Evaluates checkpoints of the run in `model_dir` and keeps `best/`, the history and summaries."""

    def __init__(self, config: ExperimentConfig, model_dir: str, data: DataSources,
                 best_metric: Optional[str] = None, progress: bool = False):
        self.config = config
        self.model_dir = model_dir
        self.data = data
        self.progress = progress
        metric = best_metric or config.eval.best_metric
        if metric not in METRIC_NAMES:
            raise ConfigError(f"best metric {metric!r} is not one of {', '.join(METRIC_NAMES)}")
        self.best = BestCheckpoint(os.path.join(model_dir, BEST_DIR), metric)
        self.history = EvalHistory(os.path.join(model_dir, HISTORY_FILE))
        self._detector = None
        self._predict_fn = None
        self._writer = None
        self._recover_best_entry()

    def _recover_best_entry(self) -> None:
        """Enters the best checkpoint when a killed run updated `best/` but not the history."""
        best = self.best.current()
        if best is not None and best["step"] not in self.history.steps():
            logging.info("Entering step %d from %s into the history", best["step"], self.best.directory)
            self.history.append({"step": best["step"], "checkpoint": best["checkpoint"],
                                 "status": EVALUATED, "metrics": best["metrics"]})

    def _model(self):
        if self._detector is None:
            self._detector = SSDLiteDetector.from_config(self.config.model)
            self._predict_fn = keras_predict_fn(self._detector, self.config.eval)
            self._writer = tf.summary.create_file_writer(os.path.join(self.model_dir, SUMMARY_DIR))
        return self._detector

    def skip(self, prefix: str, reason: str) -> None:
        step = checkpoint_step(prefix)
        logging.warning("Step %d (%s) skipped: %s", step, os.path.basename(prefix), reason)
        self.history.append({"step": step, "checkpoint": os.path.basename(prefix), "status": SKIPPED,
                             "reason": reason})

    def evaluate(self, prefix: str) -> Optional[Dict[str, Any]]:
        """Scores checkpoint `prefix` once; returns its metrics, or None when it was gone (skipped)."""
        step = checkpoint_step(prefix)
        if step in self.history.steps():
            return None
        detector = self._model()
        start = time.time()
        try:
            weights = restore_weights(detector.model, weights_of(prefix), f"{self.config.model.arch} detector")
        except CheckpointError:
            if fileio.exists(f"{prefix}.index"):
                raise
            self.skip(prefix, "deleted by the trainer's retention before the evaluator got to it")
            return None
        metrics = evaluate_predict_fn(self._predict_fn, self.config, self.data, progress=self.progress)
        with self._writer.as_default():
            for name in METRIC_NAMES:
                if metrics[name] >= 0:   # COCO gives -1 where a metric is undefined
                    tf.summary.scalar(f"eval/{name}", metrics[name], step=step)
        self._writer.flush()
        self.best.offer(detector.model, step, metrics, source=os.path.basename(prefix))
        self.history.append({"step": step, "checkpoint": os.path.basename(prefix), "status": EVALUATED,
                             "weights": os.path.relpath(weights, self.model_dir)
                             if not fileio.is_remote(weights) else weights, "metrics": metrics})
        logging.info("Evaluated step %d in %.0f s: AP %.4f  AP50 %.4f", step, time.time() - start,
                     metrics["AP"], metrics["AP50"])
        return metrics

    def pending(self, seen: set) -> List[str]:
        """Checkpoints to evaluate now, oldest first; enters the ones retention deleted as skipped.

        `seen` collects every step ever listed, so one that vanished unevaluated is recognised.
        """
        last = self.history.last_step()
        listed = [p for p in listed_checkpoints(self.model_dir) if checkpoint_step(p) > last]
        listed_steps = {checkpoint_step(p) for p in listed}
        gone = {step for step in seen if step > last} - listed_steps
        never_seen = set()
        if listed:   # boundary steps before the oldest listed one, deleted while the evaluator was busy
            every = self.config.train.checkpoint_every
            never_seen = set(range(max(every, (last // every + 1) * every), min(listed_steps), every)) - seen
        for step in sorted(gone | never_seen):
            self.skip(os.path.join(self.model_dir, f"ckpt-{step}"),
                      "deleted by the trainer's retention before the evaluator "
                      + ("got to it" if step in gone else "saw it"))
        seen.update(listed_steps)
        return listed

    def final_step(self) -> int:
        """The run's last step, from the config.yaml the trainer wrote (else this evaluator's)."""
        path = os.path.join(self.model_dir, RUN_CONFIG_FILE)
        return load_config(path).train.steps if fileio.exists(path) else self.config.train.steps

    def follow(self, timeout: float, poll_seconds: float = 10.0) -> List[Dict[str, Any]]:
        """Evaluates new checkpoints until the run's last step is done or `timeout` seconds pass
        without a new one. Returns the history entries it added."""
        added_from = len(self.history.entries)
        seen: set = set()
        idle_since = time.time()
        logging.info("Following the checkpoints of %s up to step %d (stops after %g s without a new "
                     "one)", self.model_dir, self.final_step(), timeout)
        while self.history.last_step() < self.final_step():
            prefixes = self.pending(seen)
            for prefix in prefixes:
                self.evaluate(prefix)
            if prefixes:
                idle_since = time.time()
                continue
            if time.time() - idle_since > timeout:
                logging.info("No new checkpoint for %g s: stopping", timeout)
                break
            time.sleep(poll_seconds)
        return self.history.entries[added_from:]
