"""Shared test set-up: the package is imported first so that TensorFlow uses Keras 2."""
import json
import os
import shutil

import mobiledets_tf  # noqa: F401

import matplotlib
import numpy as np
import pytest
from PIL import Image

from tf1_reference.api import build_reference

ALL_ARCHITECTURES = ("mobiledet_cpu", "mobiledet_edgetpu", "mobiledet_dsp", "mobiledet_gpu",
                     "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet_a1")
MOBILEDETS = ALL_ARCHITECTURES[:4]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end test kept small enough for CI")


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Every test starts from an empty Keras name scope, so layer names are deterministic."""
    from mobiledets_tf.keras import keras
    keras.backend.clear_session()
    yield


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data root with a tiny built-in dataset (24 train, 8 val images of 128x128) generated once."""
    root = str(tmp_path_factory.mktemp("data"))
    os.environ["MOBILEDETS_DATA_DIR"] = root
    from mobiledets_tf.data.builtin import builtin_dataset
    builtin_dataset(**TINY_BUILTIN)
    return root


TINY_BUILTIN = dict(num_train=24, num_val=8, image_size=128, seed=0)


TINY_MODEL = "{arch: mobiledet_edgetpu, input_size: 64, num_classes: 6, depth_multiplier: 0.25}"


def tiny_config_yaml(model: str = TINY_MODEL, **train_overrides) -> str:
    """A fast experiment: a thin MobileDet-EdgeTPU at 64x64 (or `model`) on the tiny built-in dataset."""
    train = dict(batch_size=4, steps=6, base_learning_rate=0.05, warmup_steps=2,
                 warmup_learning_rate=0.01, checkpoint_every=3, log_every=3, image_summary_every=3)
    train.update(train_overrides)
    builtin = ", ".join(f"{k}: {v}" for k, v in TINY_BUILTIN.items())
    return (
        f"model: {model}\n"
        f"data: {{dataset: builtin, max_boxes: 8, shuffle_buffer: 16, builtin: {{{builtin}}}}}\n"
        "train: {" + ", ".join(f"{k}: {v}" for k, v in train.items()) + "}\n"
        "eval: {batch_size: 4}\n")


TINY_QUICKSTART_GROUP = "tiny_quickstart"   # xdist group of the tests sharing the `tiny_quickstart` run
TINY_QUICKSTART_OPTIONS = dict(train_steps=4, qat_steps=2, benchmark_runs=3, benchmark_warmup_runs=1)


@pytest.fixture(scope="session")
def tiny_quickstart(tiny_data_dir, tmp_path_factory):
    """One `mobiledets-quickstart` run on the tiny config (TINY_QUICKSTART_OPTIONS), shared by the
    tests of the TINY_QUICKSTART_GROUP xdist group (so one worker runs it, once):
    (config path, output folder, command-line arguments, the finished process)."""
    work = tmp_path_factory.mktemp("tiny_quickstart")
    config = work / "tiny.yaml"
    config.write_text(tiny_config_yaml(steps=6))
    out = work / "out"
    options = TINY_QUICKSTART_OPTIONS
    args = [f"--config={config}", f"--output_dir={out}", f"--override=train.steps={options['train_steps']}",
            f"--qat_steps={options['qat_steps']}", f"--benchmark_runs={options['benchmark_runs']}",
            f"--benchmark_warmup_runs={options['benchmark_warmup_runs']}"]
    return config, out, args, run_binary("quickstart", *args)


def run_binary(name: str, *args, check: bool = True, timeout: int = 900):
    """Runs `python -m mobiledets_tf.bin.NAME ARGS...`; asserts success unless check=False."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", f"mobiledets_tf.bin.{name}", *map(str, args)],
                         capture_output=True, text=True, timeout=timeout)
    if check:
        assert run.returncode == 0, run.stderr[-3000:]
    return run


# The TF1 Object Detection API reference (tests/tf1_reference/) -----------------------------------
TF1_GPU_GROUP = "tf1_mobiledet_gpu"   # xdist group of the tests that share the MobileDet-GPU reference


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Three photographs of different formats and shapes: JPEG 512x600, PNG 128x90, BMP 400x300."""
    folder = tmp_path_factory.mktemp("photos")
    samples = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    jpeg = str(folder / "grace_hopper.jpg")
    shutil.copy(os.path.join(samples, "grace_hopper.jpg"), jpeg)
    png, bmp = str(folder / "present.png"), str(folder / "grace_hopper_crop.bmp")
    Image.open(os.path.join(samples, "Minduka_Present_Blue_Pack.png")).crop((0, 10, 128, 100)).save(png)
    Image.open(jpeg).crop((0, 50, 400, 350)).save(bmp)
    return [jpeg, png, bmp]


_tf1_references = {}


@pytest.fixture(scope="session")
def tf1_reference(photos, tmp_path_factory):
    """(arch, input_size) -> {"dir", "checkpoint", "outputs", "variables", "decoys"}, built once."""
    def get(arch: str, input_size: int):
        key = (arch, input_size)
        if key not in _tf1_references:
            folder = str(tmp_path_factory.mktemp(f"tf1_{arch}_{input_size}"))
            build_reference(arch, photos, folder, input_size=input_size)
            with open(os.path.join(folder, "variables.json")) as f:
                variables = json.load(f)
            _tf1_references[key] = dict(
                dir=folder, checkpoint=os.path.join(folder, "model.ckpt-400000"),
                outputs=dict(np.load(os.path.join(folder, "reference.npz"))),
                variables=variables["model"], decoys=variables["decoys"])
        return _tf1_references[key]
    return get
