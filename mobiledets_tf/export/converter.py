"""TFLite conversion of a `DetectionExportModule` at one of four precisions.

- float32: the default converter.
- float16: float16 weights (`supported_types=[float16]`), float computation on CPUs.
- int8: post-training full-integer quantization calibrated on a representative dataset
  (`TFLITE_BUILTINS_INT8`), uint8 input. One ramp image spanning [-1, 1] joins the calibration
  images so that the input scale is exactly 2/255: a uint8 pixel p then means (p - 127.5) / 127.5,
  as the model metadata states.
- int8_qat: a quantization-aware-trained model, whose ranges come from its fake-quant layers
  (`supported_ops` left unset: setting TFLITE_BUILTINS_INT8 without a representative dataset is
  rejected even for QAT models), uint8 input.
The detection outputs stay float32: the postprocess op only takes float or uint8 inputs, so the
converter puts DEQUANTIZE ops in front of it; without the postprocess op (`postprocess=False`) the raw
box encodings and class logits are the float32 outputs.
"""
from typing import Callable, Iterable, Iterator, List, Optional

import numpy as np
import tensorflow as tf

from mobiledets_tf.export.inference_graph import DetectionExportModule

PRECISIONS = ("float32", "float16", "int8", "int8_qat")


class ConversionError(RuntimeError):
    """The TFLite converter refused the model; the message keeps the converter's first error line."""


def variables_only(module: DetectionExportModule) -> tf.Module:
    """A trackable holding just the model's variables for the converter to save with the function.

    Handing the converter the Keras model itself makes it save (and trace a function for) every
    layer first, which takes most of the conversion time.
    """
    holder = tf.Module()
    holder.model_variables = list(module.model.variables)
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


def converter_for(module: DetectionExportModule, precision: str,
                  representative_images: Optional[List[np.ndarray]] = None,
                  postprocess: bool = True) -> tf.lite.TFLiteConverter:
    """A converter configured for `precision` (see the module docstring), of `module.tflite_detect`
    or, without `postprocess`, of `module.tflite_raw`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    function = module.tflite_detect if postprocess else module.tflite_raw
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], variables_only(module))
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if not representative_images:
            raise ValueError("int8 post-training quantization needs representative images")
        size = function.input_signature[0].shape[1]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(representative_images, size)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    elif precision == "int8_qat":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.uint8
    return converter


def convert(module: DetectionExportModule, precision: str,
            representative_images: Optional[List[np.ndarray]] = None, postprocess: bool = True) -> bytes:
    """The .tflite flatbuffer of `module.tflite_detect` (`module.tflite_raw`) at `precision`."""
    converter = converter_for(module, precision, representative_images, postprocess)
    try:
        return converter.convert()
    except Exception as e:  # the converter raises several unrelated types (ConverterError, ValueError...)
        message = str(e).strip().splitlines()
        raise ConversionError(f"TFLite conversion to {precision} failed: "
                              f"{message[0] if message else type(e).__name__}") from e
