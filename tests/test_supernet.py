"""The TuNAS weight-sharing supernet: with given choices it computes exactly the standalone detector
holding its sliced weights, gradients reach only the weights the chosen ops used, op warmup (-1)
averages a layer's ops, one compiled step serves every architecture, and bad input fails clearly.

Eager tests run only the chosen branches, so they stay fast on the full ibn_fused_tucker spaces; the
compiled-step test builds every branch and uses a tiny space of its own.
"""
import numpy as np
import pytest
import tensorflow as tf

from mobiledets_tf.keras import keras
from mobiledets_tf.layers import defaults
from mobiledets_tf.search.space import SearchSpaceError, load_space
from mobiledets_tf.search.supernet import Supernet, op_variables, standalone_from_supernet

INPUT_SIZE = 128
NUM_CLASSES = 3

# Widths searched outside C4/C5: stage0 {8, 16}, stage1 {24, 48} (in and out of layers 1-2), and
# every block type, with and without expansion, with SE and hard-swish on platform `se`.
WIDTHS = """
skeletons:
  tiny:
    - {stride: 2, filters: 16, ops: [{type: conv, kernel: 3}], filter_multipliers: [0.5, 1.0]}
    - {stride: 2, filters: 24, layers: 2, filter_multipliers: [1.0, 2.0], endpoint: C2}
    - {stride: 2, filters: 32, endpoint: C3}
    - {stride: 2, filters: 48, layers: 2, endpoint: C4}
    - {stride: 2, filters: 64, endpoint: C5}
spaces:
  mine:
    ops:
      body:
        - {type: ibn, kernel: [3, 5], expansion: [1, 4]}
        - {type: fused, kernel: 3, expansion: [2, 4]}
        - {type: tucker, kernel: [3, 5], input_rank_ratio: 0.25, output_rank_ratio: [0.25, 0.75]}
platforms:
  plain: {skeleton: tiny, activation: relu6}
  se: {skeleton: tiny, activation: hard_swish, block_fields: {ibn: {se: 0.25}, fused: {se: 0.25}}}
"""
# Two ops per layer and one width decision: small enough to compile every branch in a test.
COMPILED = """
skeletons:
  tiny:
    - {stride: 2, filters: 16, ops: [{type: conv, kernel: 3}]}
    - {stride: 2, filters: 16, filter_multipliers: [1.0, 2.0]}
    - {stride: 2, filters: 24}
    - {stride: 2, filters: 32, endpoint: C4}
    - {stride: 2, filters: 48, endpoint: C5}
spaces:
  mine:
    ops:
      body:
        - {type: ibn, kernel: 3, expansion: 2}
        - {type: fused, kernel: 3, expansion: 2}
platforms:
  plain: {skeleton: tiny, activation: relu6}
"""


def _space(tmp_path, text, platform):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(str(path), platform)


def _images(batch=2, size=INPUT_SIZE, seed=0):
    return tf.random.stateless_uniform((batch, size, size, 3), (seed, 1), -1.0, 1.0)


def _targets(supernet, batch=2):
    boxes = tf.constant([[[0.1, 0.1, 0.6, 0.5], [0.4, 0.3, 0.9, 0.9]]] * batch)
    classes = tf.constant([[0, 2]] * batch)
    return supernet.assign_targets(boxes, classes)


def _check_against_standalone(supernet, indices, images):
    """Outputs, regularisation and gradients of the supernet against the extracted detector."""
    targets = _targets(supernet, images.shape[0])
    with tf.GradientTape() as tape:
        predictions = supernet(images, indices)
        loss = supernet.losses(predictions, targets)["total"] + tf.add_n(supernet.model.losses)
    detector = standalone_from_supernet(supernet, indices)
    expected = detector.model(images, training=True)
    for got, want in zip(predictions, expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(float(tf.add_n(supernet.model.losses)),
                               float(tf.add_n(detector.model.losses)), rtol=1e-5)
    assert supernet.parameter_count(indices) == sum(w.shape.num_elements() for w in detector.model.trainable_weights)

    variables = supernet.trainable_variables
    gradients = {v.ref(): g for v, g in zip(variables, tape.gradient(loss, variables))}
    used = {}
    for block, parts in op_variables(supernet, indices).items():
        for var, index in parts:
            assert var.ref() not in used, f"{var.name} used twice in {block}"
            used[var.ref()] = index
    backbone = {v.ref() for block in supernet.model.blocks for v in block.trainable_variables}
    assert set(used) <= backbone
    for var in variables:
        grad = gradients[var.ref()]
        grad = None if grad is None else tf.convert_to_tensor(grad).numpy()
        if var.ref() not in backbone:  # the SSDLite head: always used
            assert grad is not None, var.name
        elif var.ref() in used:
            index = used[var.ref()]
            assert np.abs(grad[index]).max() > 0, f"{var.name}: no gradient inside the used slice"
            outside = grad.copy()
            outside[index] = 0
            assert not outside.any(), f"{var.name}: gradient outside the used slice {index}"
        else:
            assert grad is None or not grad.any(), f"{var.name}: gradient but not chosen"
    return predictions


@pytest.mark.parametrize("platform,seeds", [("edgetpu", (1, 2)), ("cpu", (3,))], ids=["edgetpu", "cpu"])
def test_supernet_is_the_standalone_detector_of_its_choices(platform, seeds):
    space = load_space("ibn_fused_tucker", platform)
    supernet = Supernet(space, NUM_CLASSES, INPUT_SIZE, depth_multiplier=0.5)
    assert len(supernet.anchors) == supernet.model.head.outputs[0].shape[1]
    images = _images()
    logits = [_check_against_standalone(supernet, space.sample(seed), images)[1] for seed in seeds]
    assert not any(np.allclose(logits[0].numpy(), other.numpy()) for other in logits[1:])


def test_calibrated_standalone_detector_infers_as_the_supernet_does_with_batch_statistics():
    space = load_space("ibn_fused_tucker", "cpu")
    supernet = Supernet(space, NUM_CLASSES, INPUT_SIZE, depth_multiplier=0.5)
    indices = space.sample(4)
    images = _images(batch=4, seed=5)
    expected = supernet(images, indices)
    calibrated = standalone_from_supernet(supernet, indices, calibration_images=images)
    # The last feature maps hold 4 values per channel here: inference and training mode round apart by
    # up to about 4e-4 there; statistics with Bessel's correction would be off by up to 0.4.
    for got, want in zip(calibrated.model(images, training=False), expected):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-3, rtol=1e-3)
    uncalibrated = standalone_from_supernet(supernet, indices).model(images, training=False)
    assert not np.allclose(uncalibrated[1].numpy(), expected[1].numpy(), atol=1e-2)
    settings = {(layer.momentum, layer.fused) for layer in calibrated.model.submodules
                if isinstance(layer, keras.layers.BatchNormalization)}
    assert settings == {(defaults.BACKBONE_BN["momentum"], True), (defaults.HEAD_BN["momentum"], True)}


