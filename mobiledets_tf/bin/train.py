"""mobiledets-train: trains an SSDLite detector (float or QAT), on one device or under tf.distribute.

    mobiledets-train --config=configs/experiments/quickstart.yaml --model_dir=runs/quickstart/float
    mobiledets-train --config=configs/experiments/mobiledet_edgetpu_coco.yaml --model_dir=gs://... \
        --strategy=tpu --tpu=my-tpu --override=data.train_pattern=gs://coco/train-*
    mobiledets-train ... --arch=path/to/searched_arch.yaml      # any ArchSpec name or file
    mobiledets-train --config=... --model_dir=runs/qat --quantization=qat \
        --init_checkpoint=runs/quickstart/float --override=train.steps=1000,train.base_learning_rate=0.001
    mobiledets-train --config=configs/experiments/quickstart.yaml --model_dir=runs/q --eval_every=500

Resumes from the latest checkpoint in --model_dir. Writes the resolved config (`config.yaml`) and the
architecture (`arch.json`) next to the checkpoints, TensorBoard summaries under `train/`. Every path
may be a bucket URL (`gs://...`). --eval_every=N evaluates in this process every N steps, as the
sidecar `mobiledets-eval --continuous` does from a second process: `eval/` summaries,
`eval_history.json` and the best checkpoint in `best/`.
"""
import os
import sys

from absl import app, flags, logging

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf.arch import ArchSpecError
from mobiledets_tf.bin import common
from mobiledets_tf import fileio
from mobiledets_tf.config import ConfigError, save_config
from mobiledets_tf.evaluation.continuous import CheckpointEvaluator
from mobiledets_tf.models.checkpoints import CheckpointError
from mobiledets_tf.training.loop import TrainingDivergedError, TrainingLoop
from mobiledets_tf.training.strategy import (STRATEGIES, barrier, is_chief, is_multi_worker,
                                             make_strategy, split_cpu)
from mobiledets_tf.training.summaries import detection_image_summary_fn
from mobiledets_tf.training.task import DetectionTask

common.define_config_flags()
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory for checkpoints and summaries.")
STRATEGY = flags.DEFINE_enum("strategy", "default", STRATEGIES, "Distribution strategy.")
TPU = flags.DEFINE_string("tpu", "", "TPU name or address (with --strategy=tpu).")
CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", 1, "Split the CPU into this many logical devices (to run --strategy=mirrored "
    "with several replicas on a machine without GPUs).")
QUANTIZATION = flags.DEFINE_enum(
    "quantization", None, ["float", "qat"], "Shortcut for --override=model.quantization=...: qat "
    "fine-tunes with fake quantization (tfmot's 8-bit scheme), usually from --init_checkpoint.")
INIT_CHECKPOINT = flags.DEFINE_string(
    "init_checkpoint", None, "Shortcut for --override=train.init_checkpoint=...: float weights "
    "(checkpoint file or training directory) to start from; ignored when --model_dir has a checkpoint.")
MAP_COCO_CLASSES = flags.DEFINE_bool(
    "map_coco_classes", False, "Shortcut for --override=train.init_map_classes=true: classes whose "
    "names the --init_checkpoint's label map also has (e.g. COCO's, for an imported zoo model) keep "
    "their class-head rows; the others start fresh.")
EVAL_EVERY = flags.DEFINE_integer(
    "eval_every", None, "Shortcut for --override=train.eval_every=N: evaluate the checkpoint every N "
    "steps (and the last) in this process, keeping MODEL_DIR/best/ and MODEL_DIR/eval_history.json.")
flags.mark_flag_as_required("model_dir")


def shortcut_overrides():
    overrides = []
    if QUANTIZATION.value:
        overrides.append(f"model.quantization={'qat' if QUANTIZATION.value == 'qat' else ''!r}")
    if INIT_CHECKPOINT.value:
        overrides.append(f"train.init_checkpoint={INIT_CHECKPOINT.value!r}")
    if MAP_COCO_CLASSES.value:
        overrides.append("train.init_map_classes=true")
    if EVAL_EVERY.value is not None:
        overrides.append(f"train.eval_every={EVAL_EVERY.value}")
    return overrides


def main(argv):
    del argv
    try:
        config = common.load_config_from_flags(extra_overrides=shortcut_overrides())
        if config.model.quantization == "qat" and not config.train.init_checkpoint:
            logging.warning("QAT from random weights: give --init_checkpoint=FLOAT_CKPT to fine-tune "
                            "a trained float model, as QAT is meant to")
        split_cpu(CPU_DEVICES.value)
        strategy = make_strategy(STRATEGY.value, TPU.value)
        task = DetectionTask(config, strategy)
        evaluator = None
        if config.train.eval_every > 0 and is_chief(strategy):
            if not task.data.val_pattern:
                raise ConfigError("train.eval_every needs validation data: set data.val_pattern")
            evaluator = CheckpointEvaluator(config, MODEL_DIR.value, task.data)
    except (ConfigError, ArchSpecError, CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"mobiledets-train: {e}")
    logging.info("Training %s%s on %d replica(s), global batch %d, %d steps",
                 task.detector.arch.name, " with QAT" if config.model.quantization else "",
                 strategy.num_replicas_in_sync, config.train.batch_size,
                 config.train.steps)
    loop = TrainingLoop(task, MODEL_DIR.value, evaluator=evaluator,
                        image_summary_fn=detection_image_summary_fn(task, num_images=4))
    if is_chief(strategy):
        fileio.makedirs(MODEL_DIR.value)
        save_config(config, os.path.join(MODEL_DIR.value, "config.yaml"))
        task.detector.arch.save(os.path.join(MODEL_DIR.value, "arch.json"))
    try:
        losses = loop.run()
    except TrainingDivergedError as e:
        sys.exit(f"mobiledets-train: {e}")
    if losses:
        logging.info("Finished at step %d: loss %.4f", loop.step, losses["total_loss"])
    if is_multi_worker(strategy):
        # Leave together: a worker still shutting down when the coordination-service leader has
        # exited waits on its heartbeat forever, so after a final barrier exit without teardown.
        barrier(strategy)
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
