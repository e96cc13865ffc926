"""Ranges for int8: the post-training calibration that works around the stock calibrator's in-place
bug (export/calibration.py), and the data-calibrated start of QAT activation ranges
(quantization/range_calibration.py)."""
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import schema_py_generated as tfl
from tensorflow.lite.python.optimize import calibrator as tflite_calibrator
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

from mobiledets_tf.export.calibration import MAX_REQUANTIZATION_SCALE, observed_ranges, recorded_ranges
from mobiledets_tf.export.converter import (ConversionError, convert_function, holding_variables, trace_in_form,
                                            with_collapsed_outputs_widened)
from mobiledets_tf.export.flatbuffer_model import builtin_code, pack_model, read_model
from mobiledets_tf.export.requantization import (TARGET_REQUANTIZATION_SCALE, XNNPACK_MAX_REQUANTIZATION_SCALE,
                                                 requantization_scale_excesses, widened_collapsed_outputs)
from mobiledets_tf.keras import keras
from mobiledets_tf.layers import HardSwish
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.quantization.range_calibration import calibrate_activation_ranges
from mobiledets_tf.tflite_runtime import load_interpreter

SIZE = 16


def _conv_hard_swish_conv():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = HardSwish(name="act")(x)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1, name="head")(x))


def _images(count=8):
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (SIZE, SIZE, 3)).astype(np.float32) for _ in range(count)]


def _op_tensors(model_bytes):
    """(op name, [input quantization], [output quantization]) of every op of an int8 model."""
    interpreter = load_interpreter(model_bytes, xnnpack=False)
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    quantization = lambda i: details[i]["quantization"]  # noqa: E731  (scale, zero point)
    return [(op["op_name"], [quantization(i) for i in op["inputs"] if i >= 0],
             [quantization(i) for i in op["outputs"]]) for op in interpreter._get_ops_details()]


def test_int8_decomposed_hard_swish_gets_the_ranges_its_tensors_take():
    model = _conv_hard_swish_conv()
    function = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    concrete = trace_in_form(function, "int8")   # the decomposed form: MUL, ADD+RELU6, MUL (unfolded)
    ops = _op_tensors(convert_function(concrete, holding_variables(model.variables), "int8", _images(),
                                       fold_scalar_muls=False))
    conv_scale, conv_zero = next(outputs[0] for name, _, outputs in ops if name == "CONV_2D")
    by_constant = [(inputs, outputs) for name, inputs, outputs in ops
                   if name == "MUL" and inputs[0][0] == pytest.approx(conv_scale)]
    shifted = [outputs for name, _, outputs in ops if name == "ADD"]
    assert len(by_constant) == 1 and len(shifted) == 1, ops
    # x * 1/6 spans exactly a sixth of x's range, relu6(x + 3) spans [0, min(6, max x + 3)]. The
    # stock calibrator gives x * 1/6 the hard-swish output's range, several times wider.
    assert by_constant[0][1][0][0] == pytest.approx(conv_scale / 6, rel=2e-3)
    x_max = (127 - conv_zero) * conv_scale
    assert shifted[0][0][0] == pytest.approx(min(6.0, x_max + 3) / 255, rel=2e-2)


def test_recalibrated_ranges_only_narrow_the_ranges_the_stock_calibrator_widened():
    model = _conv_hard_swish_conv()
    function = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    concrete = trace_in_form(function, "int8")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holding_variables(model.variables))
    float_model = converter.convert()
    samples = [[image[None]] for image in _images()]
    stock = recorded_ranges(tflite_calibrator.Calibrator(float_model).calibrate(lambda: iter(samples)))
    observed = observed_ranges(float_model, samples, sorted(stock))
    assert set(observed) == set(stock)
    widened = [i for i in stock if observed[i] != pytest.approx(stock[i], rel=1e-6, abs=1e-6)]
    for index in stock:   # the stock range contains the true one: it is a union with an output's
        assert stock[index][0] <= observed[index][0] + 1e-6 and observed[index][1] <= stock[index][1] + 1e-6
    # One tensor is widened: the in-place MUL's single-consumer input, x * 1/6.
    assert len(widened) == 1, (widened, stock, observed)
    (index,) = widened
    assert stock[index][1] - stock[index][0] > 3 * (observed[index][1] - observed[index][0])


def _range_variables(model):
    return {v.name.split(":")[0]: v for v in model.weights if v.name.endswith(("_min:0", "_max:0"))}


