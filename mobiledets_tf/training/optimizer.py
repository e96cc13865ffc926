"""Momentum SGD (or Adam) with cosine decay and linear warmup, built by Model Garden's OptimizerFactory.

Momentum SGD is the paper's optimizer; Adam converges faster from scratch on small problems such as
the built-in dataset on a CPU. The schedule is the TF1 Object Detection API `cosine_decay_with_warmup`: linear from
`warmup_learning_rate` to `base_learning_rate` over `warmup_steps`, then a cosine to 0 at `steps`.
With `train.ema_decay` > 0 the optimizer is Model Garden's `ExponentialMovingAverage` wrapper, which
keeps an average of the trainable weights in its `average` slots (`moving_average`).
"""
from typing import Optional

from mobiledets_tf.config import TrainConfig
from mobiledets_tf.keras import keras
from official.modeling import optimization


def optimization_config(train: TrainConfig) -> optimization.OptimizationConfig:
    warmup = min(train.warmup_steps, max(train.steps - 1, 0))
    optimizer = {"momentum": train.momentum} if train.optimizer == "sgd" else {}
    if train.gradient_clip_norm > 0:
        optimizer["global_clipnorm"] = train.gradient_clip_norm
    config = {
        "optimizer": {"type": train.optimizer, train.optimizer: optimizer},
        "learning_rate": {"type": "cosine", "cosine": {
            "initial_learning_rate": train.base_learning_rate,
            "decay_steps": max(train.steps - warmup, 1), "offset": warmup}},
    }
    if train.ema_decay > 0:
        config["ema"] = {"average_decay": train.ema_decay, "trainable_weights_only": True}
    if warmup > 0:
        config["warmup"] = {"type": "linear", "linear": {
            "warmup_steps": warmup, "warmup_learning_rate": train.warmup_learning_rate}}
    return optimization.OptimizationConfig(config)


def build_optimizer(train: TrainConfig):
    """Returns (optimizer, learning-rate schedule). Wraps in loss scaling for float16 training."""
    factory = optimization.OptimizerFactory(optimization_config(train))
    schedule = factory.build_learning_rate()
    optimizer = factory.build_optimizer(schedule)
    if train.mixed_precision == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer, schedule


def moving_average(optimizer) -> Optional[optimization.ema_optimizer.ExponentialMovingAverage]:
    """The weight-averaging optimizer inside `optimizer` (loss scaling unwrapped), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if isinstance(inner, optimization.ema_optimizer.ExponentialMovingAverage) else None
