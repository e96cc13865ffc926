"""Where an experiment's data lives: the built-in dataset or TFRecords, resolved from its config.

`resolve_data` is the one place that turns `config.data` into paths, a label map and class names;
training, evaluation, export and the search all take the resulting `DataSources`.
"""
import dataclasses
from typing import List

from mobiledets_tf.config import ConfigError, ExperimentConfig
from mobiledets_tf.data.builtin import builtin_dataset
from mobiledets_tf.data.shapes import ObjectLayout
from mobiledets_tf.data.label_map import Category, class_names, num_classes, read_label_map


@dataclasses.dataclass
class DataSources:
    train_pattern: str
    val_pattern: str
    val_annotations: str
    label_map: List[Category]
    class_names: List[str]
    num_classes: int


def resolve_data(config: ExperimentConfig) -> DataSources:
    """Where the data lives: the built-in dataset (generated on first use) or TFRecords."""
    data = config.data
    if data.dataset == "builtin":
        b = data.builtin
        try:
            layout = ObjectLayout(b.min_object_size, b.max_object_size, b.max_objects)
        except ValueError as e:
            raise ConfigError(f"data.builtin.min_object_size, max_object_size, max_objects: {e}") from None
        built = builtin_dataset(num_train=b.num_train, num_val=b.num_val, image_size=b.image_size,
                                seed=b.seed, layout=layout)
        train, val, annotations, label_map_path = (built.train_pattern, built.val_pattern,
                                                   built.val_annotations, built.label_map_path)
    else:
        if not data.label_map:   # the TFRecord patterns are checked where they are read
            raise ConfigError("data.dataset is 'tfrecord': set data.label_map (and data.train_pattern "
                              "to train, data.val_pattern to evaluate)")
        train, val, annotations, label_map_path = (data.train_pattern, data.val_pattern,
                                                   data.val_annotations, data.label_map)
    label_map = read_label_map(label_map_path)
    sources = DataSources(train, val, annotations, label_map, class_names(label_map),
                          num_classes(label_map))
    if sources.num_classes != config.model.num_classes:
        raise ConfigError(
            f"model.num_classes is {config.model.num_classes} but the label map {label_map_path} has "
            f"category ids up to {sources.num_classes}; set model.num_classes={sources.num_classes}")
    return sources
