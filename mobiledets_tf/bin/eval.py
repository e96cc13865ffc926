"""mobiledets-eval: COCO metrics of a trained detector on the validation split.

    mobiledets-eval --model_dir=runs/quickstart/float             # latest checkpoint, run's config
    mobiledets-eval --model_dir=runs/quickstart/float --checkpoint=runs/quickstart/float/ckpt-2000
    mobiledets-eval --config=configs/experiments/quickstart.yaml --checkpoint=ckpt-2000 --output_dir=out
    mobiledets-eval --model_dir=runs/quickstart/float --tflite=runs/quickstart/float/export/mobiledet_edgetpu_160_int8.tflite
    mobiledets-eval ... --tflite=model_edgetpu.tflite --delegate=libedgetpu.so.1 --delegate_options=device:usb:0
    mobiledets-eval --model_dir=gs://bucket/runs/coco --continuous      # beside a training run
    mobiledets-eval --model_dir=runs/quickstart/float --checkpoint=best

Prints AP, AP50, AP75, APs/m/l, AR and per-class AP as a table; writes `metrics.json` and a PNG of
detections on validation images to --output_dir (default MODEL_DIR/eval, or eval_MODELNAME next to
the .tflite). With --tflite the exported model is scored through the ai-edge-litert interpreter by
the same evaluator; the run's config (--model_dir or --config) supplies the validation data.

--continuous follows a training run from a second process or machine: it evaluates each of the run's
checkpoints once as they appear, writes `eval/AP`, `eval/AP50`, ... summaries under MODEL_DIR/eval,
appends to MODEL_DIR/eval_history.json and keeps the best checkpoint (by --best_metric) in
MODEL_DIR/best/; it stops after the run's last step, or after --timeout seconds without a new
checkpoint. Restarted, it carries on where it stopped. --checkpoint=best scores MODEL_DIR/best/.
"""
import os
import sys
import time

from absl import app, flags, logging

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf import fileio
from mobiledets_tf.arch import ArchSpecError
from mobiledets_tf.benchmark.targets import parse_delegate_options
from mobiledets_tf.bin import common
from mobiledets_tf.config import ConfigError
from mobiledets_tf.evaluation.coco_metrics import format_table
from mobiledets_tf.evaluation.continuous import HISTORY_FILE, CheckpointEvaluator
from mobiledets_tf.evaluation.keras_eval import (evaluate_predict_fn, keras_predict_fn,
                                                 restore_detector)
from mobiledets_tf.evaluation.tflite_eval import TFLiteModelError, tflite_predict_fn
from mobiledets_tf.models.checkpoints import BEST_DIR, CheckpointError, checkpoint_location
from mobiledets_tf.data.sources import resolve_data

common.define_config_flags()
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training directory (config.yaml + checkpoints).")
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint path or directory (default: model_dir); "
                                 "`best`: MODEL_DIR/best/, the best checkpoint evaluation kept.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where metrics.json and detections.png go.")
TFLITE = flags.DEFINE_string("tflite", None, "Score this .tflite (from mobiledets-export) instead of a checkpoint.")
DELEGATE = flags.DEFINE_string("delegate", None, "TFLite delegate library to load (e.g. libedgetpu.so.1).")
DELEGATE_OPTIONS = flags.DEFINE_string("delegate_options", "", "Delegate options as 'key:value;key:value'.")
NUM_THREADS = flags.DEFINE_integer("num_threads", None, "Interpreter threads (default: the runtime's).")
CONTINUOUS = flags.DEFINE_bool("continuous", False, "Follow the training run in --model_dir: evaluate "
                               "each new checkpoint once, keep MODEL_DIR/best/ and the history.")
TIMEOUT = flags.DEFINE_float("timeout", 3600, "With --continuous: stop after this many seconds without "
                             "a new checkpoint (the run's last step stops it anyway).")
POLL_SECONDS = flags.DEFINE_float("poll_seconds", 10, "With --continuous: seconds between looks for "
                                  "new checkpoints.")
BEST_METRIC = flags.DEFINE_string("best_metric", None, "Shortcut for --override=eval.best_metric=NAME: "
                                  "the metric (higher is better) that chooses MODEL_DIR/best/.")


def default_output_dir() -> str:
    if OUTPUT_DIR.value:
        return OUTPUT_DIR.value
    if TFLITE.value:
        stem = os.path.splitext(os.path.basename(TFLITE.value))[0]
        return os.path.join(os.path.dirname(fileio.absolute(TFLITE.value)), f"eval_{stem}")
    return os.path.join(MODEL_DIR.value or ".", "eval")


def wait_for(path: str, timeout: float) -> None:
    """Waits for a file the trainer writes when it starts (a sidecar may start first)."""
    deadline = time.time() + timeout
    while not fileio.exists(path):
        if time.time() > deadline:
            raise FileNotFoundError(f"{path}: not written within {timeout:g} s; is the training running?")
        logging.info("Waiting for %s", path)
        time.sleep(POLL_SECONDS.value)


def follow_training() -> None:
    """--continuous: evaluates the run's checkpoints as they appear, until its last step."""
    config_path = common.config_flag_value() or os.path.join(MODEL_DIR.value, "config.yaml")
    wait_for(config_path, TIMEOUT.value)
    extra = [f"eval.best_metric={BEST_METRIC.value!r}"] if BEST_METRIC.value else []
    config = common.load_config_from_flags(config_path, extra_overrides=extra)
    evaluator = CheckpointEvaluator(config, MODEL_DIR.value, resolve_data(config))
    entries = evaluator.follow(TIMEOUT.value, POLL_SECONDS.value)
    for entry in entries:
        if entry["status"] == "evaluated":
            print(f"step {entry['step']}: AP {entry['metrics']['AP']:.4f}  AP50 {entry['metrics']['AP50']:.4f}")
        else:
            print(f"step {entry['step']}: skipped ({entry['reason']})")
    best = evaluator.best.current()
    if best:
        print(f"best: step {best['step']}, {best['metric']} {best['metrics'][best['metric']]:.4f} "
              f"in {os.path.join(MODEL_DIR.value, BEST_DIR)}")
    print(f"history: {os.path.join(MODEL_DIR.value, HISTORY_FILE)}")


def main(argv):
    del argv
    if CONTINUOUS.value:
        if not MODEL_DIR.value or TFLITE.value or CHECKPOINT.value:
            sys.exit("mobiledets-eval: --continuous needs --model_dir (and no --checkpoint or --tflite)")
        try:
            follow_training()
        except (ConfigError, ArchSpecError, CheckpointError, FileNotFoundError, ValueError) as e:
            sys.exit(f"mobiledets-eval: {e}")
        return
    if not (MODEL_DIR.value or ((CHECKPOINT.value or TFLITE.value) and common.config_flag_value())):
        sys.exit("mobiledets-eval: give --model_dir, or --checkpoint or --tflite together with --config")
    config_path = common.config_flag_value() or os.path.join(MODEL_DIR.value, "config.yaml")
    output_dir = default_output_dir()
    try:
        config = common.load_config_from_flags(config_path)
        data = resolve_data(config)
        if TFLITE.value:
            if not fileio.isfile(TFLITE.value):
                raise FileNotFoundError(f"{TFLITE.value}: no such .tflite file")
            predict_fn = tflite_predict_fn(TFLITE.value, DELEGATE.value,
                                           parse_delegate_options(DELEGATE_OPTIONS.value), NUM_THREADS.value)
        else:
            detector = restore_detector(config, checkpoint_location(CHECKPOINT.value, MODEL_DIR.value))
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
