"""TDB layers: widths, structure, and one implementation used both as a layer and in a flat graph."""
import numpy as np
import pytest
import tensorflow as tf

from mobiledets_tf.keras import keras
from mobiledets_tf.layers import (ConvBnAct, FusedInvertedBottleneck, HardSwish, InvertedBottleneck,
                                  SqueezeExcite, SqueezeExciteGate, TuckerConv, round_filters)
from mobiledets_tf.layers.block_rules import se_hidden_width
from mobiledets_tf.layers.activations import HARD_SWISH_FORMS, hard_swish_form


@pytest.mark.parametrize("filters,multiplier,expected", [
    (16, 1.0, 16), (12, 1.0, 16), (11.9, 1.0, 8), (4, 1.0, 8), (1, 1.0, 8), (72, 0.5, 40),
    (144, 0.25, 40), (32 * 0.75, 1.0, 24), (160 * 0.75, 1.0, 120), (20, 1.0, 24)])
def test_round_filters_rounds_half_up_to_multiples_of_eight(filters, multiplier, expected):
    assert round_filters(filters, multiplier) == expected


@pytest.mark.parametrize("rule, channels, block_input, expected", [
    ("round8", 72, 24, 16),            # MobileDets: round8(18)
    ("make_divisible", 72, 24, 24),    # slim / Model Garden: 16 would lose more than 10% of 18
    ("make_divisible", 16, 16, 8),     # never below 8
    ("make_divisible", 480, 80, 120),
    ("mnasnet", 72, 24, 6),            # MnasNet: int(block input * 0.25), not rounded
    ("mnasnet", 240, 40, 10),
])
def test_se_hidden_width_rules(rule, channels, block_input, expected):
    assert se_hidden_width(channels, 0.25, rule, block_input) == expected


def test_se_hidden_width_rejects_unknown_rules():
    with pytest.raises(ValueError, match="round8, make_divisible, mnasnet"):
        se_hidden_width(72, 0.25, "round4")


def test_round_filters_rejects_non_positive():
    with pytest.raises(ValueError, match="positive"):
        round_filters(0)


