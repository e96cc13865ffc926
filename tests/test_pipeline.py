"""Input pipelines: SSD random crop, flip, determinism, targets, and evaluation batches."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_BUILTIN
from mobiledets_tf.data import pipeline
from mobiledets_tf.data.builtin import builtin_dataset
from mobiledets_tf.data.ssd_crop import ASPECT_RATIO_RANGE, ssd_random_crop
from mobiledets_tf.detection.anchors import feature_map_sizes_for_input, generate_anchors


@pytest.fixture(scope="module")
def data(tiny_data_dir):
    return builtin_dataset(**TINY_BUILTIN)


def _image_and_boxes():
    image = tf.constant(np.random.default_rng(0).integers(0, 255, (100, 200, 3)), tf.uint8)
    boxes = tf.constant([[0.1, 0.1, 0.5, 0.3], [0.4, 0.5, 0.9, 0.95], [0.0, 0.0, 0.05, 0.05]])
    classes = tf.constant([0, 1, 2])
    return image, boxes, classes


def test_ssd_random_crop_is_seeded_and_keeps_boxes_valid():
    image, boxes, classes = _image_and_boxes()
    identical, shapes = 0, set()
    for s in range(200):
        cropped, out_boxes, out_classes = ssd_random_crop(image, boxes, classes, tf.constant([7, s]))
        again = ssd_random_crop(image, boxes, classes, tf.constant([7, s]))
        np.testing.assert_array_equal(cropped.numpy(), again[0].numpy())
        np.testing.assert_array_equal(out_boxes.numpy(), again[1].numpy())
        assert out_boxes.shape[0] == out_classes.shape[0]
        assert (out_boxes.numpy() >= 0).all() and (out_boxes.numpy() <= 1).all()
        assert (out_boxes.numpy()[:, 2:] >= out_boxes.numpy()[:, :2]).all()
        h, w = cropped.shape[:2]
        if (h, w) == (100, 200):
            identical += 1
        else:
            # The crop's aspect ratio (in pixels) stays in the configured range, up to rounding.
            assert ASPECT_RATIO_RANGE[0] * 0.9 <= w / h <= ASPECT_RATIO_RANGE[1] * 1.1
        shapes.add((h, w))
    assert 0.05 <= identical / 200 <= 0.45   # 15% kept whole, plus crops that fall back to it
    assert len(shapes) > 50


def test_crop_keeps_a_box_in_the_right_place():
    """A box's pixels are the same before and after cropping, up to rounding at the edges."""
    image = np.zeros((200, 200, 3), np.uint8)
    image[40:120, 60:100] = 255
    boxes = tf.constant([[0.2, 0.3, 0.6, 0.5]])
    for s in range(20):
        cropped, out_boxes, _ = ssd_random_crop(tf.constant(image), boxes, tf.constant([1]), tf.constant([3, s]))
        if out_boxes.shape[0] == 0:
            continue
        h, w = cropped.shape[:2]
        y0, x0, y1, x1 = (out_boxes.numpy()[0] * [h, w, h, w]).round().astype(int)
        if y1 - y0 > 4 and x1 - x0 > 4:
            assert cropped.numpy()[y0 + 1:y1 - 1, x0 + 1:x1 - 1].min() == 255


def test_flip_mirrors_boxes_with_the_image():
    image = np.zeros((64, 64, 3), np.uint8)
    image[10:30, 4:20] = 200
    example = {"image": tf.constant(image), "groundtruth_boxes": tf.constant([[10 / 64, 4 / 64, 30 / 64, 20 / 64]]),
               "groundtruth_classes": tf.constant([3], tf.int64), "groundtruth_is_crowd": tf.constant([False])}
    flips = 0
    for s in range(10):
        out, boxes, classes = pipeline.augment_and_resize(example, 64, tf.constant([0, s], tf.int64),
                                                          ssd_crop=False, flip=True)
        y0, x0, y1, x1 = (boxes.numpy()[0] * 64).round().astype(int)
        assert out.numpy()[y0 + 1:y1 - 1, x0 + 1:x1 - 1].min() == 200
        flips += x0 > 32
        assert classes.numpy().tolist() == [2]   # category id 3 -> class index 2
    assert 0 < flips < 10


