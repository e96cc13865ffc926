"""The detection task: one object that owns the detector, its optimizer, inputs, losses and train step.

Binaries stay thin: `mobiledets-train` builds a `DetectionTask` from an `ExperimentConfig` and a
strategy and hands it to the training loop. Losses are normalised by the number of positive anchors
of the *global* batch (summed across replicas) and the regularisation loss is split across replicas,
so the summed replica gradients equal the gradients of one device on the same global batch.
"""
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf
from absl import logging

from mobiledets_tf.config import ConfigError, ExperimentConfig, load_config
from mobiledets_tf.data import pipeline
from mobiledets_tf.data.label_map import names_by_class_index, read_label_map
from mobiledets_tf.data.sources import DataSources, resolve_data
from mobiledets_tf.detection.losses import num_positives
from mobiledets_tf.keras import keras
from mobiledets_tf.layers.defaults import synchronized_batch_norm
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.models.fine_tuning import class_slots_by_name
from mobiledets_tf.quantization.range_calibration import calibrate_activation_ranges
from mobiledets_tf.training.optimizer import build_optimizer, moving_average

LOSS_KEYS = ("total_loss", "classification_loss", "localization_loss", "regularization_loss")


def set_precision_policy(mixed_precision: str) -> None:
    """Sets Keras' global dtype policy for a mixed-precision run; "" leaves the policy as it is."""
    if mixed_precision:
        keras.mixed_precision.set_global_policy(mixed_precision)


def check_training_data(config: ExperimentConfig) -> None:
    """Training reads data.train_pattern (TFRecords); evaluation and export do not need it."""
    if config.data.dataset == "tfrecord" and not config.data.train_pattern:
        raise ConfigError("data.train_pattern is empty: set it to the training TFRecords "
                          "(e.g. --override=data.train_pattern=coco/train-*.tfrecord)")


