"""Datasets: TF Object Detection API TFRecords, COCO conversion, the built-in dataset, the input pipeline."""
