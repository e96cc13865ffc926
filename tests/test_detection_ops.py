"""Tests for mobiledets_tf.detection: anchors, box coding, targets, losses and postprocessing."""
import math

import mobiledets_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import numpy as np
import pytest
import tensorflow as tf

from mobiledets_tf.detection import anchors as anchors_lib
from mobiledets_tf.detection import box_coding
from mobiledets_tf.detection import losses
from mobiledets_tf.detection import postprocess
from mobiledets_tf.detection import targets

SIZES_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
LAYER_OFFSETS_320 = np.cumsum([0] + [h * w * k for (h, w), k in zip(SIZES_320, [3, 6, 6, 6, 6, 6])])


# ---------------------------------------------------------------- anchors


def test_feature_map_sizes_for_input():
    assert anchors_lib.feature_map_sizes_for_input(320) == SIZES_320
    assert anchors_lib.feature_map_sizes_for_input(256) == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert anchors_lib.feature_map_sizes_for_input(300) == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    for bad in (32, 0, -32, 320.0, True):
        with pytest.raises(ValueError, match=">= 33"):
            anchors_lib.feature_map_sizes_for_input(bad)


def test_anchor_counts_at_320():
    assert anchors_lib.num_anchors_per_location() == [3, 6, 6, 6, 6, 6]
    anchors = anchors_lib.generate_anchors(anchors_lib.feature_map_sizes_for_input(320))
    assert anchors.shape == (2034, 4)
    assert anchors.dtype == np.float32
    assert LAYER_OFFSETS_320[-1] == 2034


def test_anchor_specs_scales():
    specs = anchors_lib.anchor_specs()
    np.testing.assert_allclose(specs[0], [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)])
    # Layer index 1: s_1 = 0.35, s_2 = 0.5.
    assert [ar for _, ar in specs[1]] == [1.0, 2.0, 0.5, 3.0, 0.3333, 1.0]
    assert specs[1][0][0] == pytest.approx(0.35)
    assert specs[1][5][0] == pytest.approx(math.sqrt(0.35 * 0.5))
    # Last layer interpolates towards the extra scale 1.0.
    assert specs[5][5][0] == pytest.approx(math.sqrt(0.95 * 1.0))
    # Without the reduced lowest layer, layer 0 has the interpolated scale sqrt(0.2 * 0.35).
    unreduced = anchors_lib.anchor_specs(reduce_boxes_in_lowest_layer=False)
    assert len(unreduced[0]) == 6
    assert unreduced[0][5][0] == pytest.approx(math.sqrt(0.2 * 0.35))


def _box(cy, cx, h, w):
    return [cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]


def test_specific_anchors():
    anchors = anchors_lib.generate_anchors(SIZES_320)
    # First anchor of layer 0: center (0.025, 0.025), h = w = 0.1.
    np.testing.assert_allclose(anchors[0], [-0.025, -0.025, 0.075, 0.075], atol=1e-6)
    # Second anchor of layer 0 is (0.2, 2.0): h = 0.2/sqrt(2), w = 0.2*sqrt(2).
    h, w = 0.2 / math.sqrt(2.0), 0.2 * math.sqrt(2.0)
    np.testing.assert_allclose(anchors[1], _box(0.025, 0.025, h, w), atol=1e-6)
    # Last layer (1x1): 2:1 anchor centered at 0.5 with h = 0.95/sqrt(2), w = 0.95*sqrt(2).
    h, w = 0.95 / math.sqrt(2.0), 0.95 * math.sqrt(2.0)
    np.testing.assert_allclose(anchors[2034 - 6 + 1], _box(0.5, 0.5, h, w), atol=1e-6)
    # Interpolated anchor of the first location of layer 1 (10x10 grid, center 0.05).
    s = math.sqrt(0.35 * 0.5)
    np.testing.assert_allclose(anchors[LAYER_OFFSETS_320[1] + 5], _box(0.05, 0.05, s, s), atol=1e-6)
    # Not clipped.
    assert anchors.min() < 0.0 and anchors.max() > 1.0