def _random_input(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


BLOCKS = {
    "ibn": lambda: InvertedBottleneck(16, 16, expansion=4, kernel_size=5, residual=True,
                                      se_ratio=0.25, activation="hard_swish", name="ibn"),
    "ibn_no_expansion": lambda: InvertedBottleneck(16, 8, expansion=1, se_ratio=0.25, name="ibn1"),
    "fused": lambda: FusedInvertedBottleneck(16, 24, expansion=8, strides=2, name="fused"),
    "tucker": lambda: TuckerConv(16, 16, input_rank_ratio=0.25, output_rank_ratio=0.75,
                                 residual=True, name="tucker"),
    "conv": lambda: ConvBnAct(32, 3, 2, "hard_swish", name="stem"),
}


@pytest.mark.parametrize("kind", sorted(BLOCKS))
def test_block_as_layer_and_as_flat_graph_share_weights_and_outputs(kind):
    block = BLOCKS[kind]()
    x = _random_input((2, 16, 16, 16 if kind != "conv" else 3))
    as_layer = block(x, training=False)

    inputs = keras.Input(x.shape[1:])
    flat = keras.Model(inputs, block.wire(inputs)["output"])
    nested = [l for l in flat.layers if isinstance(l, keras.Model)]
    assert not nested, "the wired graph must be flat"
    assert block not in flat.layers, "the block itself must not appear as a node"
    np.testing.assert_allclose(flat(x, training=False).numpy(), as_layer.numpy(), rtol=1e-5, atol=1e-5)
    assert {id(v) for v in flat.weights} == {id(v) for v in block.weights}

    # Training one view changes the other: the weights are the same variables.
    flat.layers[1].weights[0].assign_add(tf.ones_like(flat.layers[1].weights[0]))
    assert not np.allclose(block(x, training=False).numpy(), as_layer.numpy())


def _layer_types(model):
    return [type(l).__name__ for l in model.layers[1:]]


def _wired(block, channels, size=8):
    inputs = keras.Input((size, size, channels))
    return keras.Model(inputs, block.wire(inputs)["output"])


def test_inverted_bottleneck_structure_and_widths():
    model = _wired(InvertedBottleneck(32, 32, expansion=4, residual=True, se_ratio=0.25,
                                      activation="hard_swish", name="b"), 32)
    assert _layer_types(model) == [
        "Conv2D", "BatchNormalization", "HardSwish",                      # expand to 128
        "DepthwiseConv2D", "BatchNormalization", "HardSwish",
        "GlobalAveragePooling2D", "Conv2D", "HardSwish", "Conv2D", "SqueezeExciteGate",
        "Conv2D", "BatchNormalization", "Add"]
    convs = [l for l in model.layers if type(l).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [128, 32, 128, 32]  # expand, SE reduce 32 = round8(128/4), SE expand, project
    assert not convs[0].use_bias and convs[1].use_bias and not convs[3].use_bias


def test_inverted_bottleneck_without_expansion_has_no_expand_conv():
    block = InvertedBottleneck(16, 8, expansion=1, se_ratio=0.25, name="b")
    model = _wired(block, 16)
    assert _layer_types(model)[0] == "DepthwiseConv2D"
    assert block.se.hidden == 8
    assert "expansion" not in block.wire(keras.Input((8, 8, 16)))


def test_fused_bottleneck_puts_stride_on_the_full_conv():
    block = FusedInvertedBottleneck(16, 40, expansion=8, kernel_size=5, strides=2, name="f")
    model = _wired(block, 16, size=16)
    fused = model.get_layer("f_fused")
    assert (fused.filters, fused.kernel_size, fused.strides) == (128, (5, 5), (2, 2))
    assert model.output_shape == (None, 8, 8, 40)
    assert "Add" not in _layer_types(model)


def test_tucker_ranks_come_from_input_and_output_widths():
    block = TuckerConv(32, 16, input_rank_ratio=0.25, output_rank_ratio=0.75, name="t")
    assert (block.input_rank, block.output_rank) == (8, 16)  # round8(32*.25), round8(16*.75=12)
    block = TuckerConv(160, 160, input_rank_ratio=0.75, output_rank_ratio=0.75, name="t2")
    assert (block.input_rank, block.output_rank) == (120, 120)
    model = _wired(block, 160)
    assert model.get_layer("t2_core").kernel_size == (3, 3)
    assert model.get_layer("t2_project").activation.__name__ == "linear"


def test_residual_on_a_shape_change_is_rejected():
    with pytest.raises(ValueError, match="residual"):
        InvertedBottleneck(16, 24, residual=True, name="bad")
    with pytest.raises(ValueError, match="residual"):
        FusedInvertedBottleneck(16, 16, strides=2, residual=True, name="bad2")


@pytest.mark.parametrize("form", HARD_SWISH_FORMS)
def test_hard_swish_formula_in_both_op_forms(form):
    x = tf.constant(np.linspace(-8, 8, 161, dtype=np.float32))
    expected = x.numpy() * np.clip(x.numpy() + 3, 0, 6) / 6
    with hard_swish_form(form):
        np.testing.assert_allclose(HardSwish()(x).numpy(), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="hard-swish form"):
        with hard_swish_form("lut"):
            pass


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_squeeze_excite_gates_with_pooled_logits(gate):
    se = SqueezeExcite(8, 8, activation="relu", gate=gate, name="se")
    x = _random_input((1, 4, 4, 8))
    y = se(x).numpy()
    pooled = x.numpy().mean(axis=(1, 2), keepdims=True)
    hidden = np.maximum(pooled @ se.reduce.kernel.numpy()[0, 0] + se.reduce.bias.numpy(), 0)
    logits = hidden @ se.expand.kernel.numpy()[0, 0] + se.expand.bias.numpy()
    weights = 1 / (1 + np.exp(-logits)) if gate == "sigmoid" else np.clip(logits + 3, 0, 6) / 6
    np.testing.assert_allclose(y, x.numpy() * weights, rtol=1e-5, atol=1e-6)


def test_unknown_gate_and_activation_are_rejected():
    with pytest.raises(ValueError, match="gate"):
        SqueezeExciteGate("tanh")
    with pytest.raises(ValueError, match="activation"):
        ConvBnAct(8, activation="gelu", name="c")


def test_backbone_conv_hyperparameters_follow_the_reference():
    model = _wired(InvertedBottleneck(16, 16, expansion=4, kernel_size=5, name="b"), 16)
    bn = model.get_layer("b_expand_bn")
    assert (bn.momentum, bn.epsilon) == (0.99, 0.01)
    expand = model.get_layer("b_expand")
    assert isinstance(expand.kernel_initializer, keras.initializers.HeNormal)
    assert expand.kernel_regularizer.get_config()["l2"] == pytest.approx(2e-5)
    depthwise = model.get_layer("b_depthwise")
    assert depthwise.depthwise_initializer.get_config()["stddev"] == pytest.approx(
        np.sqrt(2 / 25) / 0.8796)
