"""The losses a training logged, read back from its summaries (MODEL_DIR/train), and their mean.

`TrainingLoop` writes, at the last step of each compiled loop, the mean of every loss over that
loop's steps (`losses/<key>`). `mean_training_loss` weighs those means by the steps each covers:
the mean over every step trained. Summed over a short training from scratch, the training loss
estimates how well an architecture will train (Ru et al., "Speedy Performance Estimation for
Neural Architecture Search", NeurIPS 2021), and the search's finalist stage can rank by it
(`search.finalist_measure=training_loss`, search/finalists.py).
"""
import os
from typing import Dict, List, Sequence, Tuple

import tensorflow as tf

from mobiledets_tf import fileio

# The detection losses: what the detector fits. The weight decay term is left out: it grows with
# the number of weights, not with how well they fit the data.
DETECTION_LOSSES = ("classification_loss", "localization_loss")
LOSS_TAG_PREFIX = "losses/"


def _value(summary_value) -> float:
    if summary_value.HasField("tensor"):
        return float(tf.make_ndarray(summary_value.tensor).reshape(()))
    return float(summary_value.simple_value)


def logged_losses(model_dir: str) -> Dict[str, List[Tuple[int, float]]]:
    """{loss key: [(step, mean over the loop that ended at that step)]} by step, from every event
    file of model_dir/train in the order they were written: a step logged again (a training
    resumed from an earlier checkpoint) keeps its latest value."""
    by_key: Dict[str, Dict[int, float]] = {}
    for path in sorted(fileio.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith(LOSS_TAG_PREFIX):
                    by_key.setdefault(value.tag[len(LOSS_TAG_PREFIX):], {})[int(event.step)] = _value(value)
    return {key: sorted(steps.items()) for key, steps in by_key.items()}


def mean_training_loss(model_dir: str, keys: Sequence[str] = DETECTION_LOSSES) -> float:
    """The sum of the `keys` losses, averaged over every step the training in `model_dir` logged:
    each logged loop mean weighted by the steps since the previous one."""
    logged = logged_losses(model_dir)
    missing = [key for key in keys if not logged.get(key)]
    if missing:
        raise ValueError(f"{model_dir} holds no logged {', '.join(missing)} (model_dir/train/events.out.tfevents.*): "
                         f"was it trained?")
    total = 0.0
    for key in keys:
        steps = [step for step, _ in logged[key]]
        total += sum(value * (step - previous) for (step, value), previous in zip(logged[key], [0] + steps))
    return total / logged[keys[0]][-1][0]