def test_anchor_order_matches_predictor_reshape():
    sizes = [(4, 2), (2, 3), (3, 1)]  # non-square, so y/x mix-ups show
    kwargs = dict(num_layers=3, min_scale=0.2, max_scale=0.9)
    anchors = anchors_lib.generate_anchors(sizes, **kwargs)
    specs = anchors_lib.anchor_specs(**kwargs)
    start = 0
    for (h, w), layer_specs in zip(sizes, specs):
        k = len(layer_specs)
        grid = np.zeros((1, h, w, k, 4))
        for y in range(h):
            for x in range(w):
                for a, (scale, ar) in enumerate(layer_specs):
                    cy, cx = (y + 0.5) / h, (x + 0.5) / w
                    bh, bw = scale / math.sqrt(ar), scale * math.sqrt(ar)
                    grid[0, y, x, a] = [cy - bh / 2, cx - bw / 2, cy + bh / 2, cx + bw / 2]
        # The box predictor emits [B, h, w, k * 4] and is reshaped to [B, h * w * k, 4].
        expected = grid.reshape(1, h, w, k * 4).reshape(1, h * w * k, 4)[0]
        np.testing.assert_allclose(anchors[start:start + h * w * k], expected, atol=1e-6)
        start += h * w * k
    assert start == anchors.shape[0]


def test_anchor_argument_errors():
    with pytest.raises(ValueError, match="num_layers"):
        anchors_lib.generate_anchors(SIZES_320[:5])
    with pytest.raises(ValueError, match="num_layers"):
        anchors_lib.anchor_specs(num_layers=1)
    with pytest.raises(ValueError, match="min_scale"):
        anchors_lib.anchor_specs(min_scale=0.9, max_scale=0.2)
    with pytest.raises(ValueError, match="aspect_ratios"):
        anchors_lib.anchor_specs(aspect_ratios=(1.0, -2.0))


# ---------------------------------------------------------------- box coding


def test_encode_decode_round_trip():
    rng = np.random.RandomState(0)

    def random_boxes(*shape):
        center = rng.uniform(0.1, 0.9, size=shape + (2,))
        size = rng.uniform(0.05, 0.5, size=shape + (2,))
        return np.concatenate([center - size / 2, center + size / 2], axis=-1).astype(np.float32)

    anchors = random_boxes(50)
    boxes = random_boxes(3, 50)  # leading batch dim, anchors broadcast
    encoded = box_coding.encode(boxes, anchors)
    assert encoded.shape == (3, 50, 4)
    decoded = box_coding.decode(encoded, anchors)
    np.testing.assert_allclose(decoded.numpy(), boxes, atol=1e-5)


def test_encode_hand_computed():
    anchor = np.array([[0.1, 0.2, 0.5, 0.4]], np.float32)  # center (0.3, 0.3), h 0.4, w 0.2
    box = np.array([[0.2, 0.1, 0.4, 0.9]], np.float32)  # center (0.3, 0.5), h 0.2, w 0.8
    expected = [10.0 * 0.0 / 0.4, 10.0 * 0.2 / 0.2, 5.0 * math.log(0.2 / 0.4), 5.0 * math.log(0.8 / 0.2)]
    np.testing.assert_allclose(box_coding.encode(box, anchor).numpy()[0], expected, atol=1e-5)
    np.testing.assert_allclose(
        box_coding.decode(np.array([expected], np.float32), anchor).numpy()[0], box[0], atol=1e-6
    )


def test_anchors_to_center_size():
    anchors = np.array([[0.1, 0.2, 0.5, 0.4], [-0.1, 0.0, 0.3, 1.2]], np.float32)
    np.testing.assert_allclose(
        box_coding.anchors_to_center_size(anchors), [[0.3, 0.3, 0.4, 0.2], [0.1, 0.6, 0.4, 1.2]], atol=1e-6
    )
    with pytest.raises(ValueError, match=r"\[A, 4\]"):
        box_coding.anchors_to_center_size(np.zeros((3, 5)))


def test_box_coder_bad_scales():
    with pytest.raises(ValueError, match="scales"):
        box_coding.encode(np.zeros((1, 4), np.float32), np.ones((1, 4), np.float32), scales=(10.0, 10.0, 5.0))


# ---------------------------------------------------------------- targets

