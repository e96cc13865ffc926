"""Experiment configuration: typed defaults, YAML files and command-line overrides, validated.

Configs are Model Garden `Config` dataclasses, so YAML files and overrides go through
`official.modeling.hyperparams.params_dict.override_params_dict` (strict: unknown keys are errors).
On top of that every value is checked against the type of its default, and errors name the file or
the override that set the bad value. One override syntax serves every binary:
`--override=train.steps=200,model.arch=mobiledet_cpu` (values are YAML scalars).
"""
import dataclasses
import typing
from typing import Iterable, Optional

import yaml
from official.modeling.hyperparams import base_config, params_dict

from mobiledets_tf import fileio


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names its source and key."""


@dataclasses.dataclass
class ModelConfig(base_config.Config):
    arch: str = "mobiledet_edgetpu"      # name under configs/architectures/ or an ArchSpec path
    input_size: int = 320
    num_classes: int = 90                # largest category id (class index = id - 1)
    depth_multiplier: float = 1.0
    min_depth: int = 16
    sync_batch_norm: bool = False        # batch statistics across replicas when distributed
    quantization: str = ""               # "" (float) or "qat" (fake-quantized, tfmot 8-bit)
    qat_activation_form: str = "decomposed"  # QAT fake-quant positions of hard-swish and hard-sigmoid:
                                         # "decomposed" (int8 MUL/ADD that XNNPACK runs) or "fused"
    anchor_min_scale: float = 0.2        # SSD anchor scales of the lowest and highest feature map
    anchor_max_scale: float = 0.95       # (fractions of the image side; the TF1 SSDLite defaults)
    match_threshold: float = 0.5         # IoU that makes an anchor a positive of a groundtruth box
    l2_weight: float = 4e-5              # TF1 L2 weight of the conv kernels (0: no regularisation)


@dataclasses.dataclass
class BuiltinDataConfig(base_config.Config):
    num_train: int = 4000
    num_val: int = 400
    image_size: int = 320
    seed: int = 0
    min_object_size: float = 0.12        # object sizes (log-uniform), as fractions of the image side
    max_object_size: float = 0.60
    max_objects: int = 5                 # each image holds 1 to max_objects objects


@dataclasses.dataclass
class DataConfig(base_config.Config):
    dataset: str = "builtin"             # "builtin" or "tfrecord"
    train_pattern: str = ""              # TFRecord glob (dataset: tfrecord)
    val_pattern: str = ""
    val_annotations: str = ""            # optional COCO JSON of the validation split
    label_map: str = ""                  # label_map.json / .pbtxt
    builtin: BuiltinDataConfig = dataclasses.field(default_factory=BuiltinDataConfig)
    max_boxes: int = 100
    ssd_random_crop: bool = True
    random_flip: bool = True
    shuffle_buffer: int = 1000
    cache: bool = False                  # cache decoded training images in memory


@dataclasses.dataclass
class TrainConfig(base_config.Config):
    batch_size: int = 512                # global batch, split across replicas
    steps: int = 400000
    optimizer: str = "sgd"               # "sgd" (momentum) or "adam"
    base_learning_rate: float = 0.8
    warmup_steps: int = 2000
    warmup_learning_rate: float = 0.13333
    momentum: float = 0.9
    gradient_clip_norm: float = 0.0      # 0: no clipping
    mixed_precision: str = ""            # "", "mixed_bfloat16" (TPU) or "mixed_float16" (GPU)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5
    eval_every: int = 0                  # > 0: evaluate in the training process every N steps (and
                                         # at the last), keeping model_dir/best/ and the history
    log_every: int = 100
    image_summary_every: int = 5000
    init_checkpoint: str = ""            # float weights to start from (before QAT wrapping); a
                                         # class head of another class count starts fresh
    init_map_classes: bool = False       # keep the class-head columns of the classes the init
                                         # checkpoint's label map names too (by name, any case)
    qat_range_batches: int = 4           # QAT from float weights: training batches that set the
                                         # activation ranges before the first step (0: tfmot's
                                         # [-6, 6] start, moved by a 0.999 moving average)
    ema_decay: float = 0.0               # > 0: keep a moving average of the weights (e.g. 0.999);
                                         # evaluation and export then use the averaged weights
    seed: int = 0                        # input order, augmentation and initial weights


@dataclasses.dataclass
class EvalConfig(base_config.Config):
    batch_size: int = 16
    max_images: int = 0                  # 0: the whole validation split
    num_picture_images: int = 8
    score_threshold: float = 1e-8
    iou_threshold: float = 0.6
    max_detections: int = 100
    best_metric: str = "AP"              # the metric that chooses model_dir/best/ (higher is better)


@dataclasses.dataclass
class SearchConfig(base_config.Config):
    """TuNAS search (mobiledets-search); the shared weights train with `train`'s optimizer and steps."""
    space: str = "ibn_fused_tucker"      # a search space name or YAML file
    platform: str = "edgetpu"            # cpu | edgetpu | dsp | gpu (or a platform of the YAML file)
    skeleton: str = ""                   # "" : the platform's default skeleton
    cost_model: str = ""                 # cost model JSON (mobiledets-cost-model fit)
    target_ms: float = 0.0               # latency target T0 (ms, as the cost model predicts)
    reward: str = "absolute"             # absolute | mnas_soft | mnas_hard (search/rewards.py)
    reward_beta: float = -0.10           # absolute: R = Q + beta * |T / T0 - 1|
    reward_exponent: float = -0.07       # mnas_soft: R = Q * (T / T0) ** w
    quality_metric: str = "AP50"         # Q: AP50 or AP of the validation mini-batch (COCO, 0..1)
    capacity_weight: float = 0.0         # absolute reward: Q + this x ln(trainable parameters in millions)
    validation_batch_multiple: int = 4   # validation mini-batch = this x the training batch
    quality_max_detections: int = 0      # detections per image scored for Q (0: eval.max_detections)
    rl_learning_rate: float = 3e-4       # controller Adam learning rate per 256 training images
    rl_delay: float = 0.25               # share of the shared-weight steps before the controller learns
    rl_boost: float = 10.0               # the RL learning rate rises exponentially to this factor
    warmup: float = 0.25                 # share of the steps with op and filter warmup
    baseline_momentum: float = 0.95
    controller_steps: int = 0            # then steps of the controller alone on the frozen supernet
    sandwich: bool = False               # each step also trains the largest and smallest paths, and the
                                         # sampled and smallest learn from the largest (search/sandwich.py)
    finalists: int = 0                   # > 0: train this many architectures briefly, keep the best
    finalist_source: str = "controller"  # (search/finalists.py): the search's controller, or "band":
    finalist_steps: int = 500            # uniform draws, no supernet; steps of each finalist,
    finalist_band: float = 0.03          # all predicted within this relative band of the target
    finalist_measure: str = "ap50"       # the best finalist: highest validation AP50, or "training_loss":
                                         # lowest detection loss averaged over its training (no evaluation)
    finalist_seeds: int = 1              # trainings of each finalist (seeds of their own), scores averaged
    seed: int = 0                        # architecture sampling