def test_train_dataset_is_deterministic_and_assigns_targets(data):
    anchors = generate_anchors(feature_map_sizes_for_input(64))

    def first_batch(seed):
        ds = pipeline.train_dataset(data.train_pattern, anchors, 6, 64, 4, seed=seed, max_boxes=8,
                                    shuffle_buffer=16)
        return next(iter(ds))

    (images, targets), (images2, targets2) = first_batch(3), first_batch(3)
    np.testing.assert_array_equal(images.numpy(), images2.numpy())
    np.testing.assert_array_equal(targets["box_targets"].numpy(), targets2["box_targets"].numpy())
    assert not np.array_equal(images.numpy(), first_batch(4)[0].numpy())
    assert images.shape == (4, 64, 64, 3) and -1 <= images.numpy().min() and images.numpy().max() <= 1
    assert targets["cls_targets"].shape == (4, len(anchors), 7)
    assert (targets["cls_targets"].numpy()[..., 0] == 0).all()
    positives = targets["positive_mask"].numpy()
    np.testing.assert_array_equal(targets["cls_targets"].numpy().sum(-1), positives)
    assert positives.sum() > 0


def test_train_dataset_shards_between_input_pipelines(data):
    anchors = generate_anchors(feature_map_sizes_for_input(64))
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    ds = pipeline.train_dataset(data.train_pattern, anchors, 6, 64, 2, input_context=context)
    assert next(iter(ds))[0].shape == (2, 64, 64, 3)


def test_eval_dataset_keeps_original_sizes_and_pads(data):
    images, groundtruth = next(iter(pipeline.eval_dataset(data.val_pattern, 64, 4, max_boxes=8)))
    assert images.dtype == tf.uint8 and images.shape == (4, 64, 64, 3)
    assert groundtruth["height"].numpy().tolist() == [128] * 4
    classes = groundtruth["groundtruth_classes"].numpy()
    assert classes.shape == (4, 8) and (classes[classes > 0] <= 6).all() and (classes == -1).any()
    total = sum(1 for _ in pipeline.eval_dataset(data.val_pattern, 64, 3).unbatch())
    assert total == TINY_BUILTIN["num_val"]


def test_missing_files_are_reported():
    with pytest.raises(FileNotFoundError, match="no TFRecord files match"):
        pipeline.eval_dataset("/nonexistent/val-*.tfrecord", 64, 4)
    with pytest.raises(FileNotFoundError, match="no TFRecord pattern given"):
        pipeline.eval_dataset("", 64, 4)


def test_training_needs_a_train_pattern_but_evaluation_and_export_only_a_label_map(tmp_path):
    from mobiledets_tf.config import ConfigError, load_config
    from mobiledets_tf.data.label_map import write_label_map
    from mobiledets_tf.data.sources import resolve_data
    from mobiledets_tf.training.task import DetectionTask
    label_map = str(tmp_path / "label_map.pbtxt")
    write_label_map([(1, "cat"), (2, "dog")], label_map)
    config = load_config(overrides=[f"data.dataset=tfrecord,data.label_map={label_map!r},"
                                    "model.num_classes=2"])
    assert resolve_data(config).class_names == ["cat", "dog"]
    with pytest.raises(ConfigError, match="data.train_pattern is empty"):
        DetectionTask(config, tf.distribute.get_strategy())


def test_training_targets_use_the_configured_match_threshold(data):
    from mobiledets_tf.config import load_config
    from mobiledets_tf.data.sources import DataSources
    from mobiledets_tf.training.task import DetectionTask

    def first_targets(threshold):
        config = load_config(None, ["model.input_size=64,model.num_classes=6,model.depth_multiplier=0.25,"
                                    f"data.shuffle_buffer=16,train.batch_size=4,model.match_threshold={threshold}"])
        sources = DataSources(data.train_pattern, "", "", [], [], 6)
        task = DetectionTask(config, tf.distribute.get_strategy(), data=sources)
        assert task.detector.match_threshold == threshold
        return next(iter(task.train_dataset_fn()))[1]["positive_mask"].numpy()

    default, low = first_targets(0.5), first_targets(0.3)
    assert (low >= default).all() and low.sum() > default.sum() > 0
