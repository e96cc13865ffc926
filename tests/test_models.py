"""SSDLite detectors of all six architectures: published statistics, Model Garden parity, training
step, postprocess and QAT-readiness."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ALL_ARCHITECTURES, MOBILEDETS
from mobiledets_tf.keras import keras
from mobiledets_tf.layers import HardSwish, SqueezeExciteGate
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.layers.concatenation import AnchorConcatenate
from mobiledets_tf.stats import model_stats

# Multiply-adds (B) and parameters (M, all variables) at 320x320, 90 classes (reference table).
PUBLISHED = {"mobiledet_cpu": (0.45, 4.21), "mobiledet_edgetpu": (1.53, 4.20),
             "mobiledet_dsp": (2.82, 7.16), "mobiledet_gpu": (5.07, 13.11)}
# The baselines' papers, at 320x320 with 90 classes: multiply-adds (B, given to two decimals) and
# parameters (M), which match the trainable count (BatchNorm moving statistics excluded) within 1%.
PUBLISHED_BASELINES = {"mobilenet_v3_large": (0.51, 3.22),   # MobileNetV3 paper, Table 6, SSDLite "V3†"
                       "mobilenet_v3_small": (0.16, 1.77),   # MobileNetV3 paper, Table 6, "V3-Small†"
                       "mnasnet_a1": (0.84, 4.9)}            # MnasNet paper, Table 3
MODEL_GARDEN_IDS = {"mobiledet_cpu": "MobileDetCPU", "mobiledet_edgetpu": "MobileDetEdgeTPU",
                    "mobiledet_dsp": "MobileDetDSP", "mobiledet_gpu": "MobileDetGPU"}


@pytest.mark.parametrize("arch", MOBILEDETS)
def test_totals_match_the_published_table_within_one_percent(arch):
    total = model_stats(SSDLiteDetector(arch).model)["total"]
    madds, params = PUBLISHED[arch]
    assert total["madds"] / 1e9 == pytest.approx(madds, rel=0.01)
    assert total["params"] / 1e6 == pytest.approx(params, rel=0.01)


@pytest.mark.parametrize("arch", sorted(PUBLISHED_BASELINES))
def test_baseline_totals_match_their_papers(arch):
    total = model_stats(SSDLiteDetector(arch, num_classes=90, input_size=320).model)["total"]
    madds, params = PUBLISHED_BASELINES[arch]
    assert round(total["madds"] / 1e9, 2) == madds
    assert total["trainable_params"] / 1e6 == pytest.approx(params, rel=0.01)


@pytest.mark.parametrize("arch", MOBILEDETS)
def test_backbone_matches_model_garden_mobiledet(arch):
    from official.vision.modeling.backbones import mobiledet
    garden = mobiledet.MobileDet(model_id=MODEL_GARDEN_IDS[arch],
                                 input_specs=keras.layers.InputSpec(shape=[None, 320, 320, 3]))
    detector = SSDLiteDetector(arch)
    assert model_stats(detector.model)["backbone"]["params"] == garden.count_params()
    ours = {name: detector.model.get_layer(layer).output_shape
            for name, layer in (("4", _endpoint_layer(detector, "C4")), ("5", _endpoint_layer(detector, "C5")))}
    assert ours["4"] == tuple(garden.output_specs["4"].as_list())
    assert ours["5"] == tuple(garden.output_specs["5"].as_list())


def _endpoint_layer(detector, name):
    endpoint = detector.arch.endpoints[name]
    prefix = f"backbone_b{endpoint.block:02d}_"
    return [l.name for l in detector.model.layers if l.name.startswith(prefix)][-1]


def _batch(detector, batch_size=2, seed=0):
    rng = np.random.default_rng(seed)
    size = detector.input_size
    images = rng.integers(0, 256, (batch_size, size, size, 3)).astype(np.float32)
    gt_boxes = np.zeros((batch_size, 4, 4), np.float32)
    gt_classes = -np.ones((batch_size, 4), np.int32)
    gt_boxes[:, 0] = [0.1, 0.2, 0.6, 0.5]
    gt_boxes[:, 1] = [0.5, 0.5, 0.9, 0.95]
    gt_classes[:, :2] = [0, detector.num_classes - 1]
    return images, gt_boxes, gt_classes


@pytest.mark.slow
@pytest.mark.parametrize("input_size", [320, 256])
@pytest.mark.parametrize("arch", ALL_ARCHITECTURES)
def test_forward_pass_and_one_gradient_step(arch, input_size):
    # One fixed draw of the weights: an unseeded draw leaves every unit of a narrow squeeze-excite
    # reduce layer (MnasNet-A1's has 6) below zero for both noise images about once in 64 draws,
    # and its ReLU then passes no gradient to that layer.
    keras.utils.set_random_seed(0)
    detector = SSDLiteDetector(arch, num_classes=5, input_size=input_size)
    assert detector.model.input_shape == (None, input_size, input_size, 3)
    images, gt_boxes, gt_classes = _batch(detector)
    targets = detector.assign_targets(gt_boxes, gt_classes)
    assert float(tf.reduce_sum(targets["positive_mask"])) >= 4  # forced matches at least
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    before = [v.numpy().copy() for v in detector.model.trainable_variables]
    with tf.GradientTape() as tape:
        predictions = detector.model(detector.preprocess(images), training=True)
        losses = detector.losses(predictions, targets)
        loss = losses["total"] + tf.add_n(detector.model.losses)
    assert predictions[0].shape == (2, len(detector.anchors), 4)
    assert predictions[1].shape == (2, len(detector.anchors), 6)
    grads = tape.gradient(loss, detector.model.trainable_variables)
    assert all(g is not None for g in grads)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    optimizer.apply_gradients(zip(grads, detector.model.trainable_variables))
    for b, v, g in zip(before, detector.model.trainable_variables, grads):
        # Box branches of feature maps without positive anchors get no loss gradient (only their
        # L2 term); everything else, the whole backbone included, must learn from this batch.
        if "_box_" not in v.name:
            assert np.abs(g.numpy()).max() > 0, v.name
        if np.abs(g.numpy()).max() == 0:
            np.testing.assert_array_equal(b, v.numpy())
    stem = detector.model.get_layer("backbone_b00_conv").kernel
    assert not np.array_equal(before[0], stem.numpy()), "the optimizer step must reach the stem"
    assert np.isfinite(float(losses["classification"])) and float(losses["localization"]) > 0

    detections = detector.detect(images)
    assert detections["boxes"].shape == (2, 100, 4)
    assert detections["num_detections"].shape == (2,)


def test_anchor_count_and_feature_maps():
    detector = SSDLiteDetector("mobiledet_edgetpu", num_classes=3)
    assert len(detector.anchors) == 2034
    assert detector.feature_map_sizes == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert len(SSDLiteDetector("mobiledet_edgetpu", num_classes=3, input_size=256).anchors) == \
        3 * 256 + 6 * (64 + 16 + 4 + 1 + 1)


@pytest.mark.parametrize("bad", [32, 0, -32, 320.0])
def test_input_size_must_be_an_integer_of_at_least_33(bad):
    with pytest.raises(ValueError, match=">= 33"):
        SSDLiteDetector("mobiledet_cpu", input_size=bad)


def test_input_size_300_gives_the_grids_of_same_padding():
    detector = SSDLiteDetector("mobilenet_v2", num_classes=90, input_size=300)
    assert detector.feature_map_sizes == [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert len(detector.anchors) == 3 * 361 + 6 * (100 + 25 + 9 + 4 + 1) == 1917


def test_head_hyperparameters_and_class_bias():
    model = SSDLiteDetector("mobiledet_edgetpu", num_classes=90).model
    bn = model.get_layer("extra1_reduce_bn")
    assert (bn.momentum, bn.epsilon) == (0.97, 0.001)
    assert model.get_layer("extra1_reduce").filters == 256
    assert model.get_layer("extra4_project").filters == 128
    class_conv = model.get_layer("predictor0_class_conv")
    assert class_conv.filters == 3 * 91
    np.testing.assert_allclose(class_conv.bias.numpy(), -4.6)
    assert model.get_layer("predictor1_box_conv").filters == 6 * 4
    assert class_conv.kernel_initializer.get_config()["stddev"] == pytest.approx(0.03)


def test_depth_multiplier_scales_backbone_and_extra_layers_with_min_depth():
    detector = SSDLiteDetector("mobiledet_gpu", num_classes=3, depth_multiplier=0.125)
    model = detector.model
    assert model.get_layer("backbone_b00_conv").filters == 8    # round8(32 / 8) floors at 8
    assert model.get_layer("extra4_reduce").filters == 16       # max(int(64 / 8), 16)
    assert model.get_layer("extra1_project").filters == 64      # int(512 / 8)


def test_flat_graph_of_builtin_layers_only():
    # The three custom layers each carry a tfmot QuantizeConfig (quantization/configs.py).
    allowed_custom = (HardSwish, SqueezeExciteGate, AnchorConcatenate)
    for arch in ("mobiledet_cpu", "mobilenet_v3_large"):
        model = SSDLiteDetector(arch, num_classes=3).model
        for layer in model.layers:
            assert not isinstance(layer, keras.Model), layer.name
            module = type(layer).__module__
            assert module.startswith("tf_keras.") or isinstance(layer, allowed_custom), layer.name


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL_ARCHITECTURES)
def test_tfmot_quantizes_every_detector(arch):
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapperV2

    from mobiledets_tf.quantization.configs import OutputQuantizeConfig, QATHardSwish, QATSqueezeExciteGate
    from mobiledets_tf.quantization.qat import quantize_model, quantize_scope
    detector = SSDLiteDetector(arch, num_classes=3, input_size=256)
    qat = quantize_model(detector.model)
    wrapped = {l.layer.name: l for l in qat.layers if isinstance(l, QuantizeWrapperV2)}
    for layer in detector.model.layers:
        if isinstance(layer, (HardSwish, SqueezeExciteGate)):
            # Swapped for the QAT layers that also fake-quantize the intermediate tensors.
            qat_layer = wrapped[layer.name].layer
            assert isinstance(qat_layer, (QATHardSwish, QATSqueezeExciteGate))
            assert isinstance(wrapped[layer.name].quantize_config, OutputQuantizeConfig)
            expected = ({"scaled", "gate"} if isinstance(layer, HardSwish) else
                        {"shifted", "gate"} if layer.gate == "hard_sigmoid" else set())
            assert set(qat_layer.intermediates.ranges) == expected
            # The sigmoid's output on the fixed grid of TFLite's int8 LOGISTIC.
            fixed = {"sigmoid"} if getattr(layer, "gate", None) == "sigmoid" else set()
            assert set(qat_layer.intermediates.fixed) == fixed
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Add, keras.layers.ReLU)):
            assert layer.name in wrapped, f"{layer.name} is not quantized"
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):   # also before a ReLU
            assert any(w.name.endswith("kernel_min:0") for w in wrapped[layer.name].weights), \
                f"{layer.name}'s weights are not fake-quantized"
    # tfmot rebuilds the graph; every layer still reads its inputs in the float model's order (a
    # nested Concatenate once came back with its inputs swapped, permuting the anchors).
    for layer in detector.model.layers:
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        if len(inputs) > 1:
            qat_inputs = qat.get_layer(wrapped[layer.name].name if layer.name in wrapped else layer.name).input
            assert [t.name.split("/")[0].replace("quant_", "") for t in qat_inputs] == \
                [t.name.split("/")[0] for t in inputs], layer.name
    images = detector.preprocess(_batch(detector, 1)[0])
    boxes, logits = qat(images, training=False)
    assert logits.shape == (1, len(detector.anchors), 4)
    assert np.isfinite(boxes.numpy()).all()
    # The original float weights were carried over.
    source = detector.model.get_layer("predictor0_class_conv").bias.numpy()
    np.testing.assert_allclose(wrapped["predictor0_class_conv"].layer.bias.numpy(), source)
    if arch == "mobiledet_cpu":
        with quantize_scope():
            restored = keras.Model.from_config(qat.get_config())
        assert len(restored.layers) == len(qat.layers)


def test_stats_cli_prints_json_and_rejects_unknown_architectures():
    run = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.stats", "--arch=mobiledet_edgetpu",
                          "--input_size=320", "--num_classes=90", "--json"],
                         capture_output=True, text=True, check=True)
    stats = json.loads(run.stdout)
    assert set(stats) == {"backbone", "extra_layers", "predictor", "total"}
    for part in stats.values():
        assert set(part) == {"madds", "params", "trainable_params"}
        assert all(isinstance(v, int) for v in part.values())
    assert stats["total"]["params"] == sum(stats[p]["params"] for p in ("backbone", "extra_layers", "predictor"))
    assert stats["total"]["madds"] / 1e9 == pytest.approx(1.53, rel=0.01)

    bad = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.stats", "--arch=mobiledet_tpu"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown architecture 'mobiledet_tpu'" in bad.stderr


def test_mixed_precision_training_step_keeps_float32_outputs():
    from mobiledets_tf.training.task import set_precision_policy
    set_precision_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)  # bfloat16 gradients of an untrained model: one fixed draw
    try:
        detector = SSDLiteDetector("mobiledet_edgetpu", num_classes=3, input_size=64, depth_multiplier=0.25)
        assert detector.model.get_layer("backbone_b02_fused").compute_dtype == "bfloat16"
        images, gt_boxes, gt_classes = _batch(detector)
        with tf.GradientTape() as tape:
            predictions = detector.model(detector.preprocess(images), training=True)
            loss = detector.losses(predictions, detector.assign_targets(gt_boxes, gt_classes))["total"]
        assert predictions[0].dtype == tf.float32 and predictions[1].dtype == tf.float32
        grads = tape.gradient(loss, detector.model.trainable_variables)
        assert np.isfinite(float(loss)) and all(np.isfinite(g.numpy()).all() for g in grads)
        assert detector.detect(images)["boxes"].dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_anchor_scales_come_from_the_model_config():
    from mobiledets_tf.config import load_config
    config = load_config(None, ["model.input_size=128,model.num_classes=6,model.depth_multiplier=0.25,"
                                "model.anchor_min_scale=0.15,model.anchor_max_scale=0.75"])
    detector = SSDLiteDetector.from_config(config.model)
    default = SSDLiteDetector("mobiledet_edgetpu", num_classes=6, input_size=128, depth_multiplier=0.25)
    assert detector.anchors.shape == default.anchors.shape
    sides = np.sqrt((detector.anchors[:, 2] - detector.anchors[:, 0]) * (detector.anchors[:, 3] - detector.anchors[:, 1]))
    # Lowest layer: 0.1, then 0.15 at aspect ratios 2 and 0.5; the last layer's largest is sqrt(0.75 * 1).
    np.testing.assert_allclose(sides[:3], [0.1, 0.15, 0.15], rtol=1e-5)
    np.testing.assert_allclose(sides.max(), np.sqrt(0.75), rtol=1e-5)
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        SSDLiteDetector("mobiledet_edgetpu", num_classes=6, input_size=128, anchor_min_scale=0.8,
                        anchor_max_scale=0.5)


def test_l2_weight_comes_from_the_model_config_and_zero_trains():
    from mobiledets_tf.config import load_config
    from mobiledets_tf.training.task import DetectionTask

    small = "model.input_size=64,model.num_classes=3,model.depth_multiplier=0.25"
    default = SSDLiteDetector.from_config(load_config(None, [small]).model)
    doubled = SSDLiteDetector.from_config(load_config(None, [small + ",model.l2_weight=8e-5"]).model)
    doubled.model.set_weights(default.model.get_weights())
    assert len(default.model.losses) == len(doubled.model.losses) > 0
    np.testing.assert_allclose(float(tf.add_n(doubled.model.losses)), 2 * float(tf.add_n(default.model.losses)),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="L2 weight must be >= 0"):
        SSDLiteDetector("mobiledet_edgetpu", num_classes=3, input_size=64, l2_weight=-1.0)

    config = load_config(None, [small + ",model.l2_weight=0.0,data.dataset=tfrecord"])
    config.train.batch_size = 2
    task = DetectionTask(config, tf.distribute.get_strategy(), data=_fake_sources(config))
    assert task.model.losses == []
    images, gt_boxes, gt_classes = _batch(task.detector)
    losses = task.train_step(task.detector.preprocess(images), task.detector.assign_targets(gt_boxes, gt_classes))
    assert float(losses["regularization_loss"]) == 0.0 and np.isfinite(float(losses["total_loss"]))


def _fake_sources(config):
    from mobiledets_tf.data.label_map import Category
    from mobiledets_tf.data.sources import DataSources
    label_map = [Category(i, f"c{i}") for i in range(1, config.model.num_classes + 1)]
    return DataSources("", "", "", label_map, [c.name for c in label_map], config.model.num_classes)


def test_extra_layers_on_1x1_maps_have_finite_bfloat16_gradients():
    from mobiledets_tf.models.ssdlite_head import wire_extra_layers
    from mobiledets_tf.training.task import set_precision_policy
    set_precision_policy("mixed_bfloat16")
    try:
        c5 = keras.Input((1, 1, 64))
        model = keras.Model(c5, wire_extra_layers(c5, depth_multiplier=0.25))
        for seed in range(3):
            features = tf.random.stateless_normal([2, 1, 1, 64], seed=[seed, 0])
            with tf.GradientTape() as tape:
                loss = tf.add_n([tf.reduce_sum(tf.cast(m, tf.float32)) for m in model(features, training=True)])
            grads = tape.gradient(loss, model.trainable_variables)
            assert all(np.isfinite(g.numpy()).all() for g in grads)
    finally:
        keras.mixed_precision.set_global_policy("float32")


# tf-models-official's MobileNetV3 model ids, and the blocks that TF-slim's V3_*_DETECTION definitions
# (the shipped ArchSpecs) halve: their full-width outputs are restored to compare with the classifier.
MODEL_GARDEN_V3 = {"mobilenet_v3_large": ("MobileNetV3Large", range(13, 17)),
                   "mobilenet_v3_small": ("MobileNetV3Small", range(9, 13))}


def _full_width_v3(arch: str):
    from mobiledets_tf.arch import load_arch
    spec = load_arch(arch)
    halved = MODEL_GARDEN_V3[arch][1]
    blocks = [dataclasses.replace(b, filters=2 * b.filters) if i in halved else b
              for i, b in enumerate(spec.blocks)]
    return dataclasses.replace(spec, blocks=blocks)


def _copy_model_garden_weights(garden_block, ours) -> None:
    """Sets the weights of one of our blocks from the Model Garden block in the same place."""
    if ours.block_type == "conv":
        pairs = [(garden_block._conv0, ours.conv), (garden_block._norm0, ours.bn)]
    else:
        pairs = [(garden_block._conv1, ours.depthwise), (garden_block._norm1, ours.depthwise_bn),
                 (garden_block._conv2, ours.project), (garden_block._norm2, ours.project_bn)]
        if ours.expansion != 1:
            pairs += [(garden_block._conv0, ours.expand), (garden_block._norm0, ours.expand_bn)]
        if ours.se is not None:
            se = garden_block._squeeze_excitation
            pairs += [(se._se_reduce, ours.se.reduce), (se._se_expand, ours.se.expand)]
        else:
            assert garden_block._squeeze_excitation is None
    for source, target in pairs:
        assert [w.shape for w in source.weights] == [w.shape for w in target.weights], target.name
        target.set_weights(source.get_weights())


@pytest.mark.parametrize("arch", sorted(MODEL_GARDEN_V3))
def test_mobilenet_v3_backbone_equals_model_garden_with_copied_weights(arch):
    """Every block output, the C4 expansion tensor and the parameter count of the full-width
    MobileNetV3 backbone equal tf-models-official's MobileNet(model_id=MobileNetV3*)."""
    from official.vision.modeling.backbones import mobilenet
    from mobiledets_tf.models.backbone import make_blocks
    size = 224
    spec = _full_width_v3(arch)
    garden = mobilenet.MobileNet(model_id=MODEL_GARDEN_V3[arch][0], norm_epsilon=spec.batch_norm_epsilon,
                                 input_specs=keras.layers.InputSpec(shape=[None, size, size, 3]))
    rng = np.random.default_rng(0)
    for weight in garden.weights:   # BatchNorm statistics away from (0, 1), so that they matter
        if "moving_mean" in weight.name:
            weight.assign(rng.normal(0.0, 0.2, weight.shape).astype(np.float32))
        elif "moving_variance" in weight.name:
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
    garden_blocks = [garden.get_layer(l.name) for l in garden.layers
                     if type(l).__name__ in ("Conv2DBNBlock", "InvertedBottleneckBlock")][:len(spec.blocks)]
    garden_outputs = [garden.get_layer(l.name).output for l in garden.layers
                      if l.name.startswith("block_group_")][:len(spec.blocks)]
    # Model Garden's classifier ends with pooling and a 1x1 conv with bias; the backbone stops before.
    garden_backbone = keras.Model(garden.input, garden_outputs)

    image = keras.Input((size, size, 3))
    blocks, x, ours_outputs, expansions = make_blocks(spec), image, [], {}
    for block in blocks:
        tensors = block.wire(x)
        x = tensors["output"]
        ours_outputs.append(x)
        expansions[block] = tensors.get("expansion")
    c4 = spec.endpoints["C4"].block
    ours = keras.Model(image, ours_outputs + [expansions[blocks[c4]]])
    assert ours.count_params() == garden_backbone.count_params()
    assert len(garden_blocks) == len(blocks)
    for garden_block, block in zip(garden_blocks, blocks):
        _copy_model_garden_weights(garden_block, block)

    images = rng.uniform(-1.0, 1.0, (2, size, size, 3)).astype(np.float32)
    expected = [t.numpy() for t in garden_backbone(images, training=False)]
    # C4: the activated expansion conv of Model Garden's block, on its input.
    block = garden_blocks[c4]
    expected.append(block._activation_layer(block._norm0(block._conv0(expected[c4 - 1]), training=False)).numpy())
    actual = [t.numpy() for t in ours(images, training=False)]
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape, index
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-4 * max(1.0, np.abs(e).max()), err_msg=f"output {index}")
