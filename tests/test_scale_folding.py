"""Folding int8 multiplications by a constant into quantization scales (export/scale_folding.py):
what is folded, what must stay, and that the folded graph computes what the unfolded one did."""
import collections

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import schema_py_generated as tfl

from mobiledets_tf.export.converter import convert_function, holding_variables, trace_in_form
from mobiledets_tf.export.flatbuffer_model import as_bytes, builtin_code, pack_model, read_model
from mobiledets_tf.export.scale_folding import _Graph, _scalar_multiplication, fold_scalar_multiplications
from mobiledets_tf.export.tflite_model import read_tflite
from mobiledets_tf.keras import keras
from mobiledets_tf.layers import HardSwish, SqueezeExciteGate
from mobiledets_tf.tflite_runtime import load_interpreter

SIZE = 16
OP = tfl.BuiltinOperator


def _hard_swish_block(residual: bool = False, scaled_input_conv: bool = False):
    """Expansion, hard-swish, depthwise, hard-swish, SE with the hard-sigmoid gate, projection:
    MobileNetV3's block. `residual`: the first hard-swish also feeds an ADD. `scaled_input_conv`:
    a convolution and a pooling read `relu(x) * 0.25`."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 1, name="stem")(inputs)
    stem = HardSwish(name="stem_act")(x)
    x = keras.layers.Conv2D(16, 1, name="expand")(stem)
    x = HardSwish(name="expand_act")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = HardSwish(name="depthwise_act")(x)
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    squeezed = keras.layers.ReLU(name="reduce_act")(keras.layers.Conv2D(4, 1, name="reduce")(squeezed))
    logits = keras.layers.Conv2D(16, 1, name="excite")(squeezed)
    x = SqueezeExciteGate("hard_sigmoid", name="gate")([x, logits])
    x = keras.layers.Conv2D(8, 1, name="project")(x)
    if residual:
        x = keras.layers.Add(name="residual")([x, stem])
    if scaled_input_conv:
        # The ReLU keeps the converter from folding the scaling into `project`; it folds it into
        # `after_scaling` itself, but not into the pooling.
        scaled = keras.layers.Rescaling(0.25)(keras.layers.ReLU(name="project_act")(x))
        pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="scaled_pool")(scaled)
        x = keras.layers.Add(name="sum")([keras.layers.Conv2D(8, 3, padding="same", name="after_scaling")(scaled),
                                          keras.layers.Conv2D(8, 1, name="after_pool")(pooled)])
    return keras.Model(inputs, x)


def _images(count=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (SIZE, SIZE, 3)).astype(np.float32) for _ in range(count)]


def _int8(model) -> bytes:
    """`model` in int8 with the decomposed hard-swish, before any folding."""
    function = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    return convert_function(trace_in_form(function, "int8"), holding_variables(model.variables), "int8",
                            _images(), fold_scalar_muls=False)


def _ops(model_bytes) -> collections.Counter:
    return collections.Counter(op.name for op in read_tflite(model_bytes).main.operators)


def _scalar_muls(model_bytes) -> int:
    graph = read_tflite(model_bytes).main
    return sum(1 for op in graph.operators if op.name == "MUL"
               and any(graph.tensors[i].is_constant and np.prod(graph.tensors[i].shape) == 1 for i in op.inputs))


def _outputs(model_bytes, images):
    interpreter = load_interpreter(model_bytes)
    interpreter.allocate_tensors()
    (image,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    scale, zero_point = image["quantization"]
    results = []
    for value in images:
        quantized = np.clip(np.round(value / scale) + zero_point, 0, 255).astype(image["dtype"])
        interpreter.set_tensor(image["index"], quantized[np.newaxis])
        interpreter.invoke()
        results.append(interpreter.get_tensor(output["index"]).astype(np.int32))
    return np.stack(results), output["quantization"]


def test_every_multiplication_by_one_sixth_folds_and_the_integers_stay():
    unfolded = _int8(_hard_swish_block())
    folded, count = fold_scalar_multiplications(unfolded)
    # Three hard-swishes (x * 1/6 each) and the hard-sigmoid gate's / 6.
    assert _scalar_muls(unfolded) == count == 4
    assert _scalar_muls(folded) == 0
    before, after = _ops(unfolded), _ops(folded)
    assert after["MUL"] == before["MUL"] - 4
    assert {op: n for op, n in after.items() if op != "MUL"} == {op: n for op, n in before.items() if op != "MUL"}
    images = _images(16, seed=1)
    (old, old_quantization), (new, new_quantization) = _outputs(unfolded, images), _outputs(folded, images)
    assert old_quantization == new_quantization   # the output's scale is that of the projection: untouched
    # One requantization fewer per fold (x * 1/6 read at x's own scale): at most one step apart.
    assert np.abs(old - new).max() <= 1 and np.mean(old != new) < 0.05
    # And the folded model is as close to float as the unfolded one.
    model = _hard_swish_block()
    reference = np.stack([model(image[np.newaxis], training=False).numpy() for image in images])
    scale, zero_point = new_quantization
    error = lambda q: np.abs((q - zero_point) * scale - reference).mean()   # noqa: E731
    assert error(new) <= 1.05 * error(old)


def test_a_multiplication_whose_result_reaches_an_add_stays():
    unfolded = _int8(_hard_swish_block(residual=True))
    folded, count = fold_scalar_multiplications(unfolded)
    # The stem's hard-swish also feeds the residual ADD, which reads it at its own scale: it stays.
    assert _scalar_muls(unfolded) == 4 and count == 3 and _scalar_muls(folded) == 1
    images = _images(8, seed=2)
    (old, _), (new, _) = _outputs(unfolded, images), _outputs(folded, images)
    assert np.abs(old - new).max() <= 1


def test_convolutions_after_the_product_absorb_it_in_their_weight_scales():
    unfolded = _int8(_hard_swish_block(scaled_input_conv=True))
    folded, count = fold_scalar_multiplications(unfolded)
    assert count == _scalar_muls(unfolded) == 5 and _scalar_muls(folded) == 0
    graph, old_graph = read_model(folded).subgraphs[0], read_model(unfolded).subgraphs[0]
    old_tensors = {as_bytes(t.name): t for t in old_graph.tensors}
    # The convolution after the pooled product takes the 0.25 in its weight scales, as those after a
    # hard-swish take its 1/6 (expand, depthwise, and SE reduce through the MEAN); the projection reads
    # hard-swish x gate and takes both sixths.
    convolutions = [op for op in graph.operators if len(op.inputs) == 3 and len(graph.tensors[op.inputs[1]].shape) == 4]
    ratios = []
    for op in convolutions:
        weights = graph.tensors[op.inputs[1]]
        old = old_tensors[as_bytes(weights.name)]
        ratio = np.asarray(weights.quantization.scale) / np.asarray(old.quantization.scale)
        assert np.ptp(ratio) <= 1e-6 * ratio.max()
        ratios.append(round(float(ratio[0]), 5))
    assert sorted(ratios) == sorted([1.0, 1.0] + [round(1 / 6, 5)] * 3 + [round(1 / 36, 5), 1.0, 0.25]), ratios
    images = _images(8, seed=3)
    (old, _), (new, _) = _outputs(unfolded, images), _outputs(folded, images)
    assert np.abs(old - new).max() <= 1


def _convolution_reading_the_scaled_product(model_bytes: bytes, product_scale_factor: float) -> bytes:
    """The `scaled_input_conv` block with `after_scaling` reading `relu(x) * 0.25` itself (the
    converter folds that scaling into the convolution, so it is rewired here) and the product's scale
    times `product_scale_factor`, as when quantization-aware training gives the product a range of its own."""
    model = read_model(model_bytes)
    graph, view = model.subgraphs[0], _Graph(model)   # the scalar multiplications as the folding finds them
    code = lambda op: builtin_code(model, op)   # noqa: E731
    pooled = {int(op.inputs[0]) for op in graph.operators if code(op) in (OP.MEAN, OP.AVERAGE_POOL_2D)}
    ((scaling, (x, _)),) = [(op, _scalar_multiplication(view, op)) for op in graph.operators
                            if int(op.outputs[0]) in pooled and _scalar_multiplication(view, op)]
    (convolution,) = [op for op in graph.operators if code(op) == OP.CONV_2D and int(op.inputs[0]) == x]
    product = int(scaling.outputs[0])
    convolution.inputs[0] = product
    graph.tensors[product].quantization.scale = [float(s) * product_scale_factor
                                                 for s in graph.tensors[product].quantization.scale]
    return pack_model(model)


def test_a_convolution_reading_the_product_at_a_scale_of_its_own_keeps_it():
    unfolded = _int8(_hard_swish_block(scaled_input_conv=True))
    # A convolution reading the product absorbs the fold only while its bias's scale (input scale x
    # weight scale) stays that of x times c: within TFLite's tolerance it folds, 1% off it does not.
    within, folded_within = fold_scalar_multiplications(_convolution_reading_the_scaled_product(unfolded, 1 + 1e-8))
    beyond, folded_beyond = fold_scalar_multiplications(_convolution_reading_the_scaled_product(unfolded, 1.01))
    assert folded_within == 5 and _scalar_muls(within) == 0
    assert folded_beyond == 4 and _scalar_muls(beyond) == 1


def test_models_without_a_scalar_multiplication_come_back_unchanged():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    model = keras.Model(inputs, keras.layers.ReLU(6.0)(keras.layers.Conv2D(4, 3)(inputs)))
    unfolded = _int8(model)
    assert fold_scalar_multiplications(unfolded) == (unfolded, 0)


@pytest.mark.parametrize("fold", [True, False])
def test_convert_folds_int8_by_default_and_keeps_float_untouched(fold):
    model = _hard_swish_block()
    function = lambda: tf.function(lambda x: model(x, training=False),   # noqa: E731  (one per trace)
                                   input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    int8 = convert_function(trace_in_form(function(), "int8"), holding_variables(model.variables), "int8",
                            _images(), **({} if fold else {"fold_scalar_muls": False}))
    assert _scalar_muls(int8) == (0 if fold else 4)
    float32 = convert_function(trace_in_form(function(), "float32"), holding_variables(model.variables),
                               "float32", fold_scalar_muls=fold)
    assert _ops(float32)["HARD_SWISH"] == 3