@dataclasses.dataclass
class ExperimentConfig(base_config.Config):
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)


_CHOICES = {
    "data.dataset": ("builtin", "tfrecord"),
    "model.quantization": ("", "qat"),
    "model.qat_activation_form": ("decomposed", "fused"),
    "train.mixed_precision": ("", "mixed_bfloat16", "mixed_float16"),
    "train.optimizer": ("sgd", "adam"),
    "search.quality_metric": ("AP50", "AP"),
    "search.reward": ("absolute", "mnas_soft", "mnas_hard"),
    "search.finalist_source": ("controller", "band"),
    "search.finalist_measure": ("ap50", "training_loss"),
}
_POSITIVE = ("model.input_size", "model.num_classes", "model.depth_multiplier", "train.batch_size",
             "train.steps", "train.checkpoint_every", "train.log_every", "eval.batch_size",
             "data.max_boxes", "data.builtin.num_train", "data.builtin.num_val", "data.builtin.max_objects",
             "search.validation_batch_multiple", "search.rl_boost", "search.baseline_momentum",
             "search.finalist_steps", "search.finalist_seeds")
_NON_NEGATIVE = ("search.quality_max_detections", "search.controller_steps", "search.capacity_weight",
                 "search.finalists", "train.qat_range_batches")
_NEGATIVE = ("search.reward_beta", "search.reward_exponent")   # a penalty on being slow
_FRACTION = ("model.match_threshold", "data.builtin.min_object_size", "data.builtin.max_object_size",
             "search.finalist_band")


def _float_or_text(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _check_types(config: base_config.Config, source: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        key, value, expected = f"{prefix}{field.name}", getattr(config, field.name), hints[field.name]
        if isinstance(value, base_config.Config):
            _check_types(value, source, f"{key}.")
            continue
        if expected is float and isinstance(value, str):
            value = _float_or_text(value)   # YAML 1.1 reads 5e-5 (no dot) as a string
        ok = {int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool),
              str: isinstance(value, str),
              bool: isinstance(value, bool)}.get(expected, True)
        if not ok:
            raise ConfigError(f"{source}: {key} must be {expected.__name__}, got {value!r}")
        if expected is float:
            setattr(config, field.name, float(value))
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{source}: {key} must be one of {_CHOICES[key]}, got {value!r}")
        if key in _POSITIVE and value <= 0:
            raise ConfigError(f"{source}: {key} must be positive, got {value!r}")
        if key in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"{source}: {key} must be 0 or more, got {value!r}")
        if key in _NEGATIVE and value >= 0:
            raise ConfigError(f"{source}: {key} must be negative, got {value!r}")
        if key in _FRACTION and not 0 < value <= 1:
            raise ConfigError(f"{source}: {key} must be in (0, 1], got {value!r}")


def _apply(config, overrides, source: str) -> None:
    try:
        params_dict.override_params_dict(config, overrides, is_strict=True)
    except KeyError as e:
        raise ConfigError(f"{source}: unknown key: {e.args[0]}") from None
    except (ValueError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise ConfigError(f"{source}: {e}") from None
    _check_types(config, source)


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Defaults <- YAML file at `path` <- each override string, validated after each step."""
    config = ExperimentConfig()
    if path:
        if not fileio.isfile(path):
            raise ConfigError(f"{path}: config file not found")
        with fileio.open_file(path) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
        _apply(config, data, path)
    for override in overrides:
        if override:
            _apply(config, override, f"override {override!r}")
    return config


def save_config(config: ExperimentConfig, path: str) -> None:
    """Writes the resolved config as YAML, atomically."""
    fileio.write_text_atomically(path, yaml.safe_dump(config.as_dict(), sort_keys=False))

