"""Finding and restoring detector checkpoints, with errors that say what is wrong.

Evaluation and export restore weights through `restore_weights` (training's initial weights through
`fine_tuning.restore_initial_weights`), so a missing, unreadable or mismatched checkpoint gives the
same one-line `CheckpointError` everywhere. A training
run with a moving average of its weights also writes, next to each checkpoint, the averaged weights
under `AVERAGED_DIR`; given the run's directory, evaluation and export use those. The keyword
`best` names the run's `BEST_DIR`, where evaluation keeps the best-scoring checkpoint.
"""
import os

import tensorflow as tf
from absl import logging

from mobiledets_tf import fileio

AVERAGED_DIR = "averaged"
BEST_DIR = "best"
BEST_KEYWORD = "best"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model."""


def checkpoint_step(prefix: str) -> int:
    """The step a `.../ckpt-STEP` prefix was saved at."""
    return int(prefix.rsplit("-", 1)[1])


def checkpoint_location(checkpoint: str, model_dir: str) -> str:
    """The --checkpoint of a binary as a path: `best` means `model_dir/best/`, nothing means model_dir."""
    if checkpoint == BEST_KEYWORD:
        if not model_dir:
            raise CheckpointError("--checkpoint=best needs --model_dir (it means MODEL_DIR/best/)")
        return os.path.join(model_dir, BEST_DIR)
    return checkpoint or model_dir


def weights_of(prefix: str) -> str:
    """The weights to evaluate or export for a training checkpoint: its moving averages when the
    run kept them (`averaged/ckpt-N` beside `ckpt-N`), else the checkpoint itself."""
    averaged = os.path.join(os.path.dirname(prefix), AVERAGED_DIR, os.path.basename(prefix))
    if fileio.exists(f"{averaged}.index"):
        logging.info("Using the moving-average weights %s", averaged)
        return averaged
    return prefix


def resolve_checkpoint(checkpoint: str) -> str:
    """A checkpoint prefix (`.../ckpt-2000`) from a prefix or a directory holding checkpoints; for a
    directory, the averaged weights of its latest checkpoint when the run kept them."""
    # A prefix first: some filesystems (ram://) also call `ckpt-3` a folder when `ckpt-3.index` exists.
    is_dir = not fileio.exists(f"{checkpoint}.index") and fileio.isdir(checkpoint)
    path = tf.train.latest_checkpoint(checkpoint) if is_dir else checkpoint
    if not path or not fileio.exists(f"{path}.index"):
        raise CheckpointError(f"{checkpoint}: no checkpoint found")
    return weights_of(path) if is_dir else path


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
