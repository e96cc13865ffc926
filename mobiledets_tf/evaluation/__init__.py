"""Evaluation: COCO detection metrics and pictures of detections, for Keras and TFLite models alike.

- `coco_metrics`: `DetectionEvaluator` (accumulate groundtruth and detections, compute COCO box
  metrics with pycocotools) and `evaluate_dataset` (score any `predict_fn` over a tf.data dataset).
- `visualize`: draw detections (and groundtruth) on images, save a PNG grid.

Submodules are not imported here, so `visualize` can be used without loading TensorFlow.
"""
