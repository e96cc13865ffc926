"""mobiledets-train and mobiledets-eval end to end on the tiny built-in dataset: checkpoints,
resume after SIGKILL, divergence handling, TensorBoard output, COCO evaluation and bad checkpoints."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import tiny_config_yaml

pytestmark = pytest.mark.slow


@pytest.fixture()
def config_path(tiny_data_dir, tmp_path):
    def write(**train):
        path = tmp_path / f"tiny{len(list(tmp_path.glob('tiny*.yaml')))}.yaml"
        path.write_text(tiny_config_yaml(**train))
        return str(path)
    return write


def _train(config, model_dir, *extra, check=True):
    run = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.train", f"--config={config}",
                          f"--model_dir={model_dir}", *extra], capture_output=True, text=True, timeout=600)
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


def _checkpoint_steps(model_dir):
    state = tf.train.get_checkpoint_state(str(model_dir))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths] if state else []


def _event_tags(log_dir):
    tags = set()
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_train_writes_checkpoints_summaries_and_evaluates(config_path, tmp_path):
    model_dir = tmp_path / "run"
    run = _train(config_path(), model_dir)
    assert "step 6/6" in run.stderr and "ETA" in run.stderr and "steps/s" in run.stderr
    assert _checkpoint_steps(model_dir) == [3, 6]
    assert os.path.exists(model_dir / "config.yaml") and os.path.exists(model_dir / "arch.json")
    tags = _event_tags(model_dir / "train")
    assert {"losses/total_loss", "losses/classification_loss", "learning_rate", "steps_per_second",
            "detections"} <= tags

    again = _train(config_path(), model_dir)
    assert "nothing to train" in again.stderr
    assert "could not be found" not in again.stderr   # no warnings about the optimizer slots left unbuilt

    evaluation = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.eval", f"--model_dir={model_dir}"],
                                capture_output=True, text=True, timeout=600)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    for name in ("AP50", "APs", "ARmax100", "circle", "ring"):
        assert name in evaluation.stdout
    assert os.path.getsize(model_dir / "eval" / "metrics.json") > 0
    assert os.path.getsize(model_dir / "eval" / "detections.png") > 0


def test_sigkill_mid_run_resumes_from_the_last_checkpoint(config_path, tmp_path):
    model_dir = tmp_path / "run"
    config = config_path(steps=60, checkpoint_every=4, log_every=2)
    process = subprocess.Popen([sys.executable, "-m", "mobiledets_tf.bin.train", f"--config={config}",
                                f"--model_dir={model_dir}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and max(_checkpoint_steps(model_dir) or [0]) < 12:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(_checkpoint_steps(model_dir))
    assert 12 <= killed_at < 60
    # Every checkpoint the state file lists is complete and restorable.
    for path in tf.train.get_checkpoint_state(str(model_dir)).all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(path)
        assert reader.get_variable_to_shape_map()

    resumed = _train(config, model_dir)
    assert f"Resumed from {model_dir}/ckpt-{killed_at} at step {killed_at}" in resumed.stderr
    assert max(_checkpoint_steps(model_dir)) == 60
    assert tf.train.load_checkpoint(str(model_dir)).get_tensor(
        "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE") == 60


def test_divergence_stops_and_keeps_the_last_good_checkpoint(config_path, tmp_path):
    model_dir = tmp_path / "run"
    _train(config_path(steps=3), model_dir)
    diverged = _train(config_path(steps=9), model_dir, "--override=train.base_learning_rate=1e30",
                      "--override=train.warmup_steps=0", check=False)
    assert diverged.returncode != 0
    assert "the loss became" in diverged.stderr and f"{model_dir}/ckpt-3" in diverged.stderr
    assert _checkpoint_steps(model_dir) == [3]


def test_eval_rejects_unreadable_and_mismatched_checkpoints(config_path, tmp_path):
    config = config_path()
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (garbage / "ckpt-1.index").write_bytes(b"not a checkpoint")
    run = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.eval", f"--config={config}",
                          f"--checkpoint={garbage}"], capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "cannot restore" in run.stderr

    model_dir = tmp_path / "run"
    _train(config, model_dir)
    run = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.eval", f"--config={config}",
                          f"--checkpoint={model_dir}", "--arch=mobiledet_gpu"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "cannot restore the mobiledet_gpu detector" in run.stderr

    run = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.eval", f"--config={config}",
                          f"--checkpoint={tmp_path / 'missing'}"], capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "no checkpoint found" in run.stderr


def test_moving_average_of_the_weights_is_checkpointed_and_evaluated(config_path, tmp_path):
    import numpy as np
    model_dir = tmp_path / "run"
    config = config_path(ema_decay=0.9)
    _train(config, model_dir)
    assert _checkpoint_steps(model_dir) == [3, 6]
    assert tf.train.get_checkpoint_state(str(model_dir / "averaged")).model_checkpoint_path.endswith("ckpt-6")
    raw = tf.train.load_checkpoint(str(model_dir / "ckpt-6"))
    averaged = tf.train.load_checkpoint(str(model_dir / "averaged" / "ckpt-6"))
    kernels = [n for n in averaged.get_variable_to_shape_map() if n.startswith("model/") and "kernel" in n]
    assert kernels and all(n in raw.get_variable_to_shape_map() for n in kernels)
    # The averaged weights are the optimizer's `average` slots of the training checkpoint, and differ
    # from the training weights after 6 steps.
    slots = {n.split("/.OPTIMIZER_SLOT/")[0]: n for n in raw.get_variable_to_shape_map()
             if n.endswith("/.OPTIMIZER_SLOT/optimizer/average/.ATTRIBUTES/VARIABLE_VALUE")}
    differ = 0
    for name in kernels:
        key = name.rsplit("/.ATTRIBUTES", 1)[0]
        assert key in slots, (name, sorted(slots)[:3])
        np.testing.assert_array_equal(averaged.get_tensor(name), raw.get_tensor(slots[key]))
        differ += not np.allclose(averaged.get_tensor(name), raw.get_tensor(name))
    assert differ > 0

    evaluation = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.eval", f"--model_dir={model_dir}"],
                                capture_output=True, text=True, timeout=600)
    assert evaluation.returncode == 0 and "Using the moving-average weights" in evaluation.stderr
    # Training resumes from the training weights, not the averages.
    resumed = _train(config_path(ema_decay=0.9, steps=9), model_dir)
    assert "Resumed from" in resumed.stderr and f"{model_dir}/ckpt-6 at step 6" in resumed.stderr
    assert _checkpoint_steps(model_dir)[-1] == 9 and (model_dir / "averaged" / "ckpt-9.index").exists()
