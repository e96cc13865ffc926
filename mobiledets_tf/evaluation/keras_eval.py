"""Scores a trained Keras detector checkpoint on the validation split with the COCO evaluator.

The detector is rebuilt from the run's config, its weights restored from a checkpoint, and
`evaluate_dataset` runs it through the same model-agnostic path that scores TFLite models.
"""
import os
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from mobiledets_tf import fileio
from mobiledets_tf.config import ExperimentConfig
from mobiledets_tf.data import pipeline
from mobiledets_tf.evaluation.coco_metrics import evaluate_dataset, save_metrics
from mobiledets_tf.evaluation.visualize import save_detection_grid
from mobiledets_tf.models.checkpoints import restore_weights
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.data.sources import DataSources


def restore_detector(config: ExperimentConfig, checkpoint: str) -> SSDLiteDetector:
    """Builds the detector of `config` (float or QAT) and restores its weights from `checkpoint`."""
    detector = SSDLiteDetector.from_config(config.model)
    restore_weights(detector.model, checkpoint, f"{config.model.arch} detector")
    return detector


def keras_predict_fn(detector: SSDLiteDetector, eval_config):
    @tf.function
    def predict(images):
        return detector.detect(images, score_threshold=eval_config.score_threshold,
                               iou_threshold=eval_config.iou_threshold,
                               max_detections_per_class=eval_config.max_detections,
                               max_total_detections=eval_config.max_detections)
    return predict


def evaluate_predict_fn(predict_fn, config: ExperimentConfig, data: DataSources,
                        output_dir: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
    """COCO metrics of `predict_fn` on the validation split; writes metrics.json and detections.png."""
    if not data.val_pattern:
        raise ValueError("no validation data: set data.val_pattern")
    e = config.eval
    dataset = pipeline.eval_dataset(data.val_pattern, config.model.input_size, e.batch_size,
                                    config.data.max_boxes, max_images=e.max_images or None)
    label_map = [{"id": c.id, "name": c.name} for c in data.label_map]
    metrics = evaluate_dataset(predict_fn, dataset, label_map,
                               annotation_file=data.val_annotations or None, progress=progress)
    if output_dir:
        fileio.makedirs(output_dir)
        save_metrics(metrics, os.path.join(output_dir, "metrics.json"))
        images, groundtruth = next(iter(dataset.unbatch().batch(e.num_picture_images)))
        save_detection_grid(images.numpy(), {k: np.asarray(v) for k, v in predict_fn(images).items()},
                            data.class_names, os.path.join(output_dir, "detections.png"),
                            score_threshold=0.3)
    return metrics

