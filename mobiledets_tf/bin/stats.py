"""mobiledets-stats: multiply-adds and parameter counts of SSDLite detectors, per part.

    mobiledets-stats --arch=mobiledet_cpu --input_size=320 --num_classes=90 [--json]
    mobiledets-stats --arch=all            # every architecture under configs/architectures/
"""
import json
import sys

from absl import app, flags

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf.arch import ArchSpecError, available_architectures
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.stats import PARTS, model_stats

ARCH = flags.DEFINE_string("arch", None, "Architecture name, ArchSpec path, comma-separated list, or 'all'.")
INPUT_SIZE = flags.DEFINE_integer("input_size", 320, "Square input size (at least 33 pixels).")
NUM_CLASSES = flags.DEFINE_integer("num_classes", 90, "Number of object classes (background excluded).")
DEPTH_MULTIPLIER = flags.DEFINE_float("depth_multiplier", 1.0, "Width multiplier of backbone and head.")
AS_JSON = flags.DEFINE_bool("json", False, "Print JSON instead of a table.")
flags.mark_flag_as_required("arch")

ROWS = [*PARTS, "total"]


def arch_names(value: str):
    return available_architectures() if value == "all" else [a for a in value.split(",") if a]


def format_table(name: str, stats) -> str:
    lines = [f"{name}", f"  {'part':<14}{'multiply-adds':>16}{'params':>14}{'trainable':>14}"]
    for part in ROWS:
        s = stats[part]
        lines.append(f"  {part:<14}{s['madds'] / 1e9:>14.3f} B{s['params'] / 1e6:>12.3f} M"
                     f"{s['trainable_params'] / 1e6:>12.3f} M")
    return "\n".join(lines)


def main(argv):
    del argv
    results = {}
    for name in arch_names(ARCH.value):
        try:
            detector = SSDLiteDetector(name, num_classes=NUM_CLASSES.value,
                                       input_size=INPUT_SIZE.value,
                                       depth_multiplier=DEPTH_MULTIPLIER.value)
        except (ArchSpecError, ValueError) as e:
            sys.exit(f"mobiledets-stats: {e}")
        results[detector.arch.name] = model_stats(detector.model)
        if not AS_JSON.value:
            print(format_table(f"{detector.arch.name} @ {INPUT_SIZE.value}x{INPUT_SIZE.value}, "
                               f"{NUM_CLASSES.value} classes", results[detector.arch.name]), flush=True)
    if AS_JSON.value:
        single = len(results) == 1
        print(json.dumps(next(iter(results.values())) if single else results, indent=2))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
