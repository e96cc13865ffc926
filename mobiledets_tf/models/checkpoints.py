"""Finding and restoring detector checkpoints, with errors that say what is wrong.

Evaluation and export restore weights through `restore_weights` (training's initial weights through
`fine_tuning.restore_initial_weights`), so a missing, unreadable or mismatched checkpoint gives the
same one-line `CheckpointError` everywhere. A training
run with a moving average of its weights also writes, next to each checkpoint, the averaged weights
under `AVERAGED_DIR`; given the run's directory, evaluation and export use those.
"""
import os

import tensorflow as tf
from absl import logging

AVERAGED_DIR = "averaged"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def resolve_checkpoint(checkpoint: str) -> str:
    """A checkpoint prefix (`.../ckpt-2000`) from a prefix or a directory holding checkpoints; for a
    directory, the averaged weights of its latest checkpoint when the run kept them."""
    path = tf.train.latest_checkpoint(checkpoint) if os.path.isdir(checkpoint) else checkpoint
    if not path or not tf.io.gfile.exists(f"{path}.index"):
        raise CheckpointError(f"{checkpoint}: no checkpoint found")
    if os.path.isdir(checkpoint):
        averaged = os.path.join(checkpoint, AVERAGED_DIR, os.path.basename(path))
        if tf.io.gfile.exists(f"{averaged}.index"):
            logging.info("Using the moving-average weights %s", averaged)
            return averaged
    return path


def restore_weights(model, checkpoint: str, description: str) -> str:
    """Restores every variable of `model` from `checkpoint` (file or dir); returns the prefix used.

    Extra objects in the checkpoint (the optimizer of a training checkpoint) are ignored; a model
    variable without a matching entry, a shape mismatch or an unreadable file is a CheckpointError.
    """
    path = resolve_checkpoint(checkpoint)
    try:
        status = tf.train.Checkpoint(model=model).read(path)
        status.expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot restore the {description} from it: {first_line}") from e
    return path