def test_qat_activation_ranges_are_calibrated_on_data_and_fake_quantization_is_restored():
    detector = SSDLiteDetector("mobiledet_cpu", num_classes=3, input_size=64, depth_multiplier=0.25,
                               quantization="qat")
    model = detector.model
    images = tf.random.stateless_uniform([2, 64, 64, 3], seed=[0, 1], minval=-1, maxval=1)
    before = {name: v.numpy().copy() for name, v in _range_variables(model).items()}
    originals = (quant_ops.MovingAvgQuantize, quant_ops.LastValueQuantize, quant_ops.AllValuesQuantize)

    count = calibrate_activation_ranges(model, [images])

    assert (quant_ops.MovingAvgQuantize, quant_ops.LastValueQuantize, quant_ops.AllValuesQuantize) == originals
    after = {name: v.numpy() for name, v in _range_variables(model).items()}
    changed = [name for name in after if not np.array_equal(after[name], before[name])]
    assert count > 100 and len(changed) >= count   # both ends of nearly every range moved off +-6
    assert after["quantize_layer/quantize_layer_min"] == -1 and after["quantize_layer/quantize_layer_max"] == 1
    # Weight ranges are the weights' own (symmetric, per output channel).
    stem = model.get_layer("quant_backbone_b00_conv")
    kernel = np.abs(stem.layer.kernel.numpy()).reshape(-1, stem.layer.kernel.shape[-1]).max(axis=0)
    np.testing.assert_allclose(after["quant_backbone_b00_conv/kernel_max"], kernel, rtol=1e-6)
    depthwise = model.get_layer("quant_backbone_b01_depthwise")
    kernel = np.abs(depthwise.layer.depthwise_kernel.numpy()).max(axis=(0, 1)).ravel()
    np.testing.assert_allclose(after["quant_backbone_b01_depthwise/depthwise_kernel_max"], kernel, rtol=1e-6)
    # Float activations pass through unquantized while recording, so each hard-swish's x * 1/6
    # range is exactly a sixth of the range of its input x (the BN output before it), and its gate
    # relu6(x + 3) spans at most [0, 6].
    stem_x = (after["quant_backbone_b00_bn/output_min"], after["quant_backbone_b00_bn/output_max"])
    stem_scaled = (after["backbone_b00_act/scaled_min"], after["backbone_b00_act/scaled_max"])
    np.testing.assert_allclose(np.array(stem_scaled) * 6, stem_x, rtol=1e-5)
    assert 0 <= after["backbone_b00_act/gate_min"] <= after["backbone_b00_act/gate_max"] <= 6
    # Fake quantization is back on: the outputs differ from the float model's, but not by much.
    quantized = model(images, training=False)
    float_outputs = detector.float_model(images, training=False)
    for q, f in zip(tf.nest.flatten(quantized), tf.nest.flatten(float_outputs)):
        difference = float(tf.reduce_max(tf.abs(q - f)))
        assert 0 < difference < 0.5 * float(tf.reduce_max(tf.abs(f)))


def test_qat_range_calibration_needs_batches():
    detector = SSDLiteDetector("mobilenet_v2", num_classes=3, input_size=64, depth_multiplier=0.25,
                               quantization="qat")
    with pytest.raises(ValueError, match="no batches"):
        calibrate_activation_ranges(detector.model, [])


