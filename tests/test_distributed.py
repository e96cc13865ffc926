"""Distributed training: MirroredStrategy over 2 logical CPUs and MultiWorkerMirroredStrategy with 2
worker processes on loopback give the loss and gradients of one device on the same global batch, and
short training runs complete under each strategy.

BatchNorm is synchronized across replicas in the distributed runs (model.sync_batch_norm), so every
replica normalises with the statistics of the global batch, as the single device does. The model
runs in float64 for this comparison (the losses in float32): synchronized BatchNorm computes
E[x^2] - E[x]^2 where the fused single-device kernel does not, which in float32 alone makes the
gradients differ by about 1e-3. Tolerances: loss 1e-5 relative; gradients 1e-4 relative in global
norm and, per variable, 1e-4 x the largest gradient.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config_yaml

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.slow


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tf_configs(n):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(n)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            for i in range(n)]


def _run_all(commands, envs, timeout=300):
    """Runs the commands concurrently; their output goes to files (a full pipe would block a worker)."""
    logs = [tempfile.TemporaryFile(mode="w+") for _ in commands]
    processes = [subprocess.Popen(c, env=e, stdout=log, stderr=subprocess.STDOUT, text=True)
                 for c, e, log in zip(commands, envs, logs)]
    for p in processes:
        p.wait(timeout=timeout)
    outputs = []
    for p, log in zip(processes, logs):
        log.seek(0)
        outputs.append(log.read())
        assert p.returncode == 0, outputs[-1][-3000:]
    return outputs


@pytest.fixture(scope="module")
def config_path(tiny_data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "tiny.yaml"
    path.write_text(tiny_config_yaml())
    return str(path)


@pytest.fixture(scope="module")
def single_device(config_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single") / "single.npz")
    _run_all([[sys.executable, os.path.join(HERE, "distributed_gradients.py"), "single", config_path, out]],
             [dict(os.environ)])
    return out


def _assert_same(result_path, reference_path):
    result, reference = np.load(result_path), np.load(reference_path)
    np.testing.assert_allclose(result["loss"], reference["loss"], rtol=1e-5)
    gradients = [k for k in reference.files if k.startswith("g")]
    assert len(gradients) > 100
    difference = np.sqrt(sum(((result[k] - reference[k]) ** 2).sum() for k in gradients))
    norm = np.sqrt(sum((reference[k] ** 2).sum() for k in gradients))
    assert difference / norm < 1e-4, f"gradients differ by {difference / norm:.2e} in global norm"
    scale = max(np.abs(reference[k]).max() for k in gradients)
    for key in gradients:
        np.testing.assert_allclose(result[key], reference[key], rtol=0, atol=1e-4 * scale, err_msg=key)


def test_mirrored_two_devices_equals_one_device(config_path, single_device, tmp_path):
    out = str(tmp_path / "mirrored.npz")
    output = _run_all([[sys.executable, os.path.join(HERE, "distributed_gradients.py"), "mirrored",
                        config_path, out, single_device.replace(".npz", "_weights.npz")]],
                      [dict(os.environ)])[0]
    assert "2 replica(s)" in output
    _assert_same(out, single_device)


def test_multi_worker_two_processes_equals_one_device(config_path, single_device, tmp_path):
    weights = single_device.replace(".npz", "_weights.npz")
    outs = [str(tmp_path / f"worker{i}.npz") for i in range(2)]
    commands = [[sys.executable, os.path.join(HERE, "distributed_gradients.py"), "worker", config_path,
                 out, weights] for out in outs]
    envs = [dict(os.environ, TF_CONFIG=c) for c in _tf_configs(2)]
    outputs = _run_all(commands, envs)
    assert all("2 replica(s)" in o for o in outputs)
    for out in outs:
        _assert_same(out, single_device)


def _train_command(config_path, model_dir, *extra):
    return [sys.executable, "-m", "mobiledets_tf.bin.train", f"--config={config_path}",
            f"--model_dir={model_dir}", *extra]


def test_short_training_under_mirrored_strategy(config_path, tmp_path):
    output = _run_all([_train_command(config_path, tmp_path, "--strategy=mirrored", "--cpu_devices=2")],
                      [dict(os.environ)])[0]
    assert "on 2 replica(s)" in output
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-6")


def test_short_training_under_multi_worker_strategy(config_path, tmp_path):
    model_dir = str(tmp_path / "run")
    envs = [dict(os.environ, TF_CONFIG=c) for c in _tf_configs(2)]
    outputs = _run_all([_train_command(config_path, model_dir, "--strategy=multi_worker_mirrored")] * 2, envs)
    assert all("on 2 replica(s)" in o for o in outputs)
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-6")
    assert not [d for d in os.listdir(tmp_path) if d != "run"]  # the other worker wrote elsewhere


def test_tpu_strategy_without_a_tpu_and_an_uneven_batch_stop_with_clear_errors(config_path, tmp_path):
    """What of the TPU path a CPU machine can run: strategy selection fails with a message naming
    what to give (no TPU here), and a global batch that does not split over the replicas stops
    before any work."""
    for tpu_flag in ([], ["--tpu=no-such-tpu"]):
        run = subprocess.run(_train_command(config_path, tmp_path / "tpu", "--strategy=tpu", *tpu_flag),
                             capture_output=True, text=True, timeout=300)
        assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert "--strategy=tpu: cannot reach the TPU" in run.stderr and "--tpu=local on a TPU VM" in run.stderr
        assert not (tmp_path / "tpu").exists()
    run = subprocess.run(_train_command(config_path, tmp_path / "uneven", "--strategy=mirrored", "--cpu_devices=2",
                                        "--override=train.batch_size=3"), capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "train.batch_size 3 (the global batch) must split evenly over the 2 replicas" \
        in run.stderr, run.stderr[-2000:]
