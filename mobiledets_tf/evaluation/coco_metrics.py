"""COCO box metrics for detections from any model (Keras or TFLite): `DetectionEvaluator`, `evaluate_dataset`.

Inputs (numpy arrays or tensors, one batch at a time):
- detections, as the package's postprocess and TFLite models give them: `boxes` [B, M, 4] normalised
  (ymin, xmin, ymax, xmax) relative to the image fed to the model (resized without keeping the aspect
  ratio, so these are also normalised coordinates of the original image), `classes` [B, M] float
  0-based class index (category id = class index + 1), `scores` [B, M], `num_detections` [B]
  (optional: all M slots count when it is absent);
- groundtruth, as a *batched dict padded with class -1* (Model Garden's `TfExampleDecoder` output,
  batched with `padded_batch(..., padding_values=-1)`; padding with 0 works too): `source_id` [B]
  (COCO image id, int or numeric string), `height` [B], `width` [B] (original pixels),
  `groundtruth_boxes` [B, N, 4] normalised yxyx, `groundtruth_classes` [B, N] category ids (entries
  <= 0 are padding), optional `groundtruth_is_crowd` [B, N] and `groundtruth_area` [B, N] (pixels;
  box area when absent). Other keys are ignored.

What is reused from Model Garden (`official.vision.evaluation.coco_utils`): `COCOWrapper` (the
groundtruth COCO object from an annotation file or from an in-memory dataset, and `loadRes`),
`convert_groundtruths_to_coco_dataset` and `convert_predictions_to_coco_annotations`; pycocotools'
`COCOeval` computes the numbers. `coco_evaluator.COCOEvaluator` itself is not wrapped because, with
the PyPI pycocotools, (1) its `per_category_metrics` silently yields nothing (it reads
`COCOeval.category_stats`, which only Google's fork of pycocotools has), (2) it turns every slot of
the zero-padded detection tensors into a detection, ignoring `num_detections`, and (3) it prints
the summary to stdout. The COCOeval driver below is the few lines that remain, plus per-class AP
read from `COCOeval.eval['precision']`.
"""
import contextlib
import io
import json
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
from absl import logging
from pycocotools import cocoeval

from mobiledets_tf import fileio

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")
MAX_DETECTIONS_PER_IMAGE = 100  # COCO's standard; the last maxDets of COCOeval ("ARmax100").

GROUNDTRUTH_KEYS = ("source_id", "height", "width", "groundtruth_boxes", "groundtruth_classes",
                    "groundtruth_is_crowd", "groundtruth_area")
REQUIRED_GROUNDTRUTH_KEYS = GROUNDTRUTH_KEYS[:5]
DETECTION_KEYS = ("boxes", "classes", "scores", "num_detections")
REQUIRED_DETECTION_KEYS = DETECTION_KEYS[:3]

LabelMap = Union[Sequence[Mapping[str, Any]], Sequence[Sequence[Any]], Mapping[int, str]]


def _coco_utils():
    # Imported on first use: it loads TensorFlow and Model Garden's vision package.
    from official.vision.evaluation import coco_utils
    return coco_utils


def parse_label_map(label_map: LabelMap) -> Dict[int, str]:
    """{category id: name} from `[{"id": 1, "name": "circle"}, ...]`, `[(1, "circle"), ...]` or a dict."""
    if isinstance(label_map, Mapping):
        items = list(label_map.items())
    else:
        items = []
        for i, entry in enumerate(label_map):
            if isinstance(entry, Mapping):
                if "id" not in entry or "name" not in entry:
                    raise ValueError(f"label map entry {i} needs 'id' and 'name', got {dict(entry)}")
                items.append((entry["id"], entry["name"]))
            elif isinstance(entry, (tuple, list)) and len(entry) == 2:
                items.append(tuple(entry))
            else:
                raise ValueError(f"label map entry {i} must be {{'id', 'name'}} or (id, name), got {entry!r}")
    categories: Dict[int, str] = {}
    for cid, name in items:
        if isinstance(cid, bool) or not isinstance(cid, (int, np.integer)) or cid < 1:
            raise ValueError(f"label map: category id must be an integer >= 1, got {cid!r} ({name!r})")
        if not isinstance(name, str) or not name:
            raise ValueError(f"label map: category {cid} needs a non-empty string name, got {name!r}")
        if int(cid) in categories:
            raise ValueError(f"label map: category id {cid} appears twice")
        categories[int(cid)] = name
    if not categories:
        raise ValueError("label map is empty")
    names = list(categories.values())
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"label map: names used by more than one category: {duplicates}")
    return categories


