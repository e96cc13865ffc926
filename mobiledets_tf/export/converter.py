"""TFLite conversion of a `DetectionExportModule` at one of four precisions.

- float32: the default converter.
- float16: float16 weights (`supported_types=[float16]`), float computation on CPUs.
- int8: post-training full-integer quantization calibrated on a representative dataset
  (`TFLITE_BUILTINS_INT8`), uint8 input, with each tensor's range as observed on those images
  (`mobiledets_tf.export.calibration` works around the stock calibrator's in-place bug). One ramp image spanning [-1, 1] joins the calibration
  images so that the input scale is exactly 2/255: a uint8 pixel p then means (p - 127.5) / 127.5,
  as the model metadata states.
- int8_qat: a quantization-aware-trained model, whose ranges come from its fake-quant layers
  (`supported_ops` left unset: setting TFLITE_BUILTINS_INT8 without a representative dataset is
  rejected even for QAT models), uint8 input.
Hard-swish is traced in the op form of `hard_swish_form` (see `mobiledets_tf.layers.activations`):
by default "decomposed" for int8 (MUL, ADD+RELU6, MUL, which the CPU delegate XNNPACK runs in int8,
where it leaves the int8 HARD_SWISH op to TFLite's scalar kernel on x86) and "fused" for the float
precisions (one HARD_SWISH op, which XNNPACK runs fast in float). An int8_qat model's form was fixed
when its QAT run started (`model.qat_activation_form`), so it takes no `hard_swish_form`.
An int8_qat graph then gets back the int32 biases its conversion saturated (channels with near-zero
weights; `mobiledets_tf.export.bias_repair`, from a float32 conversion of the same graph, made only
when one is found). int8 and int8_qat graphs then lose their multiplications by a constant scalar
(hard-swish's and the hard-sigmoid gate's 1/6), folded into quantization scales (`mobiledets_tf.export.scale_folding`:
the same integers, elementwise ops fewer); `fold_scalar_muls=False` keeps them.
Last, a convolution whose requantization scale XNNPACK refuses (an output range that collapsed, as
an int8_qat model's can on a dead ReLU) gets its output range widened
(`mobiledets_tf.export.requantization`); one that cannot be raises `ConversionError` naming it,
instead of becoming a file that XNNPACK cannot prepare.
The detection outputs stay float32: the postprocess op only takes float or uint8 inputs, so the
converter puts DEQUANTIZE ops in front of it; without the postprocess op (`postprocess=False`) the raw
box encodings and class logits are the float32 outputs.
"""
import contextlib
from typing import Callable, Iterable, Iterator, List, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from mobiledets_tf.export.bias_repair import repair_saturated_biases
from mobiledets_tf.export.calibration import calibrated_without_shared_buffers
from mobiledets_tf.export.inference_graph import DetectionExportModule
from mobiledets_tf.export.requantization import XNNPACK_MAX_REQUANTIZATION_SCALE, widened_collapsed_outputs
from mobiledets_tf.export.scale_folding import fold_scalar_multiplications
from mobiledets_tf.layers.activations import check_hard_swish_form, hard_swish_form as traced_in_form

PRECISIONS = ("float32", "float16", "int8", "int8_qat")


def default_hard_swish_form(precision: str) -> str:
    """The op form hard-swish is exported in at `precision` when none is asked for."""
    return "decomposed" if precision == "int8" else "fused"


def resolve_hard_swish_form(precision: str, form: Optional[str]) -> str:
    """`form` checked against `precision`, or the precision's default when `form` is None or "auto"."""
    if form in (None, "auto"):
        return default_hard_swish_form(precision)
    check_hard_swish_form(form)
    if precision == "int8_qat":
        raise ValueError("an int8_qat export keeps the hard-swish form its QAT run was trained in "
                         "(model.qat_activation_form); leave the hard-swish form unset")
    return form


class ConversionError(RuntimeError):
    """The TFLite converter refused the model; the message keeps the converter's first error line."""


def variables_only(module: DetectionExportModule) -> tf.Module:
    """A trackable holding just the model's variables for the converter to save with the function.

    Handing the converter the Keras model itself makes it save (and trace a function for) every
    layer first, which takes most of the conversion time.
    """
    return holding_variables(module.model.variables)


def holding_variables(variables) -> tf.Module:
    """A trackable holding just `variables` (see `variables_only`)."""
    holder = tf.Module()
    holder.model_variables = list(variables)
    return holder


def input_range_ramp(input_size: int) -> np.ndarray:
    """A [1, S, S, 3] image whose values run from -1 to 1 (fixes the int8 input range)."""
    ramp = np.linspace(-1.0, 1.0, input_size * input_size * 3, dtype=np.float32)
    return ramp.reshape(1, input_size, input_size, 3)


def _representative_dataset(images: Iterable[np.ndarray], input_size: int) -> Callable[[], Iterator]:
    def generate():
        yield [input_range_ramp(input_size)]
        for image in images:
            yield [np.asarray(image, np.float32).reshape(1, input_size, input_size, 3)]
    return generate


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def trace_in_form(function: tf.types.experimental.GenericFunction, precision: str,
                  hard_swish_form: Optional[str] = None) -> tf.types.experimental.ConcreteFunction:
    """The concrete function of `function` (a `tf.function` with an input signature), traced with
    hard-swish in `hard_swish_form` (default: the precision's, see `resolve_hard_swish_form`)."""
    with traced_in_form(resolve_hard_swish_form(precision, hard_swish_form)):
        return function.get_concrete_function()


