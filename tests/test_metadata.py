"""Tests for mobiledets_tf.export.metadata: detector models keep running, carry M001 metadata and
their labels, and MediaPipe's ObjectDetector loads them and names its detections with our labels."""
import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert import schema_py_generated as tfl
from ai_edge_litert.interpreter import Interpreter

from mobiledets_tf.detection.box_coding import BOX_CODER_SCALES
from mobiledets_tf.export import metadata
from mobiledets_tf.export.postprocess_op import NmsSettings, detection_postprocess

IMAGE_SIZE = 64
GRID = 8  # one anchor per cell of an 8x8 grid
NUM_ANCHORS = GRID * GRID
LABELS = ("cat", "dog", "bird")
MAX_DETECTIONS = 10
ROLE_OF_RETURN_INDEX = ("location", "category", "score", "number of detections")
MEDIAPIPE_VERSION = "1.2.2"
MEDIAPIPE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mediapipe_detect.py")


# ---------------------------------------------------------------- a tiny SSD-style .tflite


class _TinySsd(tf.Module):
    """One strided conv predicting box encodings and sigmoid class scores for a grid of anchors."""

    def __init__(self):
        super().__init__()
        num_outputs = 4 + len(LABELS) + 1
        self.kernel = tf.Variable(tf.random.stateless_normal([8, 8, 3, num_outputs], seed=[1, 2], stddev=0.1))
        centres = (np.arange(GRID) + 0.5) / GRID
        ycentre, xcentre = [c.reshape(-1) for c in np.meshgrid(centres, centres, indexing="ij")]
        size = np.full(NUM_ANCHORS, 0.25)
        self.anchors = np.stack([ycentre, xcentre, size, size], 1).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
    def __call__(self, image):
        head = tf.reshape(tf.nn.conv2d(image, self.kernel, IMAGE_SIZE // GRID, "VALID"), [1, NUM_ANCHORS, -1])
        return detection_postprocess(head[..., :4], tf.sigmoid(head[..., 4:]), self.anchors, len(LABELS),
                                     NmsSettings(max_detections=MAX_DETECTIONS), BOX_CODER_SCALES)


def _convert(module, quantize: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.allow_custom_ops = True
    if quantize:
        rng = np.random.RandomState(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-1, 1, [1, IMAGE_SIZE, IMAGE_SIZE, 3]).astype(np.float32)] for _ in range(4))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    return converter.convert()


@pytest.fixture(scope="module")
def tiny_detectors():
    """{"float": float32-input model, "int8": full-int8 model with uint8 input}, both without metadata."""
    module = _TinySsd()
    return {"float": _convert(module, quantize=False), "int8": _convert(module, quantize=True)}


def _run(model_bytes: bytes, pixels: np.ndarray) -> dict:
    """Runs the model on HxWx3 uint8 pixels (normalised to [-1, 1] for a float input); outputs by role."""
    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    image = interpreter.get_input_details()[0]
    if image["dtype"] == np.float32:
        pixels = (pixels.astype(np.float32) - 127.5) / 127.5
    interpreter.set_tensor(image["index"], pixels[None].astype(image["dtype"]))
    interpreter.invoke()
    return {_role(detail["name"]): interpreter.get_tensor(detail["index"])[0]
            for detail in interpreter.get_output_details()}


def _role(output_name: str) -> str:
    """The converter names the outputs after the position of the value in the returned tuple."""
    return ROLE_OF_RETURN_INDEX[int(output_name.rsplit(":", 1)[1])]


def _output_names(model_bytes: bytes):
    model = tfl.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    subgraph = model.subgraphs[0]
    return [subgraph.tensors[i].name.decode() for i in subgraph.outputs]


def _metadata_entries(model_bytes: bytes):
    model = tfl.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    return [entry.name.decode() for entry in model.metadata]


def _random_image(seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, [IMAGE_SIZE, IMAGE_SIZE, 3]).astype(np.uint8)


# ---------------------------------------------------------------- metadata in the model


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_model_with_metadata_runs_with_identical_outputs(tiny_detectors, kind):
    plain = tiny_detectors[kind]
    with_metadata = metadata.add_detection_metadata(plain, LABELS, name="tiny", description="A tiny detector.")
    assert len(with_metadata) > len(plain)
    pixels = _random_image()
    expected, actual = _run(plain, pixels), _run(with_metadata, pixels)
    assert sorted(actual) == sorted(ROLE_OF_RETURN_INDEX)
    assert actual["number of detections"] == MAX_DETECTIONS
    for role in ROLE_OF_RETURN_INDEX:
        np.testing.assert_array_equal(actual[role], expected[role])


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_metadata_buffer_labels_and_output_order(tiny_detectors, kind):
    model = metadata.add_detection_metadata(tiny_detectors[kind], LABELS, name="tiny", description="d",
                                            version="v1")
    assert metadata.read_metadata_buffer(model)[4:8] == b"M001"
    assert metadata.read_labels(model) == list(LABELS)
    # The converter does not keep the returned order, so the metadata must follow the real output order.
    output_roles = [_role(name) for name in _output_names(model)]
    assert output_roles != list(ROLE_OF_RETURN_INDEX)
    assert metadata.read_output_tensor_names(model) == output_roles
    entries = _metadata_entries(model)
    assert entries.count("TFLITE_METADATA") == 1
    assert set(_metadata_entries(tiny_detectors[kind])) <= set(entries)
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        assert [(info.filename, info.compress_type) for info in archive.infolist()] == [
            ("labels.txt", zipfile.ZIP_STORED)]


def test_adding_metadata_again_replaces_it(tiny_detectors):
    first = metadata.add_detection_metadata(tiny_detectors["float"], LABELS, name="tiny", description="d")
    again = metadata.add_detection_metadata(first, ["a", "b", "c"], name="tiny", description="d")
    assert metadata.read_labels(again) == ["a", "b", "c"]
    assert _metadata_entries(again).count("TFLITE_METADATA") == 1
    np.testing.assert_array_equal(_run(again, _random_image())["location"],
                                  _run(first, _random_image())["location"])


def test_model_without_metadata_has_none(tiny_detectors):
    with pytest.raises(ValueError, match="TFLITE_METADATA"):
        metadata.read_metadata_buffer(tiny_detectors["float"])
    with pytest.raises(ValueError, match="labels.txt"):
        metadata.read_labels(tiny_detectors["float"])


def test_rejects_model_without_postprocess_op():
    @tf.function(input_signature=[tf.TensorSpec([1, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
    def classifier(image):
        return tf.reduce_mean(image, axis=[1, 2])

    model = tf.lite.TFLiteConverter.from_concrete_functions([classifier.get_concrete_function()]).convert()
    with pytest.raises(ValueError, match="TFLite_Detection_PostProcess"):
        metadata.add_detection_metadata(model, LABELS, name="tiny", description="d")


def test_rejects_empty_or_miscounted_labels(tiny_detectors):
    with pytest.raises(ValueError, match="labels must not be empty"):
        metadata.add_detection_metadata(tiny_detectors["float"], [], name="tiny", description="d")
    with pytest.raises(ValueError, match="2 labels given but the postprocess op detects 3 classes"):
        metadata.add_detection_metadata(tiny_detectors["float"], LABELS[:2], name="tiny", description="d")


# ---------------------------------------------------------------- MediaPipe's ObjectDetector


def _mediapipe_python() -> str:
    """Python of a separate venv with mediapipe (it needs absl-py >= 2, unlike this package), made once."""
    tools = os.environ.get("MOBILEDETS_TOOLS_DIR", os.path.expanduser("~/.cache/mobiledets_tf/tools"))
    venv = os.path.join(tools, "mediapipe-venv")
    python = os.path.join(venv, "bin", "python")
    ready = os.path.join(venv, f"mediapipe-{MEDIAPIPE_VERSION}.installed")
    if not os.path.exists(ready):
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True, timeout=300)
        subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
                        f"mediapipe=={MEDIAPIPE_VERSION}"], check=True, timeout=1200)
        open(ready, "w").close()
    return python


def mediapipe_detect(image_path: str, model_paths) -> list:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    run = subprocess.run([_mediapipe_python(), MEDIAPIPE_SCRIPT, image_path, *model_paths],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _assert_same_detections(found: list, expected: dict, score_tolerance: float):
    """MediaPipe's detections are the model's, named by our labels, with boxes in pixels."""
    assert len(found) == MAX_DETECTIONS
    for detection, box, category, score in zip(found, expected["location"], expected["category"],
                                               expected["score"]):
        assert detection["category_name"] == LABELS[int(category)]
        assert abs(detection["score"] - score) <= score_tolerance
        ymin, xmin, ymax, xmax = box * IMAGE_SIZE
        x, y, width, height = detection["box"]
        np.testing.assert_allclose([x, y, width, height],
                                   [max(xmin, 0), max(ymin, 0), xmax - xmin, ymax - ymin], atol=1.5)


@pytest.mark.slow
def test_mediapipe_object_detector_loads_models_with_metadata(tiny_detectors, tmp_path):
    pixels = _random_image(seed=3)
    image_path = str(tmp_path / "image.npy")
    np.save(image_path, pixels)
    paths = {}
    for kind in ("float", "int8"):
        paths[kind] = str(tmp_path / f"{kind}.tflite")
        with open(paths[kind], "wb") as f:
            f.write(metadata.add_detection_metadata(tiny_detectors[kind], LABELS, name="tiny",
                                                    description="A tiny detector."))
    paths["plain"] = str(tmp_path / "plain.tflite")
    with open(paths["plain"], "wb") as f:
        f.write(tiny_detectors["float"])

    float_result, int8_result, plain_result = mediapipe_detect(
        image_path, [paths["float"], paths["int8"], paths["plain"]])

    assert plain_result == {"error": "Object detection models require TFLite Model Metadata but none was found"}
    assert "error" not in float_result, float_result
    assert "error" not in int8_result, int8_result
    _assert_same_detections(float_result["detections"], _run(tiny_detectors["float"], pixels), 1e-4)
    _assert_same_detections(int8_result["detections"], _run(tiny_detectors["int8"], pixels), 1e-6)
    assert {d["category_name"] for d in float_result["detections"] + int8_result["detections"]} <= set(LABELS)
