"""Converts a COCO-format detection dataset (JSON + image folder) to checked, sharded TFRecords.

Every image and annotation is checked, and every problem is reported as a `Problem`; nothing is
dropped silently. Kinds of problem and what happens to the item:

| kind                | severity | what happens                                                       |
|---------------------|----------|--------------------------------------------------------------------|
| unreadable_image    | error    | missing file, not an image, corrupt or truncated data              |
| zero_area_box       | error    | box width or height <= 0 (after clipping to the image)             |
| invalid_box         | error    | box coordinates that are not finite numbers                        |
| unknown_category    | error    | category id not in 'categories'                                    |
| unknown_image_id    | error    | annotation whose image_id is not in 'images'                       |
| size_mismatch       | warning  | JSON width/height differ from the decoded image: the decoded size  |
|                     |          | is used (boxes are taken as pixels of the decoded image)           |
| box_outside_image   | warning  | box extends past the image: clipped to it                          |
| crowd               | info     | iscrowd=1 annotation: kept with is_crowd=1 (training ignores it)   |
| no_annotations      | info     | image without boxes: kept as a negative example                    |
| converted_image     | info     | not an RGB JPEG (PNG, grayscale, CMYK, RGBA, palette, 16-bit...):  |
|                     |          | converted to RGB (alpha composited over white, first frame of an   |
|                     |          | animation) and re-encoded as JPEG quality 95                       |

Errors make the conversion fail (`ConversionError`, whose message lists every problem) unless
`skip_invalid=True`, in which case the unreadable image, or the offending annotation, is skipped and
reported. A malformed annotation file (bad JSON, missing 'images'/'annotations'/'categories', wrong
types, duplicate ids) raises `DatasetFormatError` naming the file, before anything is written.

Files written for `output_prefix` P (all atomically: under a temporary name in the same directory,
renamed with `fileio.rename` only once the whole conversion succeeded; a failed or killed conversion
leaves no file under these names). P, the annotation file and the image directory may be local paths
or URLs (`gs://...`):

    P-00000-of-0000N.tfrecord ...   the records, images sorted by id, dealt round-robin over shards
    P.label_map.json                the categories, [{"id": 1, "name": ...}, ...]
    P.label_map.pbtxt               the same as an Object Detection API label map
    P.report.json                   counts per kind and the full problem list (written last)

Shards of an earlier conversion to the same prefix with another shard count are removed after a
successful conversion, so `P-*.tfrecord` always means this conversion's records.

tf-models-official's `official/vision/data/create_coco_tf_record.py` does the COCO->TFRecord step,
but silently skips degenerate and out-of-image boxes, does not check images, and writes shards in
place; this module keeps its record format (through `example_format`) and adds the checks.
"""
import collections
import dataclasses
import glob
import io
import json
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging
from PIL import Image, ImageSequence, UnidentifiedImageError

import mobiledets_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
import tensorflow as tf
from mobiledets_tf import fileio
from mobiledets_tf.data import label_map as label_map_lib
from mobiledets_tf.data.example_format import make_detection_example
from mobiledets_tf.progress import progress_bar

ERROR, WARNING, INFO = "error", "warning", "info"
PROBLEM_KINDS = {
    "unreadable_image": ERROR,
    "zero_area_box": ERROR,
    "invalid_box": ERROR,
    "unknown_category": ERROR,
    "unknown_image_id": ERROR,
    "size_mismatch": WARNING,
    "box_outside_image": WARNING,
    "crowd": INFO,
    "no_annotations": INFO,
    "converted_image": INFO,
}
_SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}
JPEG_QUALITY = 95


class DatasetFormatError(ValueError):
    """The annotation file itself is malformed; the message names the file and the field."""


class ConversionError(ValueError):
    """The dataset has errors and `skip_invalid` was not set; `.report` holds every problem."""

    def __init__(self, report: "ConversionReport"):
        super().__init__(report.summary(max_listed_per_kind=None))
        self.report = report


