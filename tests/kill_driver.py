"""Runs the trainer or the continuous evaluator in this process and SIGKILLs it at a chosen write.

    python kill_driver.py evaluate CONFIG MODEL_DIR [POINT N]   # POINT: history | best_state | best_cleanup
    python kill_driver.py train CONFIG MODEL_DIR [checkpoint_state N]

POINT names where the process kills itself, at the N-th time it gets there:
- history: halfway through writing the history's temporary file;
- best_state: after `best/`'s new checkpoint files are written, before its state file names them;
- best_cleanup: after the state file names the new best, before the old files are deleted;
- checkpoint_state: after a training checkpoint's files are written, before the state file lists it.
Without POINT the run goes to its end. For `evaluate`, AP is replaced by step / 1000 after the real
evaluation, so every checkpoint beats the one before and `best/` changes at each: the bookkeeping
under test then has something to do whatever the tiny model scores.
"""
import os
import signal
import sys

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
from absl import logging

from mobiledets_tf import fileio
from mobiledets_tf.config import load_config
from mobiledets_tf.evaluation import best_checkpoint, continuous
from mobiledets_tf.data.sources import resolve_data


def kill_on_nth_call(n: int):
    count = {"calls": 0}

    def due() -> bool:
        count["calls"] += 1
        return count["calls"] == n
    return due


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _HalfWriteThenDie:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        die()


def patch(point: str, due) -> None:
    if point == "history":
        real_open = fileio.open_file

        def open_file(path, mode="r"):
            f = real_open(path, mode)
            if "w" in mode and continuous.HISTORY_FILE in path and due():
                return _HalfWriteThenDie(f)
            return f
        fileio.open_file = open_file
    elif point in ("best_state", "checkpoint_state"):
        manager_class = tf.train.CheckpointManager
        real_save, real_record = manager_class.save, manager_class._record_state
        in_best = point == "best_state"

        def save(manager, *args, **kwargs):   # the N-th save of the chosen folder dies ...
            is_best = os.path.basename(manager.directory.rstrip("/")) == "best"
            manager.die_before_recording = is_best == in_best and due()
            return real_save(manager, *args, **kwargs)

        def record_state(manager):   # ... once its files are written, before the state file names them
            if getattr(manager, "die_before_recording", False):
                die()
            return real_record(manager)
        manager_class.save, manager_class._record_state = save, record_state
    elif point == "best_cleanup":
        real_remove = best_checkpoint.BestCheckpoint._remove_others

        def remove_others(self, keep_prefix):
            if due():
                die()
            return real_remove(self, keep_prefix)
        best_checkpoint.BestCheckpoint._remove_others = remove_others
    else:
        raise ValueError(f"unknown kill point {point!r}")


def evaluate(config_path: str, model_dir: str) -> None:
    real_evaluate = continuous.evaluate_predict_fn
    steps = iter([])

    def evaluate_with_rising_ap(*args, **kwargs):
        metrics = real_evaluate(*args, **kwargs)
        metrics["AP"] = next(steps) / 1000
        return metrics
    continuous.evaluate_predict_fn = evaluate_with_rising_ap
    config = load_config(config_path)
    evaluator = continuous.CheckpointEvaluator(config, model_dir, resolve_data(config))
    real_step_evaluate = evaluator.evaluate

    def evaluate_one(prefix):
        nonlocal steps
        steps = iter([continuous.checkpoint_step(prefix)])
        return real_step_evaluate(prefix)
    evaluator.evaluate = evaluate_one
    evaluator.follow(timeout=0, poll_seconds=0)


def train(config_path: str, model_dir: str) -> None:
    from mobiledets_tf.training.loop import TrainingLoop
    from mobiledets_tf.training.task import DetectionTask
    config = load_config(config_path)
    TrainingLoop(DetectionTask(config, tf.distribute.get_strategy()), model_dir).run()


if __name__ == "__main__":
    logging.use_absl_handler()
    logging.set_verbosity(logging.INFO)
    command, config_arg, model_dir_arg = sys.argv[1:4]
    if len(sys.argv) > 4:
        patch(sys.argv[4], kill_on_nth_call(int(sys.argv[5])))
    {"evaluate": evaluate, "train": train}[command](config_arg, model_dir_arg)
    print("finished")
