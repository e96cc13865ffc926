"""mobiledets-export: a trained checkpoint -> .tflite files (float32/float16/int8/int8_qat) + SavedModel.

    mobiledets-export --model_dir=runs/quickstart/float --precision=float32,float16,int8
    mobiledets-export --model_dir=runs/quickstart/float --checkpoint=best     # MODEL_DIR/best/
    mobiledets-export --model_dir=runs/quickstart/qat --precision=int8_qat --edgetpu
    mobiledets-export --config=configs/experiments/quickstart.yaml --checkpoint=runs/q/ckpt-3000 \
        --output_dir=out --nms=regular --max_detections=10
    mobiledets-export --model_dir=runs/zoo/mobiledet_cpu --precision=float32,int8 --calibration_data=photos/
    mobiledets-export --model_dir=runs/zoo/mobiledet_cpu --precision=float32 --nopostprocess

Float checkpoints export to float32, float16 and int8 (post-training quantization calibrated on
training images); QAT checkpoints (mobiledets-train --quantization=qat) to int8_qat. Each .tflite
ends in TFLite's SSD postprocess op with outputs (boxes, classes, scores, num_detections), carries
model metadata and a labels file, and gets an accelerator compatibility report (printed and saved).
int8 is calibrated on the training TFRecords of the config, or on --calibration_data (a TFRecord
pattern or a folder of images): a model imported with mobiledets-import needs no training run or data
for float32/float16 and only --calibration_data for int8. --nopostprocess exports the raw box
encodings [1, anchors, 4] and class logits [1, anchors, classes + 1] instead (like Coral's `_no_nms`
models; decode and NMS in the application), with the anchors in `NAME_anchors.csv` and in the model.
"""
import os
import sys

from absl import app, flags

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf.arch import ArchSpecError
from mobiledets_tf.bin import common
from mobiledets_tf.config import ConfigError
from mobiledets_tf.export.compatibility import format_report
from mobiledets_tf.export.converter import PRECISIONS, ConversionError
from mobiledets_tf.export.exporter import export_detector
from mobiledets_tf.export.postprocess_op import NmsSettings
from mobiledets_tf.models.checkpoints import CheckpointError, checkpoint_location
from mobiledets_tf.data.sources import resolve_data

common.define_config_flags()
MODEL_DIR = flags.DEFINE_string("model_dir", None, "Training directory (config.yaml + checkpoints).")
CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint path or directory (default: model_dir); "
                                 "`best`: MODEL_DIR/best/, the best checkpoint evaluation kept.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the files go (default MODEL_DIR/export).")
PRECISION = flags.DEFINE_list(
    "precision", None, f"Comma-separated precisions out of {', '.join(PRECISIONS)} (default: "
    "float32,float16,int8 for a float checkpoint, int8_qat for a QAT checkpoint).")
NAME = flags.DEFINE_string("name", None, "File name stem (default ARCH_INPUTSIZE).")
NMS = flags.DEFINE_enum("nms", "fast", ["fast", "regular"],
                        "fast: class-agnostic NMS over each anchor's top class; regular: per-class NMS.")
MAX_DETECTIONS = flags.DEFINE_integer("max_detections", 100, "Detections returned per image.")
DETECTIONS_PER_CLASS = flags.DEFINE_integer("detections_per_class", 100, "Per class (regular NMS).")
SCORE_THRESHOLD = flags.DEFINE_float("score_threshold", 1e-8, "NMS score threshold.")
IOU_THRESHOLD = flags.DEFINE_float("iou_threshold", 0.6, "NMS IoU threshold.")
CALIBRATION_IMAGES = flags.DEFINE_integer("calibration_images", 100,
                                          "Images that calibrate int8 post-training quantization.")
CALIBRATION_DATA = flags.DEFINE_string(
    "calibration_data", "", "int8 calibration images: a TFRecord pattern or a folder of image files "
    "(default: the config's data.train_pattern).")