@dataclasses.dataclass(frozen=True)
class Problem:
    kind: str
    image_file: Optional[str]
    image_id: Optional[int]
    annotation_id: Optional[int]
    message: str

    def __post_init__(self):
        if self.kind not in PROBLEM_KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")

    @property
    def severity(self) -> str:
        return PROBLEM_KINDS[self.kind]

    def where(self) -> str:
        parts = []
        if self.image_id is not None:
            parts.append(f"image {self.image_id}")
        if self.annotation_id is not None:
            parts.append(f"annotation {self.annotation_id}")
        return f"{self.image_file or '-'} ({', '.join(parts)})" if parts else (self.image_file or "-")

    def __str__(self) -> str:
        return f"{self.severity.upper():<8}{self.kind:<18} {self.where()}: {self.message}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "severity": self.severity, "image_file": self.image_file,
                "image_id": self.image_id, "annotation_id": self.annotation_id, "message": self.message}


@dataclasses.dataclass
class ConversionReport:
    annotations_path: str
    image_dir: str
    output_prefix: str
    num_shards: int
    skip_invalid: bool
    num_images_in_json: int = 0
    num_annotations_in_json: int = 0
    num_images_written: int = 0
    num_boxes_written: int = 0
    num_images_skipped: int = 0
    num_annotations_skipped: int = 0
    problems: List[Problem] = dataclasses.field(default_factory=list)
    shard_paths: List[str] = dataclasses.field(default_factory=list)
    label_map_paths: List[str] = dataclasses.field(default_factory=list)
    report_path: Optional[str] = None
    removed_stale_shards: List[str] = dataclasses.field(default_factory=list)
    failed: bool = False

    def counts(self) -> Dict[str, int]:
        """Number of problems of every kind (kinds that did not occur count 0)."""
        counter = collections.Counter(p.kind for p in self.problems)
        return {kind: counter.get(kind, 0) for kind in PROBLEM_KINDS}

    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    def summary(self, max_listed_per_kind: Optional[int] = 20) -> str:
        """A human-readable summary: totals, counts per kind, then the problems.

        Errors and warnings are always all listed; info items are listed up to
        `max_listed_per_kind` per kind (None: all), the rest are in the JSON report.
        """
        lines = []
        name = os.path.basename(self.annotations_path)
        if self.failed:
            lines.append(f"FAILED: {name}: {len(self.errors())} error(s) in {self.num_images_in_json} "
                         f"images and {self.num_annotations_in_json} annotations; nothing was written. "
                         f"Fix them, or convert with skip_invalid (--skip_invalid) to skip the offending "
                         f"images and annotations.")
        else:
            lines.append(f"Converted {name}: {self.num_images_written} of {self.num_images_in_json} images "
                         f"and {self.num_boxes_written} boxes (of {self.num_annotations_in_json} "
                         f"annotations) into {len(self.shard_paths)} shard(s) "
                         f"{self.output_prefix}-*-of-{self.num_shards:05d}.tfrecord")
            if self.num_images_skipped or self.num_annotations_skipped:
                lines.append(f"Skipped (skip_invalid): {self.num_images_skipped} image(s) and "
                             f"{self.num_annotations_skipped} annotation(s), each listed below.")
            if self.report_path:
                lines.append(f"Report: {self.report_path}")
        counts = {k: v for k, v in self.counts().items() if v}
        if counts:
            by_severity = collections.defaultdict(list)
            for kind, count in counts.items():
                by_severity[PROBLEM_KINDS[kind]].append(f"{count} {kind}")
            titles = {ERROR: "errors", WARNING: "warnings", INFO: "info"}
            lines.append("Problems: " + "; ".join(
                f"{titles[sev]}: {', '.join(by_severity[sev])}" for sev in (ERROR, WARNING, INFO) if by_severity[sev]))
        else:
            lines.append("Problems: none")
        listed = collections.Counter()
        hidden = collections.Counter()
        for p in sorted(self.problems, key=lambda p: _SEVERITY_ORDER[p.severity]):
            if (p.severity == INFO and max_listed_per_kind is not None
                    and listed[p.kind] >= max_listed_per_kind):
                hidden[p.kind] += 1
                continue
            listed[p.kind] += 1
            lines.append("  " + str(p))
        for kind, count in hidden.items():
            lines.append(f"  ... and {count} more {kind} (see the report)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "annotations_path": self.annotations_path, "image_dir": self.image_dir,
            "output_prefix": self.output_prefix, "num_shards": self.num_shards,
            "skip_invalid": self.skip_invalid, "failed": self.failed,
            "num_images_in_json": self.num_images_in_json,
            "num_annotations_in_json": self.num_annotations_in_json,
            "num_images_written": self.num_images_written, "num_boxes_written": self.num_boxes_written,
            "num_images_skipped": self.num_images_skipped,
            "num_annotations_skipped": self.num_annotations_skipped,
            "shards": self.shard_paths, "label_maps": self.label_map_paths,
            "removed_stale_shards": self.removed_stale_shards,
            "counts": self.counts(), "problems": [p.to_dict() for p in self.problems],
        }