def _to_image_id(source_id: Any) -> int:
    value = source_id.decode() if isinstance(source_id, bytes) else source_id
    try:
        image_id = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"source_id {source_id!r} is not an integer COCO image id") from None
    return image_id


def _as_numpy(batch: Mapping[str, Any], keys: Iterable[str], required: Iterable[str], what: str
              ) -> Dict[str, np.ndarray]:
    if not isinstance(batch, Mapping):
        raise TypeError(f"{what} must be a dict of batched arrays, got {type(batch).__name__}")
    missing = [k for k in required if k not in batch]
    if missing:
        raise ValueError(f"{what} is missing {missing}; it has {sorted(batch)}")
    return {k: np.asarray(batch[k]) for k in keys if k in batch}


def _check_shape(name: str, array: np.ndarray, shape: Sequence[Optional[int]]) -> None:
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        expected = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {expected}, got {list(array.shape)}")


def _take(batch: Dict[str, np.ndarray], n: int) -> Dict[str, np.ndarray]:
    return {k: v[:n] for k, v in batch.items()}


class DetectionEvaluator:
    """Accumulates groundtruth and detections image by image, then computes COCO box metrics.

    With `annotation_file` (a COCO JSON of the split), groundtruth comes from that file and each
    `source_id` must be one of its image ids; only images given detections are evaluated (so a
    subset of the split can be scored). Otherwise groundtruth comes from `add_groundtruth`, and
    every image needs both groundtruth and detections.
    """

    def __init__(self, label_map: LabelMap, annotation_file: Optional[str] = None):
        self._categories = parse_label_map(label_map)
        self._annotation_file = annotation_file
        self._coco_gt = None
        if annotation_file:
            if not fileio.isfile(annotation_file):
                raise FileNotFoundError(f"{annotation_file}: COCO annotation file not found")
            try:
                with contextlib.redirect_stdout(io.StringIO()), fileio.local_copy(annotation_file) as local:
                    self._coco_gt = _coco_utils().COCOWrapper(eval_type="box", annotation_file=local)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{annotation_file}: not a COCO detection annotation file: {e!r}") from e
            for cid, cat in self._coco_gt.cats.items():
                if cid in self._categories and cat.get("name", self._categories[cid]) != self._categories[cid]:
                    raise ValueError(
                        f"{annotation_file}: category {cid} is {cat.get('name')!r} but the label map says "
                        f"{self._categories[cid]!r}")
        self.reset()

    def reset(self) -> None:
        """Forgets everything added (the annotation file stays loaded)."""
        self._groundtruth: Dict[int, Dict[str, np.ndarray]] = {}
        self._detections: Dict[int, Dict[str, np.ndarray]] = {}

    @property
    def num_images(self) -> int:
        """Images given detections so far (the images `evaluate` scores)."""
        return len(self._detections)

    def category_name(self, category_id: int) -> str:
        if category_id in self._categories:
            return self._categories[category_id]
        if self._coco_gt is not None and category_id in self._coco_gt.cats:
            return self._coco_gt.cats[category_id].get("name", str(category_id))
        return str(category_id)

    def add_groundtruth(self, groundtruth: Mapping[str, Any]) -> None:
        """Adds a batched groundtruth dict padded with class -1 (see the module docstring)."""
        if self._annotation_file:
            raise ValueError(f"groundtruth comes from {self._annotation_file}; use add_detections (or add)")
        gt = _as_numpy(groundtruth, GROUNDTRUTH_KEYS, REQUIRED_GROUNDTRUTH_KEYS, "groundtruth")
        batch = gt["source_id"].reshape(-1).shape[0]
        for key in ("source_id", "height", "width"):
            _check_shape(f"groundtruth[{key!r}]", gt[key].reshape(-1), [batch])
        _check_shape("groundtruth['groundtruth_boxes']", gt["groundtruth_boxes"], [batch, None, 4])
        num = gt["groundtruth_boxes"].shape[1]
        for key in ("groundtruth_classes", "groundtruth_is_crowd", "groundtruth_area"):
            if key in gt:
                _check_shape(f"groundtruth[{key!r}]", gt[key], [batch, num])
        for i in range(batch):
            image_id = _to_image_id(gt["source_id"].reshape(-1)[i])
            if image_id in self._groundtruth:
                raise ValueError(f"groundtruth for source_id {image_id} was added twice")
            height, width = float(gt["height"].reshape(-1)[i]), float(gt["width"].reshape(-1)[i])
            if height <= 0 or width <= 0:
                raise ValueError(f"source_id {image_id}: image size must be positive, got {height} x {width}")
            classes = np.rint(gt["groundtruth_classes"][i]).astype(np.int64)
            valid = classes > 0
            boxes = gt["groundtruth_boxes"][i][valid].astype(np.float64)
            if boxes.size and (boxes.min() < -0.01 or boxes.max() > 1.01):
                raise ValueError(
                    f"source_id {image_id}: groundtruth_boxes must be normalised to [0, 1], got values in "
                    f"[{boxes.min():.3f}, {boxes.max():.3f}]")
            boxes = boxes * np.array([height, width, height, width])
            if "groundtruth_area" in gt:
                areas = gt["groundtruth_area"][i][valid].astype(np.float64)
            else:
                areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            if "groundtruth_is_crowd" in gt:
                is_crowd = gt["groundtruth_is_crowd"][i][valid].astype(np.int64)
            else:
                is_crowd = np.zeros(len(boxes), np.int64)
            self._groundtruth[image_id] = dict(
                height=height, width=width, boxes=boxes, classes=classes[valid], areas=areas, is_crowds=is_crowd)

    def add_detections(self, source_ids: Any, heights: Any, widths: Any, detections: Mapping[str, Any]) -> None:
        """Adds one batch of detections (see the module docstring) for images of the given original sizes."""
        det = _as_numpy(detections, DETECTION_KEYS, REQUIRED_DETECTION_KEYS, "detections")
        source_ids = np.asarray(source_ids).reshape(-1)
        heights, widths = np.asarray(heights).reshape(-1), np.asarray(widths).reshape(-1)
        batch = source_ids.shape[0]
        _check_shape("heights", heights, [batch])
        _check_shape("widths", widths, [batch])
        _check_shape("detections['boxes']", det["boxes"], [batch, None, 4])
        slots = det["boxes"].shape[1]
        _check_shape("detections['classes']", det["classes"], [batch, slots])
        _check_shape("detections['scores']", det["scores"], [batch, slots])
        if "num_detections" in det:
            num = det["num_detections"].reshape(-1)
            _check_shape("detections['num_detections']", num, [batch])
        else:
            num = np.full([batch], slots)
        for i in range(batch):
            image_id = _to_image_id(source_ids[i])
            if image_id in self._detections:
                raise ValueError(f"detections for source_id {image_id} were added twice")
            height, width = float(heights[i]), float(widths[i])
            if self._coco_gt is not None:
                if image_id not in self._coco_gt.imgs:
                    raise ValueError(f"source_id {image_id} is not an image of {self._annotation_file}")
                info = self._coco_gt.imgs[image_id]
                if "height" in info and (info["height"], info["width"]) != (height, width):
                    raise ValueError(
                        f"source_id {image_id}: image size {height:g} x {width:g} differs from "
                        f"{info['height']} x {info['width']} in {self._annotation_file}")
            n = int(num[i])
            if not 0 <= n <= slots:
                raise ValueError(f"source_id {image_id}: num_detections {n} is not in [0, {slots}]")
            boxes = det["boxes"][i, :n].astype(np.float64)
            if boxes.size and boxes.max() > 2.0:
                raise ValueError(
                    f"source_id {image_id}: detection boxes must be normalised to [0, 1] (max is "
                    f"{boxes.max():.1f}; pixel coordinates?)")
            boxes = np.clip(boxes, 0.0, 1.0) * np.array([height, width, height, width])
            self._detections[image_id] = dict(
                boxes=boxes,
                categories=np.rint(det["classes"][i, :n]).astype(np.int64) + 1,
                scores=det["scores"][i, :n].astype(np.float64),
                height=height, width=width)

    def add(self, groundtruth: Mapping[str, Any], detections: Mapping[str, Any]) -> None:
        """Adds a groundtruth batch (ignored, but for ids and sizes, with an annotation file) and its detections."""
        gt = _as_numpy(groundtruth, GROUNDTRUTH_KEYS, ("source_id", "height", "width"), "groundtruth")
        if not self._annotation_file:
            self.add_groundtruth(groundtruth)
        self.add_detections(gt["source_id"], gt["height"], gt["width"], detections)

    def _groundtruth_coco(self, image_ids: List[int]):
        missing = [i for i in image_ids if i not in self._groundtruth]
        unscored = sorted(set(self._groundtruth) - set(image_ids))
        if missing or unscored:
            raise ValueError(
                f"every image needs groundtruth and detections: {len(missing)} image(s) have detections but no "
                f"groundtruth (e.g. {missing[:5]}), {len(unscored)} have groundtruth but no detections "
                f"(e.g. {unscored[:5]})")
        records = [self._groundtruth[i] for i in image_ids]
        padded = max([len(r["classes"]) for r in records] + [1])

        def pad(key, shape, dtype):
            out = np.zeros([len(records), padded] + shape, dtype)
            for j, r in enumerate(records):
                out[j, :len(r[key])] = r[key]
            return out

        groundtruths = {
            "source_id": [np.array(image_ids, np.int64)],
            "height": [np.array([r["height"] for r in records])],
            "width": [np.array([r["width"] for r in records])],
            "num_detections": [np.array([len(r["classes"]) for r in records])],
            "boxes": [pad("boxes", [4], np.float64)],
            "classes": [pad("classes", [], np.int64)],
            "areas": [pad("areas", [], np.float64)],
            "is_crowds": [pad("is_crowds", [], np.int64)],
        }
        unknown = sorted({int(c) for r in records for c in r["classes"]} - set(self._categories))
        if unknown:
            raise ValueError(f"groundtruth category ids {unknown} are not in the label map")
        coco_utils = _coco_utils()
        dataset = coco_utils.convert_groundtruths_to_coco_dataset(groundtruths, label_map=self._categories)
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_utils.COCOWrapper(eval_type="box", gt_dataset=dataset)

    def _predictions_coco(self, coco_gt, image_ids: List[int]):
        records = [self._detections[i] for i in image_ids]
        # One pseudo-image row per real detection, so padding slots never become detections.
        predictions = {
            "source_id": [np.concatenate([np.full(len(r["scores"]), i, np.int64)
                                          for i, r in zip(image_ids, records)])],
            "detection_boxes": [np.concatenate([r["boxes"] for r in records]).reshape(-1, 1, 4)],
            "detection_classes": [np.concatenate([r["categories"] for r in records]).reshape(-1, 1)],
            "detection_scores": [np.concatenate([r["scores"] for r in records]).reshape(-1, 1)],
        }
        unknown = np.setdiff1d(predictions["detection_classes"][0], list(coco_gt.cats))
        if unknown.size:
            logging.warning("detections of category ids %s, not in the groundtruth categories, are ignored",
                            unknown.tolist())
        annotations = _coco_utils().convert_predictions_to_coco_annotations(predictions)
        for ann in annotations:  # plain Python numbers for pycocotools
            ann["image_id"], ann["category_id"] = int(ann["image_id"]), int(ann["category_id"])
            ann["bbox"], ann["score"] = [float(v) for v in ann["bbox"]], float(ann["score"])
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(predictions=annotations)

    def _coco_eval(self, max_detections: List[int]) -> "cocoeval.COCOeval":
        """A COCOeval of the detections added so far against their groundtruth, not yet run."""
        if not self._detections:
            raise ValueError("no detections were added: nothing to evaluate")
        image_ids = sorted(self._detections)
        coco_gt = self._coco_gt if self._coco_gt is not None else self._groundtruth_coco(image_ids)
        coco_eval = cocoeval.COCOeval(coco_gt, self._predictions_coco(coco_gt, image_ids), iouType="bbox")
        coco_eval.params.imgIds = image_ids
        coco_eval.params.maxDets = max_detections
        return coco_eval

    def average_precision(self, iou_threshold: Optional[float] = 0.5) -> float:
        """COCO AP at one IoU threshold (0.5: AP50) or, with None, averaged over 0.50:0.95 (AP); all
        areas, 100 detections per image. The same numbers as `evaluate()`'s, computed for that entry
        only and without the summary, several times faster (for a quality measured every step)."""
        coco_eval = self._coco_eval(max_detections=[MAX_DETECTIONS_PER_IMAGE])
        coco_eval.params.areaRng, coco_eval.params.areaRngLbl = coco_eval.params.areaRng[:1], ["all"]
        if iou_threshold is not None:
            coco_eval.params.iouThrs = np.array([iou_threshold])
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
        precision = coco_eval.eval["precision"]
        precision = precision[precision > -1]
        return float(precision.mean()) if precision.size else -1.0

    def evaluate(self) -> Dict[str, Any]:
        """COCO box metrics over the images given detections.

        Returns a dict: the floats of `METRIC_NAMES` (in [0, 1]; -1 where COCO leaves a metric
        undefined, e.g. APs without small objects), `per_class_AP` {class name: AP, -1 for a class
        without groundtruth in these images} and `num_images`.
        """
        coco_eval = self._coco_eval(max_detections=[1, 10, MAX_DETECTIONS_PER_IMAGE])
        image_ids = coco_eval.params.imgIds
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        logging.info("COCO evaluation of %d images:\n%s", len(image_ids), summary.getvalue())

        metrics: Dict[str, Any] = {name: float(v) for name, v in zip(METRIC_NAMES, coco_eval.stats)}
        precision = coco_eval.eval["precision"]  # [IoU thresholds, recall points, classes, areas, maxDets]
        per_class = {}
        for k, category_id in enumerate(coco_eval.params.catIds):
            p = precision[:, :, k, 0, -1]  # all areas, 100 detections
            p = p[p > -1]
            per_class[self.category_name(category_id)] = float(p.mean()) if p.size else -1.0
        metrics["per_class_AP"] = per_class
        metrics["num_images"] = len(image_ids)
        return metrics


