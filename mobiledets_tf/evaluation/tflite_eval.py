"""Runs an exported .tflite detector through the ai-edge-litert interpreter for COCO evaluation.

`tflite_predict_fn` returns a predict function with the same contract as the Keras one (uint8
images [B, S, S, 3] in, detection dict out), so `evaluate_predict_fn` scores a .tflite with exactly
the code that scores a checkpoint. Images are normalised to [-1, 1] as in training; a uint8 or int8
input gets each pixel p as the integer p - 128 + zero point when its scale is the normalisation's
2/255 (every int8 export of this package), as an app feeding camera pixels does, else the
normalised value quantized with the model's own scale and zero point. Boxes are
clipped to the image, as the Keras postprocess does (TFLite's postprocess op does not). A delegate
(e.g. `libedgetpu.so.1` for `*_edgetpu.tflite` models) can be loaded by path with its options.
"""
from typing import Dict, Mapping, Optional

import numpy as np

from mobiledets_tf.export.inference_graph import OUTPUT_NAMES
from mobiledets_tf.tflite_runtime import TFLiteModelError, load_interpreter  # noqa: F401 (re-exported)


def quantize_input(images: np.ndarray, input_details: Mapping) -> np.ndarray:
    """uint8 pixels [B, S, S, 3] -> the model's input: [-1, 1] floats, quantized if the input is."""
    normalised = images.astype(np.float32) * (2.0 / 255.0) - 1.0
    dtype = input_details["dtype"]
    if dtype == np.float32:
        return normalised
    scale, zero_point = input_details["quantization"]
    info = np.iinfo(dtype)
    if abs(scale * 127.5 - 1.0) < 1e-6:
        # The input scale is the normalisation's 2/255 (every export of this package): a pixel p is
        # the integer p - 128 + zero_point, as an app feeding camera pixels gives it. Rounding
        # (p - 127.5) / 127.5 / scale would land on ties (x.5) and merge neighbouring pixel values.
        return np.clip(images.astype(np.int32) - 128 + int(zero_point), info.min, info.max).astype(dtype)
    return np.clip(np.round(normalised / scale + zero_point), info.min, info.max).astype(dtype)


def tflite_predict_fn(model_path: str, delegate: Optional[str] = None,
                      delegate_options: Optional[Mapping[str, str]] = None,
                      num_threads: Optional[int] = None):
    """images uint8 [B, S, S, 3] -> {boxes, classes, scores, num_detections} from the .tflite."""
    interpreter = load_interpreter(model_path, delegate, delegate_options, num_threads)
    runner = interpreter.get_signature_runner()
    input_name, = runner.get_input_details()
    input_details = runner.get_input_details()[input_name]
    outputs = set(runner.get_output_details())
    if outputs != set(OUTPUT_NAMES):
        raise TFLiteModelError(f"{model_path}: expected the outputs {OUTPUT_NAMES}, found {sorted(outputs)}")
    expected_shape = tuple(int(d) for d in input_details["shape"][1:])

    def predict(images) -> Dict[str, np.ndarray]:
        images = np.asarray(images)
        if images.shape[1:] != expected_shape:
            raise ValueError(f"{model_path} takes images of shape {expected_shape}, got {images.shape[1:]}")
        results = [runner(**{input_name: quantize_input(image[np.newaxis], input_details)})
                   for image in images]
        stacked = {name: np.concatenate([r[name] for r in results]) for name in OUTPUT_NAMES}
        return {"boxes": np.clip(stacked["detection_boxes"], 0.0, 1.0), "classes": stacked["detection_classes"],
                "scores": stacked["detection_scores"],
                "num_detections": stacked["num_detections"].astype(np.int32)}

    return predict