TARGET_ANCHORS = np.array(
    [
        [0.0, 0.0, 0.5, 0.5],  # IoU 1.0 with gt0
        [0.0, 0.0, 0.5, 0.6],  # IoU 0.25 / 0.30 = 0.83 with gt0
        [0.5, 0.5, 1.0, 1.0],  # best anchor of gt1 but IoU only 0.16 -> forced match
        [0.6, 0.6, 1.0, 1.0],  # IoU 0.05 with gt1 -> negative
        [0.0, 0.7, 0.3, 1.0],  # identical to the padding row's box -> must stay negative
    ],
    np.float32,
)
NUM_CLASSES = 3
# gt0 class 2, a padding row (class -1) in the middle, gt1 class 0.
GT_BOXES = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.7, 0.3, 1.0], [0.5, 0.5, 0.7, 0.7]], np.float32)
GT_CLASSES = np.array([2, -1, 0], np.int32)


def _center_size(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]


def _hand_encode(box, anchor):
    by, bx, bh, bw = _center_size(box)
    ay, ax, ah, aw = _center_size(anchor)
    return [10 * (by - ay) / ah, 10 * (bx - ax) / aw, 5 * math.log(bh / ah), 5 * math.log(bw / aw)]


def test_assign_targets_hand_case():
    out = targets.assign_targets_single(TARGET_ANCHORS, GT_BOXES, GT_CLASSES, NUM_CLASSES)
    np.testing.assert_array_equal(out["positive_mask"].numpy(), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(
        out["cls_targets"].numpy(),
        [
            [0, 0, 0, 1],  # class 2 -> column 3
            [0, 0, 0, 1],
            [0, 1, 0, 0],  # forced match, class 0 -> column 1
            [0, 0, 0, 0],  # negatives: all zeros, background column included
            [0, 0, 0, 0],
        ],
    )
    expected_boxes = np.array(
        [
            _hand_encode(GT_BOXES[0], TARGET_ANCHORS[0]),
            _hand_encode(GT_BOXES[0], TARGET_ANCHORS[1]),
            _hand_encode(GT_BOXES[2], TARGET_ANCHORS[2]),
            [0, 0, 0, 0],
            [0, 0, 0, 0],
        ]
    )
    np.testing.assert_allclose(
        expected_boxes[2], [-3.0, -3.0, 5 * math.log(0.4), 5 * math.log(0.4)], atol=1e-6
    )
    np.testing.assert_allclose(out["box_targets"].numpy(), expected_boxes, atol=1e-5)


def test_assign_targets_match_threshold():
    # Anchor 3 has IoU 0.01 / 0.19 = 0.053 with gt1 ([0.5, 0.5, 0.7, 0.7]): negative at the default
    # 0.5, a positive of gt1 at 0.05. Anchor 2 stays gt1's (forced) match either way.
    low = targets.assign_targets_single(TARGET_ANCHORS, GT_BOXES, GT_CLASSES, NUM_CLASSES, match_threshold=0.05)
    np.testing.assert_array_equal(low["positive_mask"].numpy(), [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(low["cls_targets"].numpy()[3], [0, 1, 0, 0])
    np.testing.assert_allclose(low["box_targets"].numpy()[3], _hand_encode(GT_BOXES[2], TARGET_ANCHORS[3]),
                               atol=1e-5)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="match_threshold"):
            targets.assign_targets_single(TARGET_ANCHORS, GT_BOXES, GT_CLASSES, NUM_CLASSES, match_threshold=bad)


def test_assign_targets_empty_groundtruth():
    for boxes, classes in [
        (np.zeros((0, 4), np.float32), np.zeros((0,), np.int32)),
        (GT_BOXES, np.full((3,), -1, np.int32)),
    ]:
        out = targets.assign_targets_single(TARGET_ANCHORS, boxes, classes, NUM_CLASSES)
        assert out["cls_targets"].shape == (5, NUM_CLASSES + 1)
        np.testing.assert_array_equal(out["positive_mask"].numpy(), np.zeros(5))
        np.testing.assert_array_equal(out["cls_targets"].numpy(), np.zeros((5, NUM_CLASSES + 1)))
        np.testing.assert_array_equal(out["box_targets"].numpy(), np.zeros((5, 4)))


def test_assign_targets_batched_equals_per_image():
    # Image 1 is the hand case with its rows shuffled; image 2 is all padding.
    gt_boxes = np.stack([GT_BOXES[[2, 1, 0]], GT_BOXES])
    gt_classes = np.stack([GT_CLASSES[[2, 1, 0]], np.full((3,), -1, np.int32)])
    batched = tf.function(lambda b, c: targets.assign_targets(TARGET_ANCHORS, b, c, NUM_CLASSES))(
        tf.constant(gt_boxes), tf.constant(gt_classes)
    )
    assert batched["cls_targets"].shape == (2, 5, NUM_CLASSES + 1)
    for i in range(2):
        single = targets.assign_targets_single(TARGET_ANCHORS, gt_boxes[i], gt_classes[i], NUM_CLASSES)
        for key in ("cls_targets", "box_targets", "positive_mask"):
            np.testing.assert_allclose(batched[key][i].numpy(), single[key].numpy(), atol=1e-6)
    np.testing.assert_array_equal(batched["positive_mask"].numpy().sum(axis=1), [3, 0])


def test_assign_targets_in_dataset_map():
    dataset = tf.data.Dataset.from_tensors((GT_BOXES, GT_CLASSES)).map(
        lambda b, c: targets.assign_targets_single(TARGET_ANCHORS, b, c, NUM_CLASSES)
    )
    out = next(iter(dataset))
    np.testing.assert_array_equal(out["positive_mask"].numpy(), [1, 1, 1, 0, 0])


def test_assign_targets_argument_errors():
    with pytest.raises(ValueError, match="num_classes"):
        targets.assign_targets_single(TARGET_ANCHORS, GT_BOXES, GT_CLASSES, 0)
    with pytest.raises(ValueError, match=r"\[B, N, 4\]"):
        targets.assign_targets(TARGET_ANCHORS, GT_BOXES, GT_CLASSES, NUM_CLASSES)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        targets.assign_targets_single(TARGET_ANCHORS, GT_BOXES, np.array([2, -1, 3], np.int32), NUM_CLASSES)


# ---------------------------------------------------------------- losses


def _hand_focal(logit, target, alpha=0.75, gamma=2.0):
    p = 1.0 / (1.0 + math.exp(-logit))
    p_t = p if target == 1 else 1.0 - p
    alpha_t = alpha if target == 1 else 1.0 - alpha
    return alpha_t * (1.0 - p_t) ** gamma * -math.log(p_t)


def _hand_huber(d, delta=1.0):
    return 0.5 * d * d if abs(d) <= delta else delta * (abs(d) - 0.5 * delta)


LOGITS = np.array([[[0.5, -1.0, 2.0], [-0.3, 0.8, -2.0]]], np.float32)  # 1 image, 2 anchors, 2 classes + bg
CLS_TARGETS = np.array([[[0, 0, 1], [0, 0, 0]]], np.float32)  # anchor 0 positive (class 1), anchor 1 negative
POSITIVE = np.array([[1, 0]], np.float32)
BOX_PRED = np.array([[[0.5, -2.0, 0.1, 1.5], [3.0, 3.0, 3.0, 3.0]]], np.float32)
BOX_TARGETS = np.array([[[0.2, 0.5, -0.3, 0.0], [0.0, 0.0, 0.0, 0.0]]], np.float32)


def test_detection_losses_hand_computed():
    expected_cls = sum(
        _hand_focal(float(LOGITS[0, a, c]), int(CLS_TARGETS[0, a, c])) for a in range(2) for c in range(3)
    )
    # Only anchor 0 counts: differences 0.3, -2.5, 0.4, 1.5 -> 0.045 + 2.0 + 0.08 + 1.0 = 3.125.
    huber_sum = sum(_hand_huber(float(d)) for d in BOX_PRED[0, 0] - BOX_TARGETS[0, 0])
    assert huber_sum == pytest.approx(3.125)
    expected_loc = huber_sum / 4.0

    out = losses.detection_losses(LOGITS, BOX_PRED, CLS_TARGETS, BOX_TARGETS, POSITIVE)  # normalizer 1
    assert out["classification"].numpy() == pytest.approx(expected_cls, abs=1e-6)
    assert out["localization"].numpy() == pytest.approx(expected_loc, abs=1e-6)
    assert out["total"].numpy() == pytest.approx(expected_cls + expected_loc, abs=1e-6)

    scaled = losses.detection_losses(LOGITS, BOX_PRED, CLS_TARGETS, BOX_TARGETS, POSITIVE, normalizer=4.0)
    assert scaled["classification"].numpy() == pytest.approx(expected_cls / 4.0, abs=1e-6)
    assert scaled["localization"].numpy() == pytest.approx(expected_loc / 4.0, abs=1e-6)


def test_detection_losses_default_normalizer():
    two_pos = np.array([[1, 1]], np.float32)
    cls_targets = np.array([[[0, 0, 1], [0, 1, 0]]], np.float32)
    out = losses.detection_losses(LOGITS, BOX_PRED, cls_targets, BOX_TARGETS, two_pos)
    expected_cls = sum(
        _hand_focal(float(LOGITS[0, a, c]), int(cls_targets[0, a, c])) for a in range(2) for c in range(3)
    ) / 2.0
    expected_loc = (3.125 + 4 * _hand_huber(3.0)) / 4.0 / 2.0
    assert out["classification"].numpy() == pytest.approx(expected_cls, abs=1e-6)
    assert out["localization"].numpy() == pytest.approx(expected_loc, abs=1e-6)
    # No positives: normalizer clamps to 1 and localization is 0.
    none = losses.detection_losses(
        LOGITS, BOX_PRED, np.zeros_like(cls_targets), BOX_TARGETS, np.zeros((1, 2), np.float32)
    )
    assert none["localization"].numpy() == 0.0
    assert np.isfinite(none["classification"].numpy()) and none["classification"].numpy() > 0.0


def test_detection_losses_argument_errors():
    with pytest.raises(ValueError, match="alpha"):
        losses.detection_losses(LOGITS, BOX_PRED, CLS_TARGETS, BOX_TARGETS, POSITIVE, alpha=1.5)
    with pytest.raises(ValueError, match="same shape"):
        losses.detection_losses(LOGITS, BOX_PRED, CLS_TARGETS[..., :2], BOX_TARGETS, POSITIVE)


# ---------------------------------------------------------------- postprocess


def test_postprocess_nms():
    anchors = np.array(
        [
            [0.1, 0.1, 0.3, 0.3],
            [0.12, 0.1, 0.32, 0.3],  # IoU 0.82 with anchor 0: a duplicate
            [0.5, 0.5, 0.8, 0.8],
            [0.0, 0.6, 0.2, 0.8],  # low scores everywhere
        ],
        np.float32,
    )
    wanted_boxes = np.array(
        [
            [0.1, 0.15, 0.3, 0.35],
            [0.12, 0.15, 0.32, 0.35],
            [0.6, 0.6, 1.1, 0.9],  # extends past 1 -> clipped
            [0.0, 0.6, 0.2, 0.8],
        ],
        np.float32,
    )
    encodings = np.stack([box_coding.encode(wanted_boxes, anchors).numpy()] * 2)
    low = -30.0  # sigmoid(-30) ~ 9e-14, below the 1e-8 score threshold
    image_logits = np.array(
        [
            [5.0, low, 3.0],  # background column is high everywhere and must be ignored
            [5.0, low, 2.0],  # same class, lower score: suppressed by NMS
            [5.0, 2.5, low],
            [5.0, low, low],
        ],
        np.float32,
    )
    logits = np.stack([image_logits, np.full_like(image_logits, low)])  # image 2: nothing

    out = postprocess.postprocess(
        encodings, logits, anchors, max_detections_per_class=10, max_total_detections=5
    )
    assert out["boxes"].shape == (2, 5, 4)
    assert out["num_detections"].dtype == tf.int32
    np.testing.assert_array_equal(out["num_detections"].numpy(), [2, 0])
    sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    np.testing.assert_allclose(out["scores"].numpy()[0, :2], [sigmoid(3.0), sigmoid(2.5)], atol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy()[0, :2], [1.0, 0.0])
    np.testing.assert_allclose(
        out["boxes"].numpy()[0, :2], [[0.1, 0.15, 0.3, 0.35], [0.6, 0.6, 1.0, 0.9]], atol=1e-5
    )
    np.testing.assert_array_equal(out["scores"].numpy()[0, 2:], 0.0)
    np.testing.assert_array_equal(out["scores"].numpy()[1], 0.0)


def test_postprocess_argument_errors():
    with pytest.raises(ValueError, match="iou_threshold"):
        postprocess.postprocess(np.zeros((1, 1, 4)), np.zeros((1, 1, 3)), np.zeros((1, 4)), iou_threshold=1.5)
