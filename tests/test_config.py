"""Experiment configs: YAML over typed defaults, overrides, and clear errors for bad values."""
import glob
import os

import pytest

from conftest import REPO_ROOT
from mobiledets_tf.config import ConfigError, load_config, save_config


def test_defaults_are_the_paper_recipe():
    config = load_config()
    assert (config.train.batch_size, config.train.steps, config.train.base_learning_rate,
            config.train.warmup_steps, config.train.warmup_learning_rate) == (512, 400000, 0.8, 2000, 0.13333)
    assert config.model.input_size == 320 and config.data.max_boxes == 100


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "experiments", "*.yaml"))))
def test_shipped_experiment_configs_load(path):
    config = load_config(path)
    if "coco" in os.path.basename(path):
        assert config.train.batch_size == 512 and config.train.steps == 400000
        assert config.model.arch in os.path.basename(path)


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    config = load_config(None, ["train.base_learning_rate=5e-5", "train.warmup_learning_rate=1E-6"])
    assert config.train.base_learning_rate == 5e-5 and config.train.warmup_learning_rate == 1e-6


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  arch: mobiledet_cpu\ntrain:\n  steps: 50\n")
    config = load_config(str(path), ["train.steps=70,train.base_learning_rate=0.1", "model.input_size=256"])
    assert (config.model.arch, config.train.steps, config.model.input_size) == ("mobiledet_cpu", 70, 256)
    assert isinstance(config.train.base_learning_rate, float)
    saved = tmp_path / "resolved.yaml"
    save_config(config, str(saved))
    assert load_config(str(saved)).as_dict() == config.as_dict()


@pytest.mark.parametrize("yaml_text,overrides,pattern", [
    ("train:\n  stepz: 5\n", [], r"exp.yaml: unknown key.*stepz"),
    ("trainer:\n  steps: 5\n", [], r"exp.yaml: unknown key.*trainer"),
    ("train:\n  steps: many\n", [], r"exp.yaml: train.steps must be int, got 'many'"),
    ("train:\n  steps: 1.5\n", [], r"train.steps must be int, got 1.5"),
    ("model:\n  input_size: 0\n", [], r"model.input_size must be positive"),
    ("data:\n  dataset: coco\n", [], r"data.dataset must be one of"),
    ("train:\n  mixed_precision: fp8\n", [], r"train.mixed_precision must be one of"),
    ("", ["search.quality_max_detections=-1"], r"search.quality_max_detections must be 0 or more"),
    ("", ["model.match_threshold=0"], r"model.match_threshold must be in \(0, 1\], got 0"),
    ("", ["data.builtin.max_object_size=1.5"], r"data.builtin.max_object_size must be in \(0, 1\], got 1.5"),
    ("", ["data.builtin.max_objects=0"], r"data.builtin.max_objects must be positive, got 0"),
    ("", ["search.reward=mnas"], r"search.reward must be one of \('absolute', 'mnas_soft', 'mnas_hard'\)"),
    ("", ["search.reward_exponent=0.07"], r"search.reward_exponent must be negative, got 0.07"),
    ("", ["search.reward_beta=0"], r"search.reward_beta must be negative"),
    ("", ["train.base_learning_rate=fast"], r"train.base_learning_rate must be float, got 'fast'"),
    ("", ["train.batch_size=abc"], r"override 'train.batch_size=abc': train.batch_size must be int"),
    ("", ["model.depth=2"], r"override 'model.depth=2': unknown key.*depth"),
    ("- a\n- b\n", [], r"exp.yaml: a config must be a mapping"),
    ("train: [\n", [], r"exp.yaml: not valid YAML"),
])
def test_bad_configs_are_rejected_with_their_source(tmp_path, yaml_text, overrides, pattern):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(str(path), overrides)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")
