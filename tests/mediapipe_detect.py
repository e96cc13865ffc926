"""Runs MediaPipe's ObjectDetector on detection .tflite files and prints what it found as JSON.

Usage: python mediapipe_detect.py IMAGE.npy MODEL.tflite [MODEL.tflite ...]
IMAGE.npy holds an HxWx3 uint8 RGB image. For every model one JSON object is printed (as a list):
{"detections": [{"category_name", "score", "box": [x, y, width, height]}, ...]} or, when
the detector refuses the model, {"error": message}. Runs in a separate environment that has mediapipe.
"""
import json
import sys

import numpy as np
import mediapipe as mp
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python.vision import ObjectDetector, ObjectDetectorOptions


def detect(model_path: str, image: "mp.Image") -> dict:
    options = ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=model_path))
    try:
        detector = ObjectDetector.create_from_options(options)
    except Exception as error:  # the task reports invalid models as plain runtime errors
        return {"error": str(error)}
    with detector:
        result = detector.detect(image)
    detections = []
    for detection in result.detections:
        box = detection.bounding_box
        category = detection.categories[0]
        detections.append({"category_name": category.category_name, "score": category.score,
                           "box": [box.origin_x, box.origin_y, box.width, box.height]})
    return {"detections": detections}


def main(argv):
    pixels = np.ascontiguousarray(np.load(argv[1]), dtype=np.uint8)
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)
    print(json.dumps([detect(path, image) for path in argv[2:]]))


if __name__ == "__main__":
    main(sys.argv)
