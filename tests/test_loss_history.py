"""The training losses read back from a model directory's summaries, and their mean over the steps."""
import time

import numpy as np
import pytest
import tensorflow as tf

from mobiledets_tf.training.loss_history import logged_losses, mean_training_loss


def write_losses(log_dir, rows):
    """rows: (step, {key: mean over the loop that ended there}), written as TrainingLoop writes them."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for step, losses in rows:
            for key, value in losses.items():
                tf.summary.scalar(f"losses/{key}", value, step=step)
            tf.summary.scalar("learning_rate", 0.1, step=step)
            tf.summary.image("detections", np.zeros([1, 4, 4, 3], np.uint8), step=step)
    writer.close()


def loss(cls, loc, reg=5.0):
    return {"classification_loss": cls, "localization_loss": loc, "regularization_loss": reg,
            "total_loss": cls + loc + reg}


def test_the_mean_training_loss_weighs_each_logged_loop_by_its_steps(tmp_path):
    log_dir = tmp_path / "train"
    write_losses(log_dir, [(100, loss(3.0, 1.0)), (200, loss(2.0, 1.0)), (250, loss(9.0, 9.0))])
    time.sleep(1.1)   # a later event file name: the training resumed from its step-200 checkpoint
    write_losses(log_dir, [(250, loss(1.0, 0.5)), (300, loss(1.0, 0.25))])

    logged = logged_losses(str(tmp_path))
    assert logged["classification_loss"] == [(100, 3.0), (200, 2.0), (250, 1.0), (300, 1.0)]
    assert "learning_rate" not in logged and "detections" not in logged
    # Steps 1-100 at 4.0, 101-200 at 3.0, 201-250 at 1.5 (the resumed run's value), 251-300 at 1.25;
    # the weight decay term is left out.
    expected = (100 * 4.0 + 100 * 3.0 + 50 * 1.5 + 50 * 1.25) / 300
    assert mean_training_loss(str(tmp_path)) == pytest.approx(expected, rel=1e-6)
    assert mean_training_loss(str(tmp_path), keys=("total_loss",)) == pytest.approx(expected + 5.0, rel=1e-6)


def test_a_directory_without_logged_losses_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no logged classification_loss"):
        mean_training_loss(str(tmp_path))
