"""`model_dir/best/`: the weights of the best-scoring checkpoint so far, always a whole checkpoint.

The folder holds one checkpoint, `best/ckpt-STEP`, saved through `tf.train.CheckpointManager` with
`max_to_keep=1` (the mechanism Model Garden's `BestCheckpointExporter` uses): the new checkpoint's
files are written first, then the `checkpoint` state file is replaced atomically, then the old
files are deleted. Its metrics go to `best/ckpt-STEP.metrics.json` *before* the state file names
the checkpoint, so whichever checkpoint the state file names has its metrics beside it. A process
killed at any point leaves the previous or the new best, whole; leftovers of an interrupted update
are removed by the next one. (`BestCheckpointExporter` itself is not used: it writes its metrics
file non-atomically and before the checkpoint, so a kill between the two leaves `best/` described
by the wrong metrics.)

`mobiledets-eval --checkpoint=best` and `mobiledets-export --checkpoint=best` read this folder as any
checkpoint folder.
"""
import json
import os
from typing import Any, Dict, Optional

import tensorflow as tf
from absl import logging

from mobiledets_tf import fileio

CHECKPOINT_NAME = "ckpt"
METRICS_SUFFIX = ".metrics.json"
STATE_FILE = "checkpoint"


class BestCheckpoint:
    """The best checkpoint by `metric` (higher is better), kept in `directory`."""

    def __init__(self, directory: str, metric: str):
        self.directory = directory
        self.metric = metric

    def current(self) -> Optional[Dict[str, Any]]:
        """{"step", "checkpoint", "metrics"} of the kept checkpoint, or None while there is none."""
        prefix = tf.train.latest_checkpoint(self.directory) if fileio.isdir(self.directory) else None
        if not prefix or not fileio.exists(prefix + METRICS_SUFFIX):
            return None
        return json.loads(fileio.read_text(prefix + METRICS_SUFFIX))

    def offer(self, model, step: int, metrics: Dict[str, Any], source: str) -> bool:
        """Keeps `model`'s weights (those of checkpoint `source` at `step`) when they beat the kept
        ones on the metric; returns whether they did."""
        best = self.current()
        value = float(metrics[self.metric])
        if best is not None and value <= float(best["metrics"][self.metric]):
            return False
        fileio.makedirs(self.directory)
        prefix = os.path.join(self.directory, f"{CHECKPOINT_NAME}-{step}")
        record = {"step": step, "checkpoint": source, "metric": self.metric, "metrics": metrics}
        fileio.write_text_atomically(prefix + METRICS_SUFFIX, json.dumps(record, indent=2) + "\n")
        manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), self.directory,
                                             max_to_keep=1, checkpoint_name=CHECKPOINT_NAME)
        manager.save(checkpoint_number=step)
        self._remove_others(prefix)
        logging.info("New best checkpoint: step %d, %s %.4f (was %s)", step, self.metric, value,
                     "none" if best is None else f"{best['metrics'][self.metric]:.4f} at step {best['step']}")
        return True

    def _remove_others(self, keep_prefix: str) -> None:
        """Deletes every file of `directory` but the state file and the kept checkpoint's files."""
        keep = os.path.basename(keep_prefix)
        for name in fileio.listdir(self.directory):
            if name != STATE_FILE and not (name.startswith(keep + ".") or name == keep):
                path = os.path.join(self.directory, name)
                if fileio.isdir(path):
                    fileio.rmtree(path)
                else:
                    fileio.remove(path)
