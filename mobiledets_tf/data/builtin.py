"""The built-in dataset, ready to train on: shapes images converted to checked TFRecords, cached.

`builtin_dataset()` draws the train and validation splits of the shapes dataset (`shapes.py`; the
two splits use different seeds derived from `seed`), converts each with `coco_to_tfrecords` (so the
built-in data goes through the same checked path as user data) and returns where everything is.

Layout under `root`:

    raw/train/*.jpg, raw/train.json      the drawn images and their COCO annotations
    raw/val/*.jpg,   raw/val.json        (val.json is the ground truth for COCO evaluation)
    tfrecords/train-0000i-of-0000N.tfrecord, train.label_map.{json,pbtxt}, train.report.json
    tfrecords/val-0000i-of-0000N.tfrecord,   val.label_map.{json,pbtxt},   val.report.json
    manifest.json                        the parameters; written last, atomically

`root` defaults to `$MOBILEDETS_DATA_DIR/shapes-<hash of the parameters>`, or
`~/.cache/mobiledets_tf/shapes-<hash>` when that variable is not set. A directory whose manifest
exists, matches the parameters and whose files all exist is complete and reused as is; any other
(e.g. a killed generation) is regenerated: `raw/` and `tfrecords/` are deleted and rewritten. A file
lock on `root/.lock` makes concurrent callers (several workers on one machine) wait for one another.

Defaults (`DEFAULT_*`, and `shapes.ObjectLayout()`): 4000 training and 400 validation images of
320x320 (1 to 5 objects of 12% to 60% of the image side, about 3.5 per image), in 4 shards per
split. Generating them took 31 s on a shared 2-core machine and takes 256 MB (half JPEGs, half
TFRecords).
"""
import dataclasses
import fcntl
import hashlib
import json
import os
import time
from typing import List, Optional

import numpy as np
from absl import logging

from mobiledets_tf import fileio
from mobiledets_tf.data import shapes
from mobiledets_tf.data.coco_to_tfrecords import (convert_coco_to_tfrecords, label_map_paths,
                                                  shard_path, shard_pattern)
from mobiledets_tf.data.label_map import num_classes as label_map_num_classes
from mobiledets_tf.data.label_map import read_label_map

DEFAULT_NUM_TRAIN = 4000
DEFAULT_NUM_VAL = 400
DEFAULT_IMAGE_SIZE = 320
DEFAULT_NUM_SHARDS = 4
SPLITS = ("train", "val")
MANIFEST = "manifest.json"
ENV_VAR = "MOBILEDETS_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class BuiltinDataset:
    train_pattern: str          # glob of the training TFRecords
    val_pattern: str            # glob of the validation TFRecords
    val_annotations: str        # COCO JSON of the validation split (ground truth for evaluation)
    label_map_path: str         # label_map.json (a .pbtxt with the same stem sits next to it)
    num_classes: int            # the largest category id
    class_names: List[str]      # names in id order
    root: str
    params: dict


def split_seed(seed: int, split: str) -> int:
    """The seed of one split, derived from the dataset seed (so train and val never share images)."""
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split)]).generate_state(1)[0])


def _params(num_train, num_val, image_size, seed, num_shards, layout: shapes.ObjectLayout) -> dict:
    return {"generator_version": shapes.GENERATOR_VERSION, "num_train": int(num_train),
            "num_val": int(num_val), "image_size": int(image_size), "seed": int(seed),
            "num_shards": int(num_shards), "min_object_size": float(layout.min_size),
            "max_object_size": float(layout.max_size), "max_objects": int(layout.max_objects)}


def _layout(params: dict) -> shapes.ObjectLayout:
    return shapes.ObjectLayout(params["min_object_size"], params["max_object_size"], params["max_objects"])


def default_root(params: dict) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    base = os.environ.get(ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache", "mobiledets_tf")
    return os.path.join(base, f"shapes-{digest}")


def _expected_files(root: str, params: dict) -> List[str]:
    files = []
    for split in SPLITS:
        prefix = os.path.join(root, "tfrecords", split)
        files += [shard_path(prefix, i, params["num_shards"]) for i in range(params["num_shards"])]
        files += label_map_paths(prefix) + [os.path.join(root, "raw", f"{split}.json")]
    return files


def _is_complete(root: str, params: dict) -> bool:
    try:
        manifest = json.loads(fileio.read_text(os.path.join(root, MANIFEST)))
    except (OSError, ValueError):
        return False
    return manifest.get("params") == params and all(fileio.isfile(p) for p in _expected_files(root, params))


def _dataset(root: str, params: dict) -> BuiltinDataset:
    tfrecords = os.path.join(root, "tfrecords")
    label_map_path = label_map_paths(os.path.join(tfrecords, "train"))[0]
    label_map = read_label_map(label_map_path)
    return BuiltinDataset(
        train_pattern=shard_pattern(os.path.join(tfrecords, "train"), params["num_shards"]),
        val_pattern=shard_pattern(os.path.join(tfrecords, "val"), params["num_shards"]),
        val_annotations=os.path.join(root, "raw", "val.json"),
        label_map_path=label_map_path,
        num_classes=label_map_num_classes(label_map),
        class_names=[c.name for c in label_map],
        root=root, params=params)


def _generate(root: str, params: dict) -> None:
    start = time.time()
    manifest_path = os.path.join(root, MANIFEST)
    fileio.remove(manifest_path)
    for sub in ("raw", "tfrecords"):
        fileio.rmtree(os.path.join(root, sub))
    reports = {}
    for split in SPLITS:
        raw = os.path.join(root, "raw")
        annotations = shapes.generate_shapes(raw, split, params[f"num_{split}"], split_seed(params["seed"], split),
                                             image_size=params["image_size"], layout=_layout(params))
        report = convert_coco_to_tfrecords(annotations, shapes.image_dir(raw, split),
                                           os.path.join(root, "tfrecords", split),
                                           num_shards=params["num_shards"])
        if report.problems:  # the generator draws clean data: any problem is worth a look
            logging.warning("built-in dataset %s: unexpected conversion problems:\n%s", split, report.summary())
        reports[split] = {"images": report.num_images_written, "boxes": report.num_boxes_written}
    seconds = time.time() - start
    manifest = {"dataset": "mobiledets_tf built-in shapes", "params": params, "splits": reports,
                "class_names": list(shapes.CLASS_NAMES), "generation_seconds": round(seconds, 1)}
    fileio.write_text_atomically(manifest_path, json.dumps(manifest, indent=1) + "\n")
    logging.info("Generated the built-in dataset in %s in %.1f s", root, seconds)


def builtin_dataset(root: Optional[str] = None, num_train: int = DEFAULT_NUM_TRAIN,
                    num_val: int = DEFAULT_NUM_VAL, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0,
                    num_shards: int = DEFAULT_NUM_SHARDS,
                    layout: shapes.ObjectLayout = shapes.ObjectLayout()) -> BuiltinDataset:
    """Returns the built-in dataset, generating it under `root` unless a complete copy is there.

    `layout`: how many objects each image holds and how large they are (the default: 1-5 objects of
    12-60% of the image side; smaller and more objects make a harder dataset)."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train} and {num_val}")
    params = _params(num_train, num_val, image_size, seed, num_shards, layout)
    root = fileio.absolute(root or default_root(params))
    fileio.makedirs(root)
    with open(os.path.join(root, ".lock"), "w") as lock:   # a local file: the cache is a local folder
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _is_complete(root, params):
                logging.info("Generating the built-in shapes dataset in %s", root)
                _generate(root, params)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _dataset(root, params)
