"""The search task: the detection task of `mobiledets-train` with a supernet in place of a detector.

`SearchTask` reuses `DetectionTask` for the data, the losses (normalised over the global batch) and
the optimizer of the shared weights; it adds the search space, the supernet (called with a choice
vector per replica), the validation mini-batches on which the quality Q of the sampled
architectures is measured, and the compiled steps of the search loop:
- `train_step_fn`: one optimizer step of the shared weights on each replica's batch with that
  replica's architecture (only the sampled path runs; with `search.sandwich`, the largest and the
  smallest path as well, search/sandwich.py);
- `detect_fn`: detections of each replica's architecture on its share of a validation batch, with
  batch statistics (TuNAS never uses moving averages during search).
"""
import tensorflow as tf

from mobiledets_tf.config import ConfigError, ExperimentConfig
from mobiledets_tf.data import pipeline
from mobiledets_tf.data.sources import DataSources
from mobiledets_tf.detection import postprocess as postprocess_lib
from mobiledets_tf.search.sandwich import SandwichStep, extreme_architecture
from mobiledets_tf.search.space import SearchSpace, load_space
from mobiledets_tf.search.supernet import Supernet
from mobiledets_tf.training.task import LOSS_KEYS, DetectionTask


def search_space_of(config: ExperimentConfig) -> SearchSpace:
    s = config.search
    return load_space(s.space, s.platform, skeleton=s.skeleton or None)


class SearchTask(DetectionTask):
    def __init__(self, config: ExperimentConfig, strategy: tf.distribute.Strategy, data: DataSources = None):
        if config.model.quantization:
            raise ConfigError("the search trains a float supernet: leave model.quantization empty")
        self.space = search_space_of(config)
        super().__init__(config, strategy, data)
        if not self.data.val_pattern:
            raise ConfigError("the search measures quality on validation images: set data.val_pattern")
        self._train_step = None
        self._detect = None

    def build_detector(self) -> Supernet:
        m = self.config.model
        return Supernet(self.space, num_classes=m.num_classes, input_size=m.input_size,
                        depth_multiplier=m.depth_multiplier, min_depth=m.min_depth,
                        anchor_min_scale=m.anchor_min_scale, anchor_max_scale=m.anchor_max_scale,
                        l2_weight=m.l2_weight, match_threshold=m.match_threshold)

    def predict(self, images, training: bool, choices=None):
        return self.detector(images, choices)

    # Inputs ------------------------------------------------------------------------------------
    @property
    def validation_batch_size(self) -> int:
        return self.config.train.batch_size * self.config.search.validation_batch_multiple

    def validation_dataset_fn(self, input_context: tf.distribute.InputContext = None) -> tf.data.Dataset:
        """Endless validation mini-batches (uint8 images, groundtruth), this replica's share; an image
        appears at most once per mini-batch (batches are cut within one shuffled pass, so the last one
        of a pass may be smaller)."""
        batch = self.validation_batch_size
        if input_context:
            batch = input_context.get_per_replica_batch_size(batch)
        c = self.config
        return pipeline.eval_dataset(self.data.val_pattern, c.model.input_size, batch, c.data.max_boxes
                                     ).unbatch().shuffle(512, seed=c.search.seed).batch(batch).repeat()

    def distributed_validation_dataset(self):
        return self.strategy.distribute_datasets_from_function(self.validation_dataset_fn)

    def per_replica_choices(self, choices_by_replica):
        """A distributed value holding each replica's int32 choice vector."""
        return self.strategy.experimental_distribute_values_from_function(
            lambda context: tf.constant(choices_by_replica[context.replica_id_in_sync_group], tf.int32))

    # Compiled steps ----------------------------------------------------------------------------
    def train_step_fn(self):
        """(per-replica batch, per-replica choices) -> global-batch losses, compiled once."""
        if self._train_step is None and self.config.search.sandwich:
            self._train_step = SandwichStep(self, self.extreme_architecture(True), self.extreme_architecture(False))
        if self._train_step is None:
            @tf.function
            def step(batch, choices):
                images, targets = batch
                per_replica = self.strategy.run(
                    lambda i, t, c: self.train_step(i, t, choices=c), args=(images, targets, choices))
                return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None)
                        for k in LOSS_KEYS}
            self._train_step = step
        return self._train_step

    def extreme_architecture(self, largest: bool):
        """The choice indices of the space's architecture of the most (or fewest) trainable parameters."""
        return extreme_architecture([len(d.choices) for d in self.space.decisions], self.detector.parameter_count,
                                    largest)

    def detect_fn(self):
        """(per-replica uint8 images, per-replica choices) -> per-replica detections, compiled once."""
        if self._detect is None:
            e = self.config.eval
            max_detections = self.config.search.quality_max_detections or e.max_detections

            def detect(images, choices):
                box_encodings, class_logits = self.detector(self.detector.preprocess(images), choices)
                return postprocess_lib.postprocess(
                    box_encodings, class_logits, self.detector.anchors, score_threshold=e.score_threshold,
                    iou_threshold=e.iou_threshold, max_detections_per_class=max_detections,
                    max_total_detections=max_detections)

            @tf.function
            def step(images, choices):
                return self.strategy.run(detect, args=(images, choices))
            self._detect = step
        return self._detect