def _dead_convolution_int8() -> bytes:
    """int8 of a model with a ReLU after a convolution whose outputs are all below zero but for a
    few of ~1e-6: convolutions `features`, `dead` (+ ReLU) and `after`."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", name="features")(inputs)
    dead = keras.layers.ReLU(name="dead_act")(keras.layers.Conv2D(4, 1, name="dead")(x))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1, name="after")(dead))
    highest = max(float(keras.Model(inputs, model.get_layer("dead").output)(image[np.newaxis]).numpy().max())
                  for image in _images())
    kernel, bias = model.get_layer("dead").get_weights()
    model.get_layer("dead").set_weights([kernel, bias - highest + 1e-6])
    function = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    return convert_function(trace_in_form(function, "int8"), holding_variables(model.variables), "int8", _images())


def test_a_dead_convolution_output_gets_a_range_xnnpack_accepts():
    """Without the widening, input scale x weight scale / output scale of the dead convolution is in
    the thousands, which XNNPACK refuses (its TFLite delegate aborts the process)."""
    model_bytes = _dead_convolution_int8()
    interpreter = load_interpreter(model_bytes, xnnpack=False)
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    convs = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    assert len(convs) == 3
    for op in convs:
        source, weights, output = op["inputs"][:3][0], op["inputs"][1], op["outputs"][0]
        ratio = (details[source]["quantization_parameters"]["scales"][0]
                 * details[weights]["quantization_parameters"]["scales"].max()
                 / details[output]["quantization_parameters"]["scales"][0])
        assert ratio <= MAX_REQUANTIZATION_SCALE * 1.01, (op, ratio)
    assert requantization_scale_excesses(model_bytes) == []
    load_interpreter(model_bytes)   # XNNPACK takes it


def _int8_outputs(model_bytes, images):
    interpreter = load_interpreter(model_bytes)   # with XNNPACK, which cannot prepare a refused scale
    interpreter.allocate_tensors()
    (image,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    scale, zero_point = image["quantization"]
    results = []
    for value in images:
        interpreter.set_tensor(image["index"], np.clip(np.round(value / scale) + zero_point, 0, 255)
                               .astype(image["dtype"])[np.newaxis])
        interpreter.invoke()
        results.append(interpreter.get_tensor(output["index"]).copy())
    return np.stack(results)


def test_a_collapsed_output_range_is_widened_after_conversion_or_named():
    """A file whose dead convolution kept a collapsed output range, as an int8_qat file can: the check
    finds that convolution alone; the converter's last step widens its output scale back to a ratio
    of 64, and the file then loads with XNNPACK and computes what the calibrated one does; a
    convolution that reads the widened tensor and goes over the limit with it is widened next. Where
    the tensor could not be widened (here: it is also a model output) the conversion fails, naming it."""
    calibrated = _dead_convolution_int8()
    model = read_model(calibrated)
    subgraph = model.subgraphs[0]
    convs = [op for op in subgraph.operators if builtin_code(model, op) == tfl.BuiltinOperator.CONV_2D]
    dead_index = convs[1].outputs[0]
    source, weights, dead_output = (subgraph.tensors[convs[1].inputs[0]], subgraph.tensors[convs[1].inputs[1]],
                                    subgraph.tensors[dead_index])
    ratio = source.quantization.scale[0] * max(weights.quantization.scale) / dead_output.quantization.scale[0]
    dead_output.quantization.scale = [dead_output.quantization.scale[0] / 1e4]
    collapsed = pack_model(model)

    (excess,) = requantization_scale_excesses(collapsed)
    assert excess.op == "CONV_2D" and excess.output == dead_output.name.decode()
    assert excess.scale == pytest.approx(1e4 * ratio, rel=1e-5)
    assert excess.scale >= XNNPACK_MAX_REQUANTIZATION_SCALE

    widened = with_collapsed_outputs_widened(collapsed, "int8_qat")
    assert requantization_scale_excesses(widened) == []
    widened_scale = read_model(widened).subgraphs[0].tensors[dead_index].quantization.scale[0]
    assert source.quantization.scale[0] * max(weights.quantization.scale) / widened_scale \
        == pytest.approx(TARGET_REQUANTIZATION_SCALE, rel=1e-5)
    np.testing.assert_array_equal(_int8_outputs(widened, _images()), _int8_outputs(calibrated, _images()))
    assert with_collapsed_outputs_widened(collapsed, "float32") is collapsed
    assert with_collapsed_outputs_widened(calibrated, "int8") is calibrated

    # The widened tensor is the input of `after`: an output scale of `after` that its collapsed input
    # left below the limit goes over it once that input is widened, and is widened in turn.
    after_input, after_weights, after_output = (subgraph.tensors[convs[2].inputs[0]],
                                                subgraph.tensors[convs[2].inputs[1]],
                                                subgraph.tensors[convs[2].outputs[0]])
    assert convs[2].inputs[0] == dead_index
    after_output.quantization.scale = [after_input.quantization.scale[0] * max(after_weights.quantization.scale) / 100]
    assert [e.output for e in requantization_scale_excesses(pack_model(model))] == [excess.output]
    cascaded, widened_excesses, left = widened_collapsed_outputs(pack_model(model))
    assert [e.output for e in widened_excesses] == [excess.output, after_output.name.decode()] and not left
    assert requantization_scale_excesses(cascaded) == []
    load_interpreter(cascaded)   # XNNPACK takes it

    model.subgraphs[0].outputs = list(model.subgraphs[0].outputs) + [dead_index]
    with pytest.raises(ConversionError, match="could not be widened") as info:
        with_collapsed_outputs_widened(pack_model(model), "int8_qat")
    assert excess.output in str(info.value) and "1 convolution(s)" in str(info.value)
