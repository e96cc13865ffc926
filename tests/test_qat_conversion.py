"""A quantization-aware-trained model and its int8_qat .tflite compute the same thing: the sigmoid
gate is fake-quantized on the int8 LOGISTIC grid, and int32 biases the conversion saturates are
repaired (export/bias_repair.py)."""
import numpy as np
import tensorflow as tf

from mobiledets_tf.export.bias_repair import repair_saturated_biases, saturated_bias_channels
from mobiledets_tf.export.converter import (convert_function, converter_for_function, holding_variables,
                                            run_converter, trace_in_form)
from mobiledets_tf.export.flatbuffer_model import read_model
from mobiledets_tf.keras import keras
from mobiledets_tf.layers import SqueezeExciteGate
from mobiledets_tf.quantization.configs import SIGMOID_OUTPUT_RANGE, QATSqueezeExciteGate
from mobiledets_tf.quantization.qat import quantize_model
from mobiledets_tf.quantization.range_calibration import calibrate_activation_ranges
from mobiledets_tf.tflite_runtime import load_interpreter

SIZE = 8
DEAD_BIAS = -5.0


def test_sigmoid_gate_multiplies_by_the_int8_logistic_values():
    gate = QATSqueezeExciteGate("sigmoid")
    features = tf.ones((1, 2, 2, 64))
    logits = tf.reshape(tf.linspace(-8.0, 8.0, 64), (1, 1, 1, 64))
    gated = gate([features, logits], training=False).numpy()
    steps = gated * 256.0
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)   # k / 256 ...
    assert gated.max() == SIGMOID_OUTPUT_RANGE[1] and gated.min() == 0.0   # ... for k = 0..255
    exact = tf.sigmoid(logits).numpy()
    # Rounded to the nearest step; above 255/256 clamped, as TFLite's LOGISTIC does.
    assert np.abs(gated[0, 0, 0] - np.minimum(exact.ravel(), SIGMOID_OUTPUT_RANGE[1])).max() <= 1 / 512 + 1e-6
    # The float layer is untouched.
    np.testing.assert_allclose(SqueezeExciteGate("sigmoid")([features, logits]).numpy()[0, 0, 0], exact.ravel())


def test_qat_squeeze_excite_block_and_its_int8_file_agree_step_for_step():
    """Convolutions before a ReLU (weights fake-quantized too), pooling, the sigmoid gate: the int8
    file gives the QAT model's integers (with tfmot's own ReLU transform 15-25% of them differed)."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = keras.layers.ReLU(6.0, name="act")(keras.layers.Conv2D(16, 3, padding="same", name="features")(inputs))
    squeezed = keras.layers.GlobalAveragePooling2D(keepdims=True, name="pool")(x)
    squeezed = keras.layers.ReLU(name="reduce_act")(keras.layers.Conv2D(4, 1, name="reduce")(squeezed))
    x = SqueezeExciteGate("sigmoid", name="gate")([x, keras.layers.Conv2D(16, 1, name="excite")(squeezed)])
    qat = quantize_model(keras.Model(inputs, keras.layers.Conv2D(8, 1, name="project")(x)))
    images = np.random.default_rng(3).uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32)
    calibrate_activation_ranges(qat, [tf.constant(images)])
    function = tf.function(lambda x: qat(x, training=False),
                           input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    model_bytes = convert_function(trace_in_form(function, "int8_qat"), holding_variables(qat.variables), "int8_qat")
    for image in images:
        keras_out = qat(image[np.newaxis], training=False).numpy()[0]
        # Input integers as the QAT model's input quantizer rounds (half up).
        steps_apart = np.abs(_run(model_bytes, image, half_up=True) - keras_out) / _output_step(qat)
        assert (steps_apart > 0.5).mean() < 0.01, steps_apart.max()


def _output_step(qat) -> float:
    """The quantization step of the QAT model's output (its last layer's output range / 255)."""
    ranges = {v.name.split("/")[-1].split(":")[0]: float(v.numpy()) for v in qat.layers[-1].weights
              if v.name.endswith(("post_activation_min:0", "post_activation_max:0"))}
    return (ranges["post_activation_max"] - ranges["post_activation_min"]) / 255.0


def _model_with_a_dead_channel():
    """conv -> ReLU6 -> 1x1 conv whose output channel 0 has weights ~1e-7 and bias -5 (a class a
    head never predicts, its kernel decayed to nothing), QAT-wrapped and calibrated."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    x = keras.layers.ReLU(6.0, name="act")(keras.layers.Conv2D(16, 3, padding="same", name="features")(inputs))
    outputs = keras.layers.Conv2D(4, 1, name="logits")(x)
    model = keras.Model(inputs, outputs)
    kernel, bias = model.get_layer("logits").get_weights()
    kernel[..., 0] = np.random.default_rng(0).uniform(-1e-7, 1e-7, kernel[..., 0].shape)
    bias[0] = DEAD_BIAS
    model.get_layer("logits").set_weights([kernel, bias])
    qat = quantize_model(model)
    images = np.random.default_rng(1).uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32)
    calibrate_activation_ranges(qat, [tf.constant(images)])
    return qat, images


def _run(model_bytes, image, half_up=False):
    interpreter = load_interpreter(model_bytes)
    inputs, = interpreter.get_input_details()
    scale, zero_point = inputs["quantization"]
    rounded = np.floor(image / scale + zero_point + 0.5) if half_up else np.round(image / scale + zero_point)
    interpreter.set_tensor(inputs["index"], np.clip(rounded, 0, 255).astype(np.uint8)[np.newaxis])
    interpreter.invoke()
    output, = interpreter.get_output_details()
    return interpreter.get_tensor(output["index"])[0]


def _saturated(model_bytes) -> int:
    model = read_model(model_bytes)
    return int(sum(mask.sum() for _, mask in saturated_bias_channels(model, model.subgraphs[0])))


def test_int8_qat_conversion_repairs_the_biases_it_saturates():
    qat, images = _model_with_a_dead_channel()
    function = tf.function(lambda x: qat(x, training=False),
                           input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    concrete = trace_in_form(function, "int8_qat")
    trackable = holding_variables(qat.variables)
    stock = run_converter(converter_for_function(concrete, trackable, "int8_qat"), "int8_qat")
    repaired = convert_function(concrete, trackable, "int8_qat", fold_scalar_muls=False)
    assert _saturated(stock) == 1 and _saturated(repaired) == 0
    assert len(repaired) <= len(stock) + 64   # the repaired weights replace the old ones
    for image in images[:3]:
        keras_out = qat(image[np.newaxis], training=False).numpy()[0]
        stock_out, repaired_out = _run(stock, image), _run(repaired, image)
        np.testing.assert_allclose(keras_out[..., 0], DEAD_BIAS, atol=0.05)
        assert np.abs(stock_out[..., 0] - DEAD_BIAS).min() > 4.0   # the clamped bias: about 0, not -5
        np.testing.assert_allclose(repaired_out[..., 0], keras_out[..., 0], atol=0.05)
        # The live channels are untouched by the repair.
        np.testing.assert_array_equal(repaired_out[..., 1:], stock_out[..., 1:])


def test_a_model_without_saturated_biases_comes_back_unchanged():
    qat, _ = _model_with_a_dead_channel()
    function = tf.function(lambda x: qat(x, training=False),
                           input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    concrete = trace_in_form(function, "int8_qat")
    repaired = convert_function(concrete, holding_variables(qat.variables), "int8_qat", fold_scalar_muls=False)

    def float_conversion():
        raise AssertionError("no float conversion is needed")
    assert repair_saturated_biases(repaired, float_conversion) == (repaired, 0)
