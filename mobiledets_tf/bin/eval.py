"""mobiledets-eval: COCO metrics of a trained detector on the validation split.

    mobiledets-eval --model_dir=runs/quickstart                   # latest checkpoint, run's config
    mobiledets-eval --model_dir=runs/quickstart --checkpoint=runs/quickstart/ckpt-2000
    mobiledets-eval --config=configs/experiments/quickstart.yaml --checkpoint=ckpt-2000 --output_dir=out

Prints AP, AP50, AP75, APs/m/l, AR and per-class AP as a table; writes `metrics.json` and a PNG of
detections on validation images to --output_dir (default MODEL_DIR/eval).
"""
import os
import sys

from absl import app, flags

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf.arch import ArchSpecError
from mobiledets_tf.bin import common
from mobiledets_tf.config import ConfigError
from mobiledets_tf.evaluation.coco_metrics import format_table
from mobiledets_tf.evaluation.keras_eval import (CheckpointError, evaluate_predict_fn,
                                                 keras_predict_fn, restore_detector)
from mobiledets_tf.training.task import resolve_data

common.define_config_flags()
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training directory (config.yaml + checkpoints).")
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint path or directory (default: model_dir).")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where metrics.json and detections.png go.")


def main(argv):
    del argv
    if not (MODEL_DIR.value or (CHECKPOINT.value and common.config_flag_value())):
        sys.exit("mobiledets-eval: give --model_dir, or --checkpoint together with --config")
    config_path = common.config_flag_value() or os.path.join(MODEL_DIR.value, "config.yaml")
    output_dir = OUTPUT_DIR.value or os.path.join(MODEL_DIR.value or ".", "eval")
    try:
        config = common.load_config_from_flags(config_path)
        data = resolve_data(config)
        detector = restore_detector(config, CHECKPOINT.value or MODEL_DIR.value)
        metrics = evaluate_predict_fn(keras_predict_fn(detector, config.eval), config, data, output_dir)
    except (ConfigError, ArchSpecError, CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"mobiledets-eval: {e}")
    print(format_table(metrics))
    print(f"metrics: {os.path.join(output_dir, 'metrics.json')}")
    print(f"detections: {os.path.join(output_dir, 'detections.png')}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