POSTPROCESS = flags.DEFINE_bool(
    "postprocess", True, "End each model in TFLite's SSD postprocess op (decode + NMS); with "
    "--nopostprocess the models output raw box encodings and class logits (files *_raw.tflite).")
HARD_SWISH_FORM = flags.DEFINE_enum(
    "hard_swish_form", "auto", ["auto", "fused", "decomposed"],
    "Op form of hard-swish in the .tflite files. auto: 'decomposed' for int8 (MUL, ADD+RELU6, MUL: the "
    "CPU delegate XNNPACK runs them in int8; measured on x86 CPUs only) and 'fused' for float32/float16 "
    "(one HARD_SWISH op). 'fused' gives int8 its previous single HARD_SWISH op, which XNNPACK leaves to "
    "TFLite's own kernel. int8_qat keeps the form of its QAT run (model.qat_activation_form).")
FOLD_SCALAR_MULS = flags.DEFINE_bool(
    "fold_scalar_muls", True, "int8 and int8_qat: remove the multiplications by a constant scalar "
    "(hard-swish's and the hard-sigmoid gate's 1/6) by folding them into quantization scales: the same "
    "integers, fewer elementwise ops (measured faster on x86 CPUs only). --nofold_scalar_muls keeps the "
    "previous graph.")
SAVED_MODEL = flags.DEFINE_bool("saved_model", True, "Also write a TensorFlow SavedModel.")
EDGETPU = flags.DEFINE_bool("edgetpu", False, "Also compile int8 models with edgetpu_compiler (when it "
                            "is installed) and report its operator mapping next to the prediction.")
EDGETPU_COMPILER = flags.DEFINE_string("edgetpu_compiler", None,
                                       "Path of edgetpu_compiler (default: found on PATH).")


def main(argv):
    del argv
    if not (MODEL_DIR.value or (CHECKPOINT.value and common.config_flag_value())):
        sys.exit("mobiledets-export: give --model_dir, or --checkpoint together with --config")
    config_path = common.config_flag_value() or os.path.join(MODEL_DIR.value, "config.yaml")
    output_dir = OUTPUT_DIR.value or os.path.join(MODEL_DIR.value or ".", "export")
    try:
        config = common.load_config_from_flags(config_path)
        precisions = PRECISION.value or (
            ["int8_qat"] if config.model.quantization == "qat" else ["float32", "float16", "int8"])
        nms = NmsSettings(max_detections=MAX_DETECTIONS.value, score_threshold=SCORE_THRESHOLD.value,
                          iou_threshold=IOU_THRESHOLD.value, use_regular_nms=NMS.value == "regular",
                          detections_per_class=DETECTIONS_PER_CLASS.value)
        exported = export_detector(config, checkpoint_location(CHECKPOINT.value, MODEL_DIR.value),
                                   resolve_data(config),
                                   output_dir, precisions, nms, name=NAME.value,
                                   num_calibration_images=CALIBRATION_IMAGES.value,
                                   calibration_data=CALIBRATION_DATA.value,
                                   postprocess=POSTPROCESS.value,
                                   hard_swish_form=HARD_SWISH_FORM.value,
                                   fold_scalar_muls=FOLD_SCALAR_MULS.value,
                                   saved_model=SAVED_MODEL.value, edgetpu=EDGETPU.value,
                                   edgetpu_compiler=EDGETPU_COMPILER.value)
    except (ConfigError, ArchSpecError, CheckpointError, ConversionError, FileNotFoundError,
            ValueError) as e:
        sys.exit(f"mobiledets-export: {e}")
    for model in exported.values():
        print(format_report(model.report))
        if model.compiled:
            print(format_report(model.compiled.report))
            print(f"edgetpu_compiler log: {model.compiled.log_path}")
        elif model.compiler_missing:
            print(f"Not compiled for the Edge TPU: {model.compiler_missing}")
        print()
    for model in exported.values():
        print(f"{model.precision}: {model.tflite_path}")
        if model.compiled:
            for path in model.compiled.output_paths:
                print(f"{model.precision} (Edge TPU): {path}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
