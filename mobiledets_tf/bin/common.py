"""Flags shared by the binaries: the experiment config, overrides and the architecture shortcut."""
from absl import flags

from mobiledets_tf.config import ExperimentConfig, load_config

_CONFIG = None
_OVERRIDES = None
_ARCH = None


def define_config_flags() -> None:
    global _CONFIG, _OVERRIDES, _ARCH
    _CONFIG = flags.DEFINE_string("config", None, "Experiment YAML (configs/experiments/...).")
    _OVERRIDES = flags.DEFINE_multi_string(
        "override", [], "Config overrides such as train.steps=200,model.arch=mobiledet_cpu "
        "(repeatable; values are YAML scalars).")
    _ARCH = flags.DEFINE_string("arch", None, "Shortcut for --override=model.arch=NAME_OR_PATH.")


def config_flag_value():
    return _CONFIG.value


def load_config_from_flags(config_path: str = None, extra_overrides=()) -> ExperimentConfig:
    overrides = list(_OVERRIDES.value) + list(extra_overrides)
    if _ARCH.value:
        overrides.append(f"model.arch={_ARCH.value!r}")
    return load_config(config_path or _CONFIG.value, overrides)