def shard_path(output_prefix: str, index: int, num_shards: int) -> str:
    return f"{output_prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def shard_pattern(output_prefix: str, num_shards: int) -> str:
    """The glob of the shards a conversion with `num_shards` writes."""
    return f"{glob.escape(output_prefix)}-*-of-{num_shards:05d}.tfrecord"


def label_map_paths(output_prefix: str) -> List[str]:
    return [f"{output_prefix}.label_map.json", f"{output_prefix}.label_map.pbtxt"]


def report_path(output_prefix: str) -> str:
    return f"{output_prefix}.report.json"


# ----------------------------------------------------------------------------- annotation file


@dataclasses.dataclass
class CocoDataset:
    """A validated COCO annotation file: images sorted by id, annotations grouped by image id."""
    path: str
    images: List[dict]
    annotations_by_image: Dict[int, List[dict]]
    orphan_annotations: List[dict]
    label_map: label_map_lib.LabelMap
    num_annotations: int


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def load_coco_annotations(path: str) -> CocoDataset:
    """Reads and validates the structure of a COCO detection annotation file.

    Raises DatasetFormatError naming the file (and the JSON position, or the list and index of the
    offending entry and its field).
    """
    try:
        raw = fileio.read_bytes(path)
    except OSError as e:
        raise DatasetFormatError(f"{path}: cannot read annotation file: {e.strerror}") from e
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path}: invalid JSON at line {e.lineno} column {e.colno} "
                                 f"(char {e.pos}): {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{path}: not UTF-8 text at byte {e.start}: {e.reason}") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(f"{path}: the top level must be a JSON object with 'images', "
                                 f"'annotations' and 'categories', got a {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DatasetFormatError(f"{path}: missing key(s) {', '.join(repr(k) for k in missing)} "
                                 f"(a COCO detection file has 'images', 'annotations' and 'categories')")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DatasetFormatError(f"{path}: '{key}' must be a list, got a {type(data[key]).__name__}")

    def bad(key, i, entry, msg):
        ident = f" (id {entry['id']})" if isinstance(entry, dict) and _is_int(entry.get("id")) else ""
        return DatasetFormatError(f"{path}: {key}[{i}]{ident}: {msg}")

    def require(key, i, entry, field, check, expected):
        if field not in entry:
            raise bad(key, i, entry, f"missing field '{field}'")
        if not check(entry[field]):
            raise bad(key, i, entry, f"field '{field}' must be {expected}, got {entry[field]!r}")

    categories = []
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict):
            raise bad("categories", i, cat, f"must be an object, got {cat!r}")
        require("categories", i, cat, "id", lambda v: _is_int(v) and v >= 1, "an integer >= 1")
        require("categories", i, cat, "name", lambda v: isinstance(v, str) and v, "a non-empty string")
        categories.append((int(cat["id"]), cat["name"]))
    if not categories:
        raise DatasetFormatError(f"{path}: 'categories' is empty")
    try:
        label_map = label_map_lib.make_label_map(categories, source=f"{path}: 'categories'")
    except label_map_lib.LabelMapError as e:
        raise DatasetFormatError(str(e)) from None

    images, seen_images = [], {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise bad("images", i, img, f"must be an object, got {img!r}")
        require("images", i, img, "id", _is_int, "an integer")
        require("images", i, img, "file_name", lambda v: isinstance(v, str) and v, "a non-empty string")
        for field in ("width", "height"):
            if field in img and not (_is_int(img[field]) and img[field] > 0):
                raise bad("images", i, img, f"field '{field}' must be a positive integer, got {img[field]!r}")
        if img["id"] in seen_images:
            raise bad("images", i, img, f"image id {img['id']} also used by images[{seen_images[img['id']]}]")
        seen_images[img["id"]] = i
        images.append(img)
    images.sort(key=lambda img: img["id"])

    by_image, orphans, seen_anns = collections.defaultdict(list), [], {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise bad("annotations", i, ann, f"must be an object, got {ann!r}")
        require("annotations", i, ann, "id", _is_int, "an integer")
        require("annotations", i, ann, "image_id", _is_int, "an integer")
        require("annotations", i, ann, "category_id", _is_int, "an integer")
        require("annotations", i, ann, "bbox",
                lambda v: isinstance(v, list) and len(v) == 4 and all(_is_number(x) for x in v),
                "a list of 4 numbers [x, y, width, height]")
        if "iscrowd" in ann and not (_is_int(ann["iscrowd"]) and ann["iscrowd"] in (0, 1)):
            raise bad("annotations", i, ann, f"field 'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")
        if "area" in ann and not _is_number(ann["area"]):
            raise bad("annotations", i, ann, f"field 'area' must be a number, got {ann['area']!r}")
        if ann["id"] in seen_anns:
            raise bad("annotations", i, ann,
                      f"annotation id {ann['id']} also used by annotations[{seen_anns[ann['id']]}]")
        seen_anns[ann["id"]] = i
        (by_image[ann["image_id"]] if ann["image_id"] in seen_images else orphans).append(ann)
    for anns in by_image.values():
        anns.sort(key=lambda a: a["id"])
    orphans.sort(key=lambda a: a["id"])
    return CocoDataset(path=path, images=images, annotations_by_image=dict(by_image),
                       orphan_annotations=orphans, label_map=label_map,
                       num_annotations=len(data["annotations"]))


# ----------------------------------------------------------------------------- images


class _UnreadableImage(Exception):
    pass


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB version of a decoded PIL image: alpha composited over white, 16/32-bit scaled to 8 bits."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        array = np.asarray(image, dtype=np.float64)
        scale = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        image = Image.fromarray(np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def read_image_for_record(path: str):
    """Reads and checks an image file; returns (jpeg bytes, width, height, conversion note or None).

    RGB JPEGs are kept byte for byte (and checked to decode in TensorFlow too); anything else is
    converted to RGB and re-encoded as JPEG quality 95. Raises _UnreadableImage with the reason.
    """
    if not fileio.isfile(path):
        raise _UnreadableImage("file not found")
    try:
        data = fileio.read_bytes(path)
    except OSError as e:
        raise _UnreadableImage(f"cannot read file: {e.strerror}") from None
    if not data:
        raise _UnreadableImage("empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise _UnreadableImage("not an image (Pillow cannot identify the format)") from None
    except Exception as e:  # noqa: BLE001  (Pillow raises many types on bad headers)
        raise _UnreadableImage(f"cannot open image: {e}") from None
    fmt = image.format
    try:
        frames = getattr(image, "n_frames", 1)
        image.load()
    except Exception as e:  # noqa: BLE001  (truncated / corrupt data: OSError, SyntaxError, ValueError...)
        raise _UnreadableImage(f"corrupt or truncated {fmt} data: {e}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise _UnreadableImage(f"image has size {width}x{height}")
    if fmt == "JPEG" and image.mode == "RGB":
        try:
            shape = tf.io.decode_jpeg(data, channels=3).shape
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            raise _UnreadableImage(f"TensorFlow cannot decode the JPEG: {e.message}") from None
        if tuple(shape[:2]) != (height, width):
            raise _UnreadableImage(f"TensorFlow decodes it as {shape[1]}x{shape[0]}, Pillow as {width}x{height}")
        return data, width, height, None
    note = f"{fmt} {image.mode} image"
    if frames > 1:
        note += f" with {frames} frames (the first one is used)"
        image = next(iter(ImageSequence.Iterator(image)))
    rgb = _to_rgb(image)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), width, height, f"{note} converted to RGB JPEG (quality {JPEG_QUALITY})"


# ----------------------------------------------------------------------------- conversion


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(finals: Sequence[str]) -> None:
    """Removes `{final}.{pid}.tmp` files left by a killed conversion (whose process is gone).

    In a bucket, which other machines may be writing to, they are only reported: a pid names a
    process of one machine, so whether the writer is gone cannot be told from here."""
    for final in finals:
        for tmp in fileio.glob(f"{glob.escape(final)}.*.tmp"):
            pid = tmp[len(final) + 1:-len(".tmp")]
            if fileio.is_remote(tmp):
                logging.warning("%s may be left by a conversion that was stopped; delete it if no "
                                "other machine is converting to this prefix", tmp)
            elif pid.isdigit() and not _process_is_running(int(pid)):
                logging.info("Removing %s, left by a conversion that was stopped", tmp)
                fileio.remove(tmp)


def _check_annotations(anns, image, width, height, category_names, problems):
    """Checks one image's annotations; returns the kept objects and the number of errors."""
    file_name, image_id = image["file_name"], image["id"]
    kept, num_errors = [], 0
    for ann in anns:
        def problem(kind, message):
            problems.append(Problem(kind, file_name, image_id, ann["id"], message))

        cid = ann["category_id"]
        if cid not in category_names:
            problem("unknown_category", f"category id {cid} is not in 'categories'")
            num_errors += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            problem("invalid_box", f"bbox {ann['bbox']} has non-finite values")
            num_errors += 1
            continue
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
        if w <= 0 or h <= 0:
            problem("zero_area_box", f"bbox [x, y, w, h] = {ann['bbox']} has zero area (w or h <= 0)")
            num_errors += 1
            continue
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            problem("zero_area_box", f"bbox [x, y, w, h] = {ann['bbox']} lies entirely outside the "
                                     f"{width}x{height} image (zero area after clipping)")
            num_errors += 1
            continue
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            problem("box_outside_image",
                    f"bbox [x, y, w, h] = {ann['bbox']} extends past the {width}x{height} image; clipped to "
                    f"[{x0:g}, {y0:g}, {x1 - x0:g}, {y1 - y0:g}]")
        is_crowd = int(ann.get("iscrowd", 0))
        if is_crowd:
            problem("crowd", "iscrowd=1: kept with is_crowd=1 (ignored by training)")
        area = float(ann["area"]) if "area" in ann else (x1 - x0) * (y1 - y0)
        kept.append(((y0 / height, x0 / width, y1 / height, x1 / width), cid, category_names[cid],
                     is_crowd, area))
    return kept, num_errors


def convert_coco_to_tfrecords(annotations_path: str, image_dir: str, output_prefix: str,
                              num_shards: int = 1, skip_invalid: bool = False) -> ConversionReport:
    """Converts COCO JSON + images to `{output_prefix}-XXXXX-of-NNNNN.tfrecord` shards.

    Returns the ConversionReport (also written to `{output_prefix}.report.json`). Raises
    DatasetFormatError for a malformed annotation file and ConversionError when the dataset has
    errors and `skip_invalid` is False; in both cases no file is left under a final output name.
    """
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    dataset = load_coco_annotations(annotations_path)
    if not fileio.isdir(image_dir):
        raise DatasetFormatError(f"{image_dir}: image directory not found (images of {annotations_path})")
    output_prefix = fileio.absolute(output_prefix)
    report = ConversionReport(annotations_path=annotations_path, image_dir=image_dir,
                              output_prefix=output_prefix, num_shards=num_shards, skip_invalid=skip_invalid,
                              num_images_in_json=len(dataset.images),
                              num_annotations_in_json=dataset.num_annotations)
    problems = report.problems
    for ann in dataset.orphan_annotations:
        problems.append(Problem("unknown_image_id", None, ann["image_id"], ann["id"],
                                f"image_id {ann['image_id']} is not in 'images'"))
        report.num_annotations_skipped += 1
    category_names = {c.id: c.name for c in dataset.label_map}

    out_dir = os.path.dirname(output_prefix)
    fileio.makedirs(out_dir)
    finals = [shard_path(output_prefix, i, num_shards) for i in range(num_shards)]
    finals += label_map_paths(output_prefix) + [report_path(output_prefix)]
    temps = {final: fileio.temp_path(final) for final in finals}
    _remove_stale_temporaries(finals)
    shard_finals = finals[:num_shards]
    writers = []
    has_errors = bool(dataset.orphan_annotations)
    try:
        writers = [tf.io.TFRecordWriter(temps[p]) for p in shard_finals]
        record_index = 0
        for image in progress_bar(dataset.images, desc=f"converting {os.path.basename(annotations_path)}",
                                  unit="img"):
            file_name, image_id = image["file_name"], image["id"]
            anns = dataset.annotations_by_image.get(image_id, [])
            try:
                encoded, width, height, note = read_image_for_record(os.path.join(image_dir, file_name))
            except _UnreadableImage as e:
                problems.append(Problem("unreadable_image", file_name, image_id, None,
                                        f"{e}" + (f"; skipped with its annotation(s) "
                                                  f"{', '.join(str(a['id']) for a in anns)}"
                                                  if anns and skip_invalid else "")))
                has_errors = True
                report.num_images_skipped += 1
                report.num_annotations_skipped += len(anns)
                continue
            if note:
                problems.append(Problem("converted_image", file_name, image_id, None, note))
            json_size = (image.get("width"), image.get("height"))
            if json_size != (None, None) and json_size != (width, height):
                problems.append(Problem(
                    "size_mismatch", file_name, image_id, None,
                    f"JSON says {json_size[0]}x{json_size[1]}, the image is {width}x{height}; using "
                    f"{width}x{height} (boxes are taken as pixels of the decoded image)"))
            kept, num_errors = _check_annotations(anns, image, width, height, category_names, problems)
            has_errors = has_errors or num_errors > 0
            report.num_annotations_skipped += num_errors
            if not kept:
                message = ("no annotations: kept as a negative example" if not anns else
                           f"all {len(anns)} annotation(s) have errors (listed separately); the image "
                           f"is kept as a negative example")
                problems.append(Problem("no_annotations", file_name, image_id, None, message))
            if has_errors and not skip_invalid:
                continue  # the conversion will fail: only keep checking
            example = make_detection_example(
                encoded_image=encoded, image_format="jpeg", height=height, width=width, filename=file_name,
                source_id=image_id, boxes=[k[0] for k in kept], classes=[k[1] for k in kept],
                class_texts=[k[2] for k in kept], is_crowd=[k[3] for k in kept], areas=[k[4] for k in kept])
            writers[record_index % num_shards].write(example.SerializeToString())
            record_index += 1
            report.num_images_written += 1
            report.num_boxes_written += len(kept)
        for w in writers:
            w.close()
        writers = []

        if has_errors and not skip_invalid:
            report.failed = True
            report.num_images_written = report.num_boxes_written = 0
            report.num_images_skipped = report.num_annotations_skipped = 0
            raise ConversionError(report)

        report.shard_paths = shard_finals
        report.label_map_paths = label_map_paths(output_prefix)
        report.report_path = report_path(output_prefix)
        report.removed_stale_shards = sorted(
            p for p in fileio.glob(f"{glob.escape(output_prefix)}-[0-9][0-9][0-9][0-9][0-9]-of-"
                                 f"[0-9][0-9][0-9][0-9][0-9].tfrecord")
            if p not in shard_finals)
        json_map, pbtxt_map = report.label_map_paths
        for path, text in ((json_map, label_map_lib.label_map_to_json(dataset.label_map)),
                           (pbtxt_map, label_map_lib.label_map_to_pbtxt(dataset.label_map)),
                           (report.report_path, json.dumps(report.to_dict(), indent=1) + "\n")):
            with fileio.open_file(temps[path], "w") as f:
                f.write(text)
        for final in finals:  # the report last: its presence marks a complete conversion
            fileio.rename(temps[final], final)
        for stale in report.removed_stale_shards:
            logging.info("Removing %s (a shard of an earlier conversion to the same prefix)", stale)
            fileio.remove(stale)
    finally:
        for w in writers:
            w.close()
        for tmp in temps.values():
            fileio.remove(tmp)
    return report
