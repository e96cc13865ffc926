"""Quantization-aware training: fine-tuning a float checkpoint with fake quantization, resuming QAT
checkpoints, QAT under MirroredStrategy, and evaluating a QAT checkpoint."""
import os

import pytest
import tensorflow as tf

from conftest import run_binary, tiny_config_yaml
from mobiledets_tf.config import load_config
from mobiledets_tf.models.checkpoints import CheckpointError
from mobiledets_tf.models.detector import SSDLiteDetector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def float_run(tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("qat")
    config = root / "tiny.yaml"
    config.write_text(tiny_config_yaml())
    run_binary("train", f"--config={config}", f"--model_dir={root / 'float'}")
    return config, root / "float"


def _latest_step(model_dir) -> int:
    return int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])


def _variable_names(model_dir):
    return {name for name, _ in tf.train.list_variables(str(model_dir))}


def test_qat_fine_tunes_a_float_checkpoint_and_resumes(float_run, tmp_path):
    config, float_dir = float_run
    qat_dir = tmp_path / "qat"
    run = run_binary("train", f"--config={config}", f"--model_dir={qat_dir}", "--quantization=qat",
                     f"--init_checkpoint={float_dir}", "--override=train.steps=3")
    assert "with QAT" in run.stderr and f"Initialised the model from {float_dir}" in run.stderr
    assert _latest_step(qat_dir) == 3
    names = _variable_names(qat_dir)
    # Fake-quant ranges are part of the QAT checkpoint.
    assert any("min" in n and "quantize" in n for n in names), sorted(names)[:20]
    # Activation ranges started from the data, not from tfmot's [-6, 6] (3 steps of a 0.999 moving
    # average would leave every minimum near -6).
    assert "QAT: calibrated" in run.stderr
    reader = tf.train.load_checkpoint(str(qat_dir))
    minima = [float(reader.get_tensor(n)) for n in names
              if "/output_min/" in n or "/post_activation_min/" in n]
    assert minima and not any(abs(m + 6) < 0.05 for m in minima), minima

    resumed = run_binary("train", f"--config={config}", f"--model_dir={qat_dir}", "--quantization=qat",
                         f"--init_checkpoint={float_dir}", "--override=train.steps=6")
    assert "Resumed from" in resumed.stderr and _latest_step(qat_dir) == 6
    assert "QAT: calibrated" not in resumed.stderr   # a resumed run keeps its trained ranges

    evaluation = run_binary("eval", f"--model_dir={qat_dir}")
    assert "AP50" in evaluation.stdout and os.path.exists(qat_dir / "eval" / "metrics.json")


def test_qat_trains_under_mirrored_strategy(float_run, tmp_path):
    config, float_dir = float_run
    qat_dir = tmp_path / "qat_mirrored"
    run = run_binary("train", f"--config={config}", f"--model_dir={qat_dir}", "--quantization=qat",
                     f"--init_checkpoint={float_dir}", "--strategy=mirrored", "--cpu_devices=2",
                     "--override=train.steps=3")
    assert "on 2 replica(s)" in run.stderr and _latest_step(qat_dir) == 3


def test_qat_rejects_a_mismatched_or_missing_init_checkpoint(float_run, tmp_path):
    _, float_dir = float_run
    config = load_config(str(float_run[0]), ["model.quantization=qat,model.arch=mobiledet_gpu"])
    with pytest.raises(CheckpointError, match="cannot restore the float mobiledet_gpu detector"):
        SSDLiteDetector.from_config(config.model, float_checkpoint=str(float_dir))
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        SSDLiteDetector.from_config(config.model, float_checkpoint=str(tmp_path / "missing"))
