"""mobiledets-import: a TF1 Object Detection API checkpoint (model zoo) -> a checkpoint of this package.

    mobiledets-import --tf1_checkpoint=ssdlite_mobiledet_cpu_320x320_coco_2020_05_19/fp32/model.ckpt-400000 \
        --output=runs/zoo/mobiledet_cpu
    mobiledets-import --tf1_checkpoint=ssdlite_mobilenet_v2_coco_2018_05_09/model.ckpt --output=runs/zoo/mnv2
    mobiledets-import --tf1_checkpoint=ssd_mobilenet_v3_small_coco_2020_01_14/model.ckpt --output=runs/zoo/mnv3s
    mobiledets-import --tf1_checkpoint=.../uint8/model.ckpt-400000 --output=... --print_mapping

The architecture is read from the checkpoint's feature-extractor scope (or --arch), the class count
from its class predictor; --input_size defaults to the zoo model's (320, or 300 for MobileNetV2).
Every Keras weight is looked up by its TF1 name (--print_mapping lists the table); variables a
training checkpoint carries besides the model are listed and ignored. --output then works wherever a
model_dir does: mobiledets-eval, mobiledets-export, mobiledets-train --init_checkpoint.
"""
import sys

from absl import app, flags

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf.arch import ArchSpecError
from mobiledets_tf.tf1_zoo.checkpoint_import import (TF1ImportError, import_tf1_checkpoint,
                                                     save_imported)
from mobiledets_tf.tf1_zoo.variable_names import TF1_EXTRACTORS, UnknownTF1ArchitectureError

TF1_CHECKPOINT = flags.DEFINE_string("tf1_checkpoint", None,
                                     "TF1 checkpoint prefix (.../model.ckpt-400000) or its folder.")
OUTPUT = flags.DEFINE_string("output", None, "Folder to write the imported checkpoint and config to.")
ARCH = flags.DEFINE_enum("arch", None, sorted(TF1_EXTRACTORS),
                         "Architecture (default: read from the checkpoint's variable names).")
INPUT_SIZE = flags.DEFINE_integer("input_size", None, "Input size (default: the zoo model's).")
PRINT_MAPPING = flags.DEFINE_bool("print_mapping", False,
                                  "Print the Keras weight -> TF1 variable table and the ignored variables.")


def main(argv):
    del argv
    if not TF1_CHECKPOINT.value or not (OUTPUT.value or PRINT_MAPPING.value):
        sys.exit("mobiledets-import: give --tf1_checkpoint and --output (or --print_mapping)")
    try:
        detector, report = import_tf1_checkpoint(TF1_CHECKPOINT.value, ARCH.value, INPUT_SIZE.value)
    except (TF1ImportError, UnknownTF1ArchitectureError, ArchSpecError, ValueError) as e:
        sys.exit(f"mobiledets-import: {e}")
    if PRINT_MAPPING.value:
        width = max(len(keras) for keras, _ in report.mapping)
        for keras, tf1 in report.mapping:
            print(f"{keras:<{width}}  <-  {tf1}")
    print(f"{report.tf1_checkpoint}: {report.arch}, {report.input_size}x{report.input_size}, "
          f"{report.num_classes} classes; {len(report.mapping)} variables imported, "
          f"{len(report.ignored)} ignored:")
    for name, reason in report.ignored.items():
        print(f"  ignored {name} ({reason})")
    if OUTPUT.value:
        prefix = save_imported(detector, report, OUTPUT.value)
        print(f"checkpoint: {prefix}")
        print(f"config: {OUTPUT.value}/config.yaml (set data.train_pattern / data.val_pattern with "
              f"--override to train or evaluate)")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