class DetectionTask:
    def __init__(self, config: ExperimentConfig, strategy: tf.distribute.Strategy,
                 data: DataSources = None):
        self.config = config
        self.strategy = strategy
        if data is None:
            check_training_data(config)
        self.data = data or resolve_data(config)
        replicas = strategy.num_replicas_in_sync
        if config.train.batch_size % replicas:
            raise ConfigError(f"train.batch_size {config.train.batch_size} (the global batch) must split "
                              f"evenly over the {replicas} replicas")
        set_precision_policy(config.train.mixed_precision)
        keras.utils.set_random_seed(config.train.seed)   # the same initial weights for the same seed
        sync = config.model.sync_batch_norm and strategy.num_replicas_in_sync > 1
        with strategy.scope(), synchronized_batch_norm(sync):
            self.detector = self.build_detector()
            self.optimizer, self.learning_rate = build_optimizer(config.train)
            self.moving_average = moving_average(self.optimizer)
            if self.moving_average is not None:
                self.moving_average.shadow_copy(self.detector.model)
        self.model = self.detector.model

    def build_detector(self):
        """The detector this task trains (an `SSDLiteDetector`; the search task builds a supernet)."""
        return SSDLiteDetector.from_config(self.config.model,
                                           float_checkpoint=self.config.train.init_checkpoint or None,
                                           init_class_slots=init_class_slots(self.config, self.data))

    def predict(self, images, training: bool, **call_args):
        """Raw predictions (box encodings, class logits); `call_args` are the supernet's choices."""
        return self.model(images, training=training)

    # Inputs ------------------------------------------------------------------------------------
    def train_dataset_fn(self, input_context: tf.distribute.InputContext = None) -> tf.data.Dataset:
        c = self.config
        batch = (input_context.get_per_replica_batch_size(c.train.batch_size) if input_context
                 else c.train.batch_size)
        return self._train_dataset(batch, input_context)

    def _train_dataset(self, batch: int, input_context: tf.distribute.InputContext = None,
                       cache: bool = True) -> tf.data.Dataset:
        """The training pipeline; `cache=False` overrides `data.cache` (for a read of a few batches,
        which would leave a partial cache behind)."""
        c = self.config
        return pipeline.train_dataset(
            self.data.train_pattern, self.detector.anchors, c.model.num_classes, c.model.input_size,
            batch, seed=c.train.seed, max_boxes=c.data.max_boxes, ssd_crop=c.data.ssd_random_crop,
            flip=c.data.random_flip, shuffle_buffer=c.data.shuffle_buffer, cache=c.data.cache and cache,
            match_threshold=self.detector.match_threshold, input_context=input_context)

    def distributed_train_dataset(self):
        return self.strategy.distribute_datasets_from_function(self.train_dataset_fn)

    def calibrate_qat_ranges(self) -> int:
        """Sets a fresh QAT model's activation ranges on `train.qat_range_batches` training batches of
        one replica's size (`quantization/range_calibration.py`). Every worker reads the same batches
        (the unsharded, seeded pipeline), so all of them set the same ranges."""
        batch = max(self.config.train.batch_size // self.strategy.num_replicas_in_sync, 1)
        batches = self._train_dataset(batch, cache=False).take(self.config.train.qat_range_batches)
        with self.strategy.scope():
            return calibrate_activation_ranges(self.model, (images for images, _ in batches))

    # Loss and step -----------------------------------------------------------------------------
    def loss_normalizer(self, targets) -> tf.Tensor:
        """The losses' divisor: the positive anchors of the global batch (all replicas), at least 1."""
        replica = tf.distribute.get_replica_context()
        positives = num_positives(targets["positive_mask"])
        if replica is not None and replica.num_replicas_in_sync > 1:
            positives = replica.all_reduce(tf.distribute.ReduceOp.SUM, positives)
        return tf.maximum(positives, 1.0)

    def regularization_loss(self) -> tf.Tensor:
        """This replica's share of the weight regularization."""
        replica = tf.distribute.get_replica_context()
        num_replicas = replica.num_replicas_in_sync if replica is not None else 1
        regularization = tf.add_n([tf.constant(0.0)] + [tf.cast(l, tf.float32) for l in self.model.losses])
        return regularization / num_replicas

    def replica_losses(self, images, targets, training: bool = True, keep_predictions: bool = False,
                       **call_args) -> Dict[str, Any]:
        """This replica's share of the global-batch losses (the shares sum to the global losses), and
        with `keep_predictions` the predictions under "predictions"."""
        predictions = self.predict(images, training, **call_args)
        losses = self.detector.losses(predictions, targets, normalizer=self.loss_normalizer(targets))
        regularization = self.regularization_loss()
        return {"total_loss": losses["total"] + regularization,
                "classification_loss": losses["classification"],
                "localization_loss": losses["localization"],
                "regularization_loss": regularization,
                **({"predictions": list(predictions)} if keep_predictions else {})}

    def train_step(self, images, targets, **call_args) -> Dict[str, tf.Tensor]:
        """One optimizer step on this replica's batch; returns its loss shares."""
        gradients, losses = self.loss_gradients(lambda: self.replica_losses(images, targets, **call_args))
        self.apply_gradients(gradients)
        return losses

    def loss_gradients(self, compute_losses: Callable[[], Dict[str, Any]]) -> Tuple[List, Dict[str, Any]]:
        """(the gradient of `compute_losses()["total_loss"]` for each trainable variable, None where it
        does not depend on one; what `compute_losses` returned)."""
        with tf.GradientTape() as tape:
            losses = compute_losses()
            loss = losses["total_loss"]
            if isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer):
                loss = self.optimizer.get_scaled_loss(loss)
        gradients = tape.gradient(loss, self.model.trainable_variables)
        if isinstance(self.optimizer, keras.mixed_precision.LossScaleOptimizer):
            gradients = self.optimizer.get_unscaled_gradients(gradients)
        return gradients, losses

    def apply_gradients(self, gradients: List) -> None:
        """One optimizer step with `gradients` (one per trainable variable, in their order)."""
        self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))


def init_class_slots(config: ExperimentConfig, data: DataSources) -> Optional[List[Optional[int]]]:
    """With `train.init_map_classes`: which class slot of the init checkpoint each class keeps,
    matched by name against the label map of the init checkpoint's run (its config.yaml)."""
    init = config.train.init_checkpoint
    if not (config.train.init_map_classes and init):
        return None
    folder = init if tf.io.gfile.isdir(init) else os.path.dirname(init)
    init_config_path = os.path.join(folder, "config.yaml")
    if not tf.io.gfile.exists(init_config_path):
        raise ConfigError(f"train.init_map_classes: {init_config_path} not found, so the classes "
                          f"of {init} are unknown")
    init_config = load_config(init_config_path)
    if not init_config.data.label_map:
        raise ConfigError(f"train.init_map_classes: {init_config_path} names no data.label_map")
    init_map = read_label_map(init_config.data.label_map)
    slots = class_slots_by_name(names_by_class_index(data.label_map, data.num_classes),
                                names_by_class_index(init_map, init_config.model.num_classes))
    matched = [c.name for c in data.label_map if slots[c.id] is not None]
    if matched:
        logging.info("Class head: %d of %d classes keep the rows of the same name in %s: %s",
                     len(matched), len(data.label_map), init, ", ".join(matched))
    else:
        logging.warning("Class head: none of the %d classes is named in %s's label map; all start "
                        "fresh", len(data.label_map), init)
    return slots