def _value(v: float) -> str:
    return "n/a" if v < 0 else f"{v:.4f}"


def format_table(metrics: Mapping[str, Any]) -> str:
    """A readable text table of `DetectionEvaluator.evaluate` output (n/a where COCO says undefined)."""
    lines = []
    if "num_images" in metrics:
        lines.append(f"COCO box metrics over {metrics['num_images']} images")
    rows = [(name, _value(metrics[name])) for name in METRIC_NAMES if name in metrics]
    per_class = metrics.get("per_class_AP", {})
    width = max([len(name) for name, _ in rows] + [len(n) for n in per_class] + [6])
    lines.append(f"{'metric':<{width}}  {'value':>6}")
    lines.append("-" * (width + 8))
    lines.extend(f"{name:<{width}}  {value:>6}" for name, value in rows)
    if per_class:
        lines.append("")
        lines.append(f"{'class':<{width}}  {'AP':>6}")
        lines.append("-" * (width + 8))
        lines.extend(f"{name:<{width}}  {_value(ap):>6}" for name, ap in per_class.items())
    return "\n".join(lines)


def save_metrics(metrics: Mapping[str, Any], path: str) -> None:
    """Writes the metrics as JSON, atomically (a temporary file renamed to `path`)."""
    def plain(v):
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, np.generic):
            return v.item()
        return v
    text = json.dumps(plain(metrics), indent=2)
    fileio.write_atomically(path, lambda f: f.write(text.encode("utf-8") + b"\n"))