def converter_for_function(concrete: tf.types.experimental.ConcreteFunction, trackable: tf.Module,
                           precision: str, representative_images: Optional[List[np.ndarray]] = None
                           ) -> tf.lite.TFLiteConverter:
    """A converter of `concrete` (one float32 input [1, S, S, 3] in [-1, 1]; `trackable` holds its
    variables) configured for `precision` as the module docstring says."""
    check_precision(precision)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], trackable)
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if not representative_images:
            raise ValueError("int8 post-training quantization needs representative images")
        size = concrete.structured_input_signature[0][0].shape[1]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(representative_images, size)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    elif precision == "int8_qat":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.uint8
    return converter


def run_converter(converter: tf.lite.TFLiteConverter, precision: str) -> bytes:
    """`converter.convert()`, its failures raised as `ConversionError`."""
    calibration = calibrated_without_shared_buffers() if precision == "int8" else contextlib.nullcontext()
    try:
        with calibration:
            return converter.convert()
    except Exception as e:  # the converter raises several unrelated types (ConverterError, ValueError...)
        message = str(e).strip().splitlines()
        raise ConversionError(f"TFLite conversion to {precision} failed: "
                              f"{message[0] if message else type(e).__name__}") from e


def with_scalar_muls_folded(model_bytes: bytes, precision: str, fold_scalar_muls: bool = True) -> bytes:
    """An int8 or int8_qat flatbuffer with its scalar multiplications folded (module docstring)."""
    if not (fold_scalar_muls and precision.startswith("int8")):
        return model_bytes
    model_bytes, folded = fold_scalar_multiplications(model_bytes)
    logging.info("Folded %d multiplications by a constant into quantization scales", folded)
    return model_bytes


def with_saturated_biases_repaired(model_bytes: bytes, precision: str,
                                   float_conversion: Callable[[], bytes]) -> bytes:
    """An int8_qat flatbuffer whose int32 biases the conversion saturated repaired from the float32
    conversion of the same graph (`mobiledets_tf.export.bias_repair`)."""
    if precision != "int8_qat":
        return model_bytes
    model_bytes, repaired = repair_saturated_biases(model_bytes, float_conversion)
    if repaired:
        logging.info("Repaired %d int32 biases the conversion had saturated (channels with near-zero "
                     "weights), raising those channels' weight scales", repaired)
    return model_bytes


def with_collapsed_outputs_widened(model_bytes: bytes, precision: str) -> bytes:
    """An int8 or int8_qat flatbuffer whose convolutions all have a requantization scale XNNPACK takes:
    collapsed output ranges widened (`mobiledets_tf.export.requantization`), or `ConversionError`
    naming the convolutions whose output could not be widened."""
    if not precision.startswith("int8"):
        return model_bytes
    model_bytes, widened, left = widened_collapsed_outputs(model_bytes)
    if widened:
        logging.info("Widened the collapsed output ranges of %d convolution(s) that XNNPACK would refuse: %s",
                     len(widened), "; ".join(excess.describe() for excess in widened))
    if left:
        listed = "; ".join(excess.describe() for excess in left[:5])
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        raise ConversionError(
            f"{precision}: {len(left)} convolution(s) with input scale x weight scale / output scale "
            f">= {XNNPACK_MAX_REQUANTIZATION_SCALE:g}, which XNNPACK refuses (it cannot prepare such a "
            f"file), whose output is read by an op that keeps its quantization or is a model output, "
            f"so its range could not be widened: {listed}{more}")
    return model_bytes


def convert(module: DetectionExportModule, precision: str,
            representative_images: Optional[List[np.ndarray]] = None, postprocess: bool = True,
            hard_swish_form: Optional[str] = None, fold_scalar_muls: bool = True) -> bytes:
    """The .tflite flatbuffer of `module.tflite_detect` (`module.tflite_raw`) at `precision`."""
    check_precision(precision)
    function = module.tflite_detect if postprocess else module.tflite_raw
    concrete = trace_in_form(function, precision, hard_swish_form)
    return convert_function(concrete, variables_only(module), precision, representative_images, fold_scalar_muls)


def convert_function(concrete: tf.types.experimental.ConcreteFunction, trackable: tf.Module, precision: str,
                     representative_images: Optional[List[np.ndarray]] = None,
                     fold_scalar_muls: bool = True) -> bytes:
    """The .tflite flatbuffer of any image model's `concrete` function at `precision`, with this
    package's settings (trace it with `trace_in_form` to get the package's hard-swish form)."""
    converter = converter_for_function(concrete, trackable, precision, representative_images)
    model_bytes = run_converter(converter, precision)
    model_bytes = with_saturated_biases_repaired(
        model_bytes, precision,
        lambda: run_converter(converter_for_function(concrete, trackable, "float32"), "float32"))
    return with_collapsed_outputs_widened(with_scalar_muls_folded(model_bytes, precision, fold_scalar_muls),
                                          precision)
