"""COCO metrics on hand-built groundtruth with numbers worked out by hand, and detection pictures."""
import json

import numpy as np
import pytest
from PIL import Image

from mobiledets_tf.evaluation import coco_metrics, visualize

LABEL_MAP = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]
CLASS_NAMES = ["circle", "square", "triangle"]

# source_id: (height, width, [(category id, (ymin, xmin, ymax, xmax) pixels)]). Every box is
# larger than 96 x 96 pixels, so COCO calls all of them "large" and APs / APm are undefined (-1).
IMAGES = {
    11: (480, 640, [(1, (100, 100, 200, 200)), (2, (250, 300, 350, 420))]),
    12: (300, 400, [(2, (10, 20, 130, 150)), (3, (150, 200, 290, 390))]),
    13: (500, 500, [(1, (0, 0, 120, 110)), (3, (300, 300, 450, 480))]),
}
AP_HALF_RECALL = 51 / 101  # COCO samples precision at recall 0, 0.01, ..., 1: 51 of 101 points at 1.


def groundtruth_batch(images=IMAGES, crowd=()):
    """The batched groundtruth dict, padded with class -1; `crowd` holds (source_id, index) pairs."""
    num = max(len(objects) for _, _, objects in images.values()) + 1  # one padding slot at least
    batch = {"source_id": [], "height": [], "width": [], "groundtruth_boxes": [], "groundtruth_classes": [],
             "groundtruth_is_crowd": [], "groundtruth_area": []}
    for source_id, (height, width, objects) in images.items():
        boxes, classes = np.zeros([num, 4], np.float32), np.full([num], -1, np.int64)
        is_crowd, area = np.zeros([num], bool), np.zeros([num], np.float32)
        for j, (category, (y0, x0, y1, x1)) in enumerate(objects):
            boxes[j] = [y0 / height, x0 / width, y1 / height, x1 / width]
            classes[j] = category
            is_crowd[j] = (source_id, j) in crowd
            area[j] = (y1 - y0) * (x1 - x0)
        batch["source_id"].append(str(source_id).encode())
        batch["height"].append(height)
        batch["width"].append(width)
        batch["groundtruth_boxes"].append(boxes)
        batch["groundtruth_classes"].append(classes)
        batch["groundtruth_is_crowd"].append(is_crowd)
        batch["groundtruth_area"].append(area)
    return {k: np.array(v) for k, v in batch.items()}


def detection_batch(per_image, slots=5):
    """Detections as the model gives them, from {source_id: [(category id, pixel box, score)]}."""
    batch = len(IMAGES)
    boxes, classes = np.zeros([batch, slots, 4], np.float32), np.zeros([batch, slots], np.float32)
    scores, num = np.zeros([batch, slots], np.float32), np.zeros([batch], np.int32)
    for i, (source_id, (height, width, _)) in enumerate(IMAGES.items()):
        for j, (category, (y0, x0, y1, x1), score) in enumerate(per_image.get(source_id, [])):
            boxes[i, j] = [y0 / height, x0 / width, y1 / height, x1 / width]
            classes[i, j] = category - 1  # 0-based class index
            scores[i, j] = score
        num[i] = len(per_image.get(source_id, []))
    return dict(boxes=boxes, classes=classes, scores=scores, num_detections=num)


def perfect(score=1.0):
    return {sid: [(c, box, score) for c, box in objects] for sid, (_, _, objects) in IMAGES.items()}


def run(detections, crowd=(), annotation_file=None):
    evaluator = coco_metrics.DetectionEvaluator(LABEL_MAP, annotation_file=annotation_file)
    evaluator.add(groundtruth_batch(crowd=crowd), detection_batch(detections))
    return evaluator.evaluate()


def iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_perfect_detections_score_one():
    metrics = run(perfect())
    for name in ("AP", "AP50", "AP75", "APl", "ARmax1", "ARmax10", "ARmax100", "ARl"):
        assert metrics[name] == pytest.approx(1.0), name
    for name in ("APs", "APm", "ARs", "ARm"):  # no small or medium objects
        assert metrics[name] == -1.0, name
    assert metrics["per_class_AP"] == pytest.approx({"circle": 1.0, "square": 1.0, "triangle": 1.0})
    assert metrics["num_images"] == 3
    assert set(coco_metrics.METRIC_NAMES) <= set(metrics)


def test_shifted_boxes_pass_iou_half_but_not_three_quarters():
    # Shift each box sideways by dx = w * 0.38 / 1.62: IoU = (w - dx) / (w + dx) = 0.62.
    detections = {}
    for sid, (height, width, objects) in IMAGES.items():
        detections[sid] = []
        for c, (y0, x0, y1, x1) in objects:
            dx = (x1 - x0) * 0.38 / 1.62
            dx = dx if x1 + dx <= width else -dx
            shifted = (y0, x0 + dx, y1, x1 + dx)
            assert iou(shifted, (y0, x0, y1, x1)) == pytest.approx(0.62)
            detections[sid].append((c, shifted, 0.9))
    metrics = run(detections)
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AP75"] == pytest.approx(0.0)
    # Matched at IoU thresholds 0.50, 0.55, 0.60 of the ten 0.50:0.05:0.95.
    assert metrics["AP"] == pytest.approx(0.3)
    assert metrics["ARmax100"] == pytest.approx(0.3)


def test_missing_half_of_the_objects_halves_recall():
    # Image 12 gets no detection at all (its square and triangle are missed) and image 13 misses
    # its circle: one of two objects of every class is found.
    detections = perfect(0.9)
    detections[12] = []
    detections[13] = [d for d in detections[13] if d[0] != 1]
    metrics = run(detections)
    assert metrics["ARmax100"] == pytest.approx(0.5)
    assert metrics["AP"] == pytest.approx(AP_HALF_RECALL)
    assert metrics["per_class_AP"] == pytest.approx({n: AP_HALF_RECALL for n in CLASS_NAMES})
    assert metrics["num_images"] == 3


def test_wrong_class_scores_zero_for_that_class():
    # Both triangles are called squares (score 0.5, below the true squares at 0.9): triangle AP 0,
    # square keeps precision 1 up to full recall (the false positives rank last).
    detections = {sid: [(2 if c == 3 else c, box, 0.5 if c == 3 else 0.9) for c, box in objects]
                  for sid, (_, _, objects) in IMAGES.items()}
    metrics = run(detections)
    assert metrics["per_class_AP"] == pytest.approx({"circle": 1.0, "square": 1.0, "triangle": 0.0})
    assert metrics["AP"] == pytest.approx(2 / 3)


def test_crowd_groundtruth_is_neither_a_miss_nor_a_false_positive():
    crowd_box = (300, 20, 460, 200)
    with_region = dict(IMAGES)
    with_region[11] = (480, 640, IMAGES[11][2] + [(1, crowd_box)])
    detections = perfect(0.9)
    on_crowd = detections[11] + [(1, crowd_box, 1.0)]  # ranked above the real circles

    def evaluate(gt, detections):
        evaluator = coco_metrics.DetectionEvaluator(LABEL_MAP)
        evaluator.add(gt, detection_batch(detections))
        return evaluator.evaluate()

    crowd = groundtruth_batch(with_region, crowd={(11, 2)})
    metrics = evaluate(crowd, dict(detections))  # crowd region not detected: no miss
    assert metrics["AP"] == pytest.approx(1.0) and metrics["ARmax100"] == pytest.approx(1.0)
    metrics = evaluate(crowd, {**detections, 11: on_crowd})  # detected: no false positive
    assert metrics["AP"] == pytest.approx(1.0) and metrics["ARmax100"] == pytest.approx(1.0)

    # The same region as an ordinary object is a miss: circle recall 2/3, precision 1 up to it.
    plain = groundtruth_batch(with_region)
    assert evaluate(plain, dict(detections))["per_class_AP"]["circle"] == pytest.approx(67 / 101)
    # Without the region, its detection is a false positive ranked first: precision 1/2 then 2/3.
    assert evaluate(groundtruth_batch(), {**detections, 11: on_crowd})["per_class_AP"]["circle"] == \
        pytest.approx(2 / 3)