def _batch_size(images: Any) -> int:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"images must be a [B, H, W, 3] batch, got shape {shape}")
    return int(shape[0])


def evaluate_dataset(
    predict_fn: Callable[[Any], Mapping[str, Any]],
    dataset: Iterable,
    label_map: LabelMap,
    annotation_file: Optional[str] = None,
    max_images: Optional[int] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """COCO metrics of `predict_fn` over `dataset`; works for any model (Keras, TFLite).

    Args:
      predict_fn: images batch (as the dataset yields it) -> detections dict (module docstring).
      dataset: a tf.data dataset (or any iterable) of `(images, groundtruth)`: images uint8
        [B, S, S, 3] resized for the model, groundtruth the batched dict padded with class -1.
      label_map: category ids and names (see `parse_label_map`).
      annotation_file: optional COCO JSON of the split; groundtruth then comes from it.
      max_images: evaluate only the first images (the last batch is cut).
      progress: show a tqdm progress bar.

    Returns:
      `DetectionEvaluator.evaluate()` output.
    """
    from mobiledets_tf.progress import progress_bar

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    evaluator = DetectionEvaluator(label_map, annotation_file)
    with progress_bar(total=max_images, unit=" images", desc="COCO eval", disable=not progress) as bar:
        for element in dataset:
            if not (isinstance(element, (tuple, list)) and len(element) == 2):
                raise ValueError("the dataset must yield (images, groundtruth) pairs")
            images, groundtruth = element
            batch = _batch_size(images)
            keep = batch if max_images is None else min(batch, max_images - evaluator.num_images)
            detections = predict_fn(images)
            gt = _as_numpy(groundtruth, GROUNDTRUTH_KEYS, ("source_id", "height", "width"), "groundtruth")
            det = _as_numpy(detections, DETECTION_KEYS, REQUIRED_DETECTION_KEYS, "detections")
            if keep < batch:
                gt, det = _take(gt, keep), _take(det, keep)
            evaluator.add(gt, det)
            bar.update(keep)
            if max_images is not None and evaluator.num_images >= max_images:
                break
    return evaluator.evaluate()
