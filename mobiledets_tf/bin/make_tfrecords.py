"""mobiledets-make-tfrecords: convert a COCO-format dataset to checked, sharded TFRecords.

    mobiledets-make-tfrecords --annotations=instances_train.json --images=train_images/ \\
        --output=/data/tfrecords/train --num_shards=8 [--skip_invalid]

Writes /data/tfrecords/train-00000-of-00008.tfrecord ..., train.label_map.json,
train.label_map.pbtxt and train.report.json (see `mobiledets_tf.data.coco_to_tfrecords`), and prints a
summary of every problem found. If the dataset has errors (unreadable images, zero-area boxes,
unknown categories) and --skip_invalid is not given, nothing is written, the summary lists every
problem and the exit code is 1; with --skip_invalid the offending images and annotations are skipped
and listed. A malformed annotation file also exits with code 1 and a message naming the file.
"""
import sys

from absl import app, flags

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from mobiledets_tf.data.coco_to_tfrecords import (ConversionError, DatasetFormatError,
                                                  convert_coco_to_tfrecords)

ANNOTATIONS = flags.DEFINE_string("annotations", None, "COCO-format annotation JSON file.")
IMAGES = flags.DEFINE_string("images", None, "Directory the JSON's image file_name entries are relative to.")
OUTPUT = flags.DEFINE_string("output", None, "Output prefix: PREFIX-00000-of-0000N.tfrecord, PREFIX.report.json...")
NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Number of TFRecord shards.", lower_bound=1)
SKIP_INVALID = flags.DEFINE_bool("skip_invalid", False,
                                 "Skip (and report) unreadable images and invalid annotations instead of failing.")
for _flag in ("annotations", "images", "output"):
    flags.mark_flag_as_required(_flag)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        report = convert_coco_to_tfrecords(ANNOTATIONS.value, IMAGES.value, OUTPUT.value,
                                           num_shards=NUM_SHARDS.value, skip_invalid=SKIP_INVALID.value)
    except ConversionError as e:
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(1)
    except DatasetFormatError as e:
        print(f"mobiledets-make-tfrecords: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(report.summary(), flush=True)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
