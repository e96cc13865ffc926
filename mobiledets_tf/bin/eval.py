"""mobiledets-eval: COCO metrics of a trained detector on the validation split.

    mobiledets-eval --model_dir=runs/quickstart/float             # latest checkpoint, run's config
    mobiledets-eval --model_dir=runs/quickstart/float --checkpoint=runs/quickstart/float/ckpt-2000
    mobiledets-eval --config=configs/experiments/quickstart.yaml --checkpoint=ckpt-2000 --output_dir=out
    mobiledets-eval --model_dir=runs/quickstart/float --tflite=runs/quickstart/float/export/mobiledet_edgetpu_160_int8.tflite
    mobiledets-eval ... --tflite=model_edgetpu.tflite --delegate=libedgetpu.so.1 --delegate_options=device:usb:0

Prints AP, AP50, AP75, APs/m/l, AR and per-class AP as a table; writes `metrics.json` and a PNG of
detections on validation images to --output_dir (default MODEL_DIR/eval, or eval_MODELNAME next to
the .tflite). With --tflite the exported model is scored through the ai-edge-litert interpreter by
the same evaluator; the run's config (--model_dir or --config) supplies the validation data.
"""
import os
import sys

from absl import app, flags

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf.arch import ArchSpecError
from mobiledets_tf.benchmark.targets import parse_delegate_options
from mobiledets_tf.bin import common
from mobiledets_tf.config import ConfigError
from mobiledets_tf.evaluation.coco_metrics import format_table
from mobiledets_tf.evaluation.keras_eval import (evaluate_predict_fn, keras_predict_fn,
                                                 restore_detector)
from mobiledets_tf.evaluation.tflite_eval import TFLiteModelError, tflite_predict_fn
from mobiledets_tf.models.checkpoints import CheckpointError
from mobiledets_tf.training.task import resolve_data

common.define_config_flags()
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training directory (config.yaml + checkpoints).")
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint path or directory (default: model_dir).")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where metrics.json and detections.png go.")
TFLITE = flags.DEFINE_string("tflite", None, "Score this .tflite (from mobiledets-export) instead of a checkpoint.")
DELEGATE = flags.DEFINE_string("delegate", None, "TFLite delegate library to load (e.g. libedgetpu.so.1).")
DELEGATE_OPTIONS = flags.DEFINE_string("delegate_options", "", "Delegate options as 'key:value;key:value'.")
NUM_THREADS = flags.DEFINE_integer("num_threads", None, "Interpreter threads (default: the runtime's).")


def default_output_dir() -> str:
    if OUTPUT_DIR.value:
        return OUTPUT_DIR.value
    if TFLITE.value:
        stem = os.path.splitext(os.path.basename(TFLITE.value))[0]
        return os.path.join(os.path.dirname(os.path.abspath(TFLITE.value)), f"eval_{stem}")
    return os.path.join(MODEL_DIR.value or ".", "eval")


def main(argv):
    del argv
    if not (MODEL_DIR.value or ((CHECKPOINT.value or TFLITE.value) and common.config_flag_value())):
        sys.exit("mobiledets-eval: give --model_dir, or --checkpoint or --tflite together with --config")
    config_path = common.config_flag_value() or os.path.join(MODEL_DIR.value, "config.yaml")
    output_dir = default_output_dir()
    try:
        config = common.load_config_from_flags(config_path)
        data = resolve_data(config)
        if TFLITE.value:
            if not os.path.isfile(TFLITE.value):
                raise FileNotFoundError(f"{TFLITE.value}: no such .tflite file")
            predict_fn = tflite_predict_fn(TFLITE.value, DELEGATE.value,
                                           parse_delegate_options(DELEGATE_OPTIONS.value), NUM_THREADS.value)
        else:
            detector = restore_detector(config, CHECKPOINT.value or MODEL_DIR.value)
            predict_fn = keras_predict_fn(detector, config.eval)
        metrics = evaluate_predict_fn(predict_fn, config, data, output_dir)
    except (ConfigError, ArchSpecError, CheckpointError, TFLiteModelError, FileNotFoundError,
            ValueError) as e:
        sys.exit(f"mobiledets-eval: {e}")
    print(format_table(metrics))
    print(f"metrics: {os.path.join(output_dir, 'metrics.json')}")
    print(f"detections: {os.path.join(output_dir, 'detections.png')}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