def write_coco_json(path):
    images, annotations = [], []
    for sid, (height, width, objects) in IMAGES.items():
        images.append({"id": sid, "height": height, "width": width, "file_name": f"{sid}.jpg"})
        for c, (y0, x0, y1, x1) in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": sid, "category_id": c,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "iscrowd": 0})
    # One more image in the split that is not evaluated (a subset of the split can be scored).
    images.append({"id": 99, "height": 100, "width": 100, "file_name": "99.jpg"})
    annotations.append({"id": len(annotations) + 1, "image_id": 99, "category_id": 1,
                        "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0})
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": LABEL_MAP}))
    return str(path)


def test_annotation_file_gives_the_same_numbers(tmp_path):
    annotation_file = write_coco_json(tmp_path / "instances_val.json")
    detections = {sid: [(2 if c == 3 else c, box, 0.5 if c == 3 else 0.9) for c, box in objects]
                  for sid, (_, _, objects) in IMAGES.items()}
    detections[13] = [d for d in detections[13] if d[0] != 1]  # a miss too
    from_arrays = run(detections)
    from_file = run(detections, annotation_file=annotation_file)
    assert from_file.keys() == from_arrays.keys()
    for name in coco_metrics.METRIC_NAMES:
        assert from_file[name] == pytest.approx(from_arrays[name]), name
    assert from_file["per_class_AP"] == pytest.approx(from_arrays["per_class_AP"])
    assert from_file["per_class_AP"]["circle"] == pytest.approx(AP_HALF_RECALL)
    assert from_file["num_images"] == 3

    evaluator = coco_metrics.DetectionEvaluator(LABEL_MAP, annotation_file=annotation_file)
    with pytest.raises(ValueError, match="source_id 7 is not an image of"):
        evaluator.add_detections([b"7"], [480], [640], {k: v[:1] for k, v in detection_batch({}).items()})
    with pytest.raises(ValueError, match="differs from 480 x 640"):
        evaluator.add_detections([b"11"], [480], [600], {k: v[:1] for k, v in detection_batch({}).items()})


def test_bad_inputs_get_clear_errors(tmp_path):
    evaluator = coco_metrics.DetectionEvaluator(LABEL_MAP)
    gt = groundtruth_batch()
    evaluator.add_groundtruth(gt)
    with pytest.raises(ValueError, match="added twice"):
        evaluator.add_groundtruth(gt)
    pixels = detection_batch(perfect())
    pixels["boxes"] = pixels["boxes"] * 400
    with pytest.raises(ValueError, match="pixel coordinates"):
        evaluator.add_detections(gt["source_id"], gt["height"], gt["width"], pixels)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        coco_metrics.DetectionEvaluator(LABEL_MAP).evaluate()
    with pytest.raises(ValueError, match="category id 1 appears twice"):
        coco_metrics.DetectionEvaluator([(1, "a"), (1, "b")])
    with pytest.raises(ValueError, match="not an integer COCO image id"):
        coco_metrics.DetectionEvaluator(LABEL_MAP).add_groundtruth(dict(gt, source_id=np.array([b"x", b"y", b"z"])))


def test_table_and_saved_json(tmp_path):
    metrics = run(perfect())
    table = coco_metrics.format_table(metrics)
    assert "triangle" in table and "ARmax100" in table and "n/a" in table
    path = tmp_path / "out" / "metrics.json"
    coco_metrics.save_metrics(metrics, str(path))
    assert json.loads(path.read_text()) == metrics
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary left behind


def painted_dataset(size=64):
    """Images with one filled rectangle per object in its class colour; groundtruth batched & padded."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    records = []
    for n in range(5):
        image = np.zeros([size, size, 3], np.uint8)
        boxes, classes = np.zeros([3, 4], np.float32), np.full([3], -1, np.int64)
        for j, class_index in enumerate(rng.choice(3, size=1 + n % 3, replace=False)):
            band = size // 3  # one horizontal band per object: rectangles never overlap
            y0, x0 = j * band + rng.integers(0, band // 2), rng.integers(0, size // 2)
            y1, x1 = y0 + rng.integers(4, band // 2 + 1), x0 + rng.integers(8, size // 2)
            image[y0:y1, x0:x1] = visualize.class_color(class_index)
            boxes[j] = np.array([y0, x0, y1, x1]) / size
            classes[j] = class_index + 1
        records.append((image, {"source_id": str(100 + n).encode(), "height": 200 + 10 * n, "width": 300,
                                "groundtruth_boxes": boxes, "groundtruth_classes": classes,
                                "groundtruth_is_crowd": np.zeros([3], bool)}))
    images = np.stack([r[0] for r in records])
    gt = {k: np.stack([np.asarray(r[1][k]) for r in records]) for k in records[0][1]}
    return tf.data.Dataset.from_tensor_slices((images, gt)).batch(2)


def find_painted_boxes(images):
    """A stand-in detector that returns exactly what `painted_dataset` painted."""
    images = np.asarray(images)
    batch, size = images.shape[0], images.shape[1]
    out = dict(boxes=np.zeros([batch, 10, 4], np.float32), classes=np.zeros([batch, 10], np.float32),
               scores=np.zeros([batch, 10], np.float32), num_detections=np.zeros([batch], np.int32))
    for b in range(batch):
        for class_index in range(3):
            mask = np.all(images[b] == visualize.class_color(class_index), axis=-1)
            if mask.any():
                rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                k = out["num_detections"][b]
                out["boxes"][b, k] = [rows[0] / size, cols[0] / size, (rows[-1] + 1) / size, (cols[-1] + 1) / size]
                out["classes"][b, k], out["scores"][b, k] = class_index, 0.99
                out["num_detections"][b] += 1
    return out


def test_evaluate_dataset_with_a_detector_that_finds_everything():
    dataset = painted_dataset()
    metrics = coco_metrics.evaluate_dataset(find_painted_boxes, dataset, LABEL_MAP, progress=False)
    assert metrics["num_images"] == 5
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["ARmax100"] == pytest.approx(1.0)
    few = coco_metrics.evaluate_dataset(find_painted_boxes, dataset, LABEL_MAP, max_images=3, progress=False)
    assert few["num_images"] == 3 and few["AP"] == pytest.approx(1.0)

    def blind(images):
        return {k: v[:, :0] if v.ndim > 1 else v * 0 for k, v in find_painted_boxes(images).items()}
    assert coco_metrics.evaluate_dataset(blind, dataset, LABEL_MAP, progress=False)["ARmax100"] == 0.0


def test_drawn_boxes_have_the_class_colour_and_the_rest_is_untouched(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=[5, 100, 120, 3], dtype=np.uint8)
    boxes = np.tile(np.array([[[0.7, 0.05, 0.95, 0.3], [0.05, 0.6, 0.3, 0.95]]], np.float32), [5, 1, 1])
    detections = dict(boxes=boxes, classes=np.tile([[1.0, 2.0]], [5, 1]), scores=np.tile([[0.87, 0.1]], [5, 1]),
                      num_detections=np.full([5], 2))
    gt_boxes = [np.array([[0.2, 0.1, 0.4, 0.4]])] * 5

    drawn = visualize.draw_detections(images[0], boxes[0], detections["classes"][0], detections["scores"][0],
                                      CLASS_NAMES, groundtruth_boxes=gt_boxes[0])
    assert drawn.shape == images[0].shape and drawn.dtype == np.uint8
    assert tuple(drawn[80, 6]) == visualize.class_color(1)  # left edge of the square (x = 0.05 * 120)
    assert tuple(drawn[94, 20]) == visualize.class_color(1)  # bottom edge (y = 0.95 * 100 - 1)
    np.testing.assert_array_equal(drawn[15, 72], images[0][15, 72])  # below threshold: not drawn
    assert tuple(drawn[30, 12]) == visualize.GROUNDTRUTH_COLOR  # groundtruth left edge
    np.testing.assert_array_equal(drawn[45:55, 55:65], images[0][45:55, 55:65])  # centre untouched
    assert np.any(drawn[56:70, 6:40] != images[0][56:70, 6:40])  # the label sits above the box

    path = tmp_path / "grid.png"
    grid = visualize.save_detection_grid(images, detections, CLASS_NAMES, str(path), columns=2,
                                         groundtruths=gt_boxes)
    saved = np.asarray(Image.open(path).convert("RGB"))
    assert saved.shape == (3 * 100 + 2 * 2, 2 * 120 + 1 * 2, 3)
    np.testing.assert_array_equal(saved, grid)
    top, left = 1 * (100 + 2), 1 * (120 + 2)  # image 3: second row, second column
    assert tuple(saved[top + 80, left + 6]) == visualize.class_color(1)
    np.testing.assert_array_equal(saved[top + 50, left + 60], images[3][50, 60])
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_average_precision_equals_the_full_evaluation_on_random_detections():
    """The quick AP50 / AP of the search's quality: the same numbers as evaluate()'s AP50 and AP, on
    noisy detections (jittered true boxes, false positives, missed objects, shuffled scores)."""
    rng = np.random.default_rng(0)
    for trial in range(5):
        detections = {}
        for source_id, (height, width, objects) in IMAGES.items():
            found = []
            for category, (y0, x0, y1, x1) in objects:
                if rng.uniform() < 0.8:
                    jitter = rng.normal(0, 15, 4)
                    found.append((category if rng.uniform() < 0.9 else 1 + (category % 3),
                                  tuple(np.clip(np.array([y0, x0, y1, x1]) + jitter, 0, [height, width] * 2)),
                                  float(rng.uniform())))
            y, x = rng.uniform(0, height - 60), rng.uniform(0, width - 60)
            found.append((int(rng.integers(1, 4)), (y, x, y + 50, x + 50), float(rng.uniform())))
            detections[source_id] = found
        evaluator = coco_metrics.DetectionEvaluator(LABEL_MAP)
        evaluator.add(groundtruth_batch(), detection_batch(detections))
        full = evaluator.evaluate()
        assert evaluator.average_precision(0.5) == pytest.approx(full["AP50"], abs=1e-12)
        assert evaluator.average_precision(None) == pytest.approx(full["AP"], abs=1e-12)
        assert evaluator.average_precision(0.75) == pytest.approx(full["AP75"], abs=1e-12)
    assert 0 < full["AP"] < full["AP50"] < 1


def test_quantized_inputs_keep_every_pixel_value():
    from mobiledets_tf.evaluation.tflite_eval import quantize_input
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    scale = np.float32(2.0 / 255.0)   # every int8 export's input: a pixel p means (p - 128) * 2/255
    as_uint8 = quantize_input(pixels, {"dtype": np.uint8, "quantization": (float(scale), 128)})
    np.testing.assert_array_equal(as_uint8, pixels)   # what an app feeding camera pixels gives
    as_int8 = quantize_input(pixels, {"dtype": np.int8, "quantization": (float(scale), 0)})
    np.testing.assert_array_equal(as_int8.astype(int), pixels.astype(int) - 128)
    # Any other input scale: the normalised value rounded onto the model's own grid.
    coarse = quantize_input(pixels, {"dtype": np.uint8, "quantization": (0.25, 4)})
    np.testing.assert_array_equal(coarse, np.round((pixels * (2 / 255) - 1) / 0.25 + 4).astype(np.uint8))
    floats = quantize_input(pixels, {"dtype": np.float32, "quantization": (0.0, 0)})
    np.testing.assert_allclose(floats, pixels * (2 / 255) - 1, atol=1e-6)