@pytest.mark.parametrize("platform", ["plain", "se"])
def test_searched_widths_slice_inputs_and_outputs(tmp_path, platform):
    space = _space(tmp_path, WIDTHS, platform)
    supernet = Supernet(space, NUM_CLASSES, 64)
    narrow_wide = [0] * len(space.decisions)  # stem 8 of 16 channels (zero-padded), then 48 of 48
    narrow_wide[[d.tag for d in space.decisions].index("stage1/width")] = 1
    for indices in (narrow_wide, space.sample(np.random.default_rng(0))):
        _check_against_standalone(supernet, indices, _images(size=64))


def test_op_warmup_averages_the_layer_ops():
    space = load_space("ibn_fused_tucker", "cpu")
    supernet = Supernet(space, NUM_CLASSES, INPUT_SIZE, depth_multiplier=0.5)
    block = supernet.model.blocks[7]
    decision = block.layer.op_decision
    x = tf.random.stateless_normal((2, 16, 16, block.max_in), (3, 4))
    choices = np.array(space.sample(0), np.int32)
    outputs = []
    for op in range(len(block.layer.ops)):
        choices[decision] = op
        outputs.append(block(x, tf.constant(choices)).numpy())
    choices[decision] = -1
    warm = block(x, tf.constant(choices)).numpy()
    np.testing.assert_allclose(warm, np.mean(outputs, axis=0), atol=1e-5)
    assert not np.allclose(outputs[0], outputs[-1])
    # Op warmup everywhere: the whole supernet runs every op.
    box_encodings, class_logits = supernet(_images(), [-1] * len(space.decisions))
    assert np.isfinite(class_logits.numpy()).all() and box_encodings.shape[1] == len(supernet.anchors)


def test_one_compiled_step_serves_every_choice(tmp_path):
    space = _space(tmp_path, COMPILED, "plain")
    supernet = Supernet(space, NUM_CLASSES, 64)
    images = _images(size=64)
    targets = _targets(supernet)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(supernet.trainable_variables)

    @tf.function(input_signature=[tf.TensorSpec([len(space.decisions)], tf.int32)])
    def step(choices):
        with tf.GradientTape() as tape:
            predictions = supernet(images, choices)
            loss = supernet.losses(predictions, targets)["total"] + tf.add_n(supernet.model.losses)
        variables = supernet.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return predictions[1]

    rng = np.random.default_rng(0)
    choices = [space.sample(rng) for _ in range(3)] + [[-1 if d.tag.endswith("/op") else 1
                                                        for d in space.decisions]]
    for c in choices:
        eager = supernet(images, c)[1].numpy()  # before the step updates the weights
        np.testing.assert_allclose(step(tf.constant(c, tf.int32)).numpy(), eager, atol=1e-4, rtol=1e-4)
    assert step.experimental_get_tracing_count() == 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="choice above range"):
        step(tf.constant([5] * len(space.decisions), tf.int32))


def test_clear_errors(tmp_path):
    space = _space(tmp_path, COMPILED, "plain")
    supernet = Supernet(space, NUM_CLASSES, 64)
    n = len(space.decisions)
    with pytest.raises(SearchSpaceError, match=f"expected a vector of {n} choice indices"):
        supernet(_images(size=64), [0] * (n - 1))
    with pytest.raises(SearchSpaceError, match=r"decision layer1/op: index must be in -1\.\.1, got 2"):
        supernet(_images(size=64), [0, 2] + [0] * (n - 2))
    with pytest.raises(SearchSpaceError, match=r"decision stage1/width: index must be in 0\.\.1, got -1"):
        supernet(_images(size=64), [-1] + [0] * (n - 1))
    with pytest.raises(SearchSpaceError, match="index must be an int"):  # no op warmup in a standalone
        standalone_from_supernet(supernet, [0] + [-1] * (n - 1))

    varying_c4 = COMPILED.replace("{stride: 2, filters: 32, endpoint: C4}",
                                  "{stride: 2, filters: 32, endpoint: C4, filter_multipliers: [1.0, 1.5]}")
    with pytest.raises(SearchSpaceError, match=r"mine/plain.*stage 3 \(layer 3, endpoint C4\) searches "
                                               r"its width.*needs them fixed"):
        Supernet(_space(tmp_path, varying_c4, "plain"), NUM_CLASSES, 64)
