"""Parity with the TF1 Object Detection API, whose code the MobileDets were published in.

For each architecture a subprocess builds the API's SSDLite graph from its own source (see
`tf1_reference/`), gives every variable a random value, saves a TF1 checkpoint with decoys (global
step, Momentum slots, a moving-average shadow, quantization ranges) and runs it on real photographs
(JPEG, PNG, BMP, none square). The test imports that checkpoint with `mobiledets-import`'s code and
compares, on the same files read and resized by this package: raw box encodings and class logits,
anchors, decoded boxes and the detections after NMS. Mutations of the checkpoint (two BatchNorm
statistics swapped, a variable dropped, one too many, a wrong shape) must make the import or the
comparison fail.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mobiledets_tf.data.image_files import read_resized_image
from mobiledets_tf.detection import box_coding
from mobiledets_tf.tf1_zoo.checkpoint_import import TF1ImportError, import_tf1_checkpoint
from conftest import TF1_GPU_GROUP
from tf1_reference.build_reference import DECODE_STRESS_SCALE

RAW_TOLERANCE = 1e-4      # of the largest magnitude of the reference output
ANCHOR_TOLERANCE = 1e-6
DECODED_TOLERANCE = 1e-5
NMS_BOX_TOLERANCE = 1e-4
NUM_VARIABLES = {"mobiledet_edgetpu": 429, "mobiledet_cpu": 505, "mobiledet_dsp": 434,
                 "mobiledet_gpu": 394, "mobilenet_v2": 404}
NUM_ANCHORS = {320: 2034, 300: 1917}


def relative_error(actual, expected) -> float:
    """The largest difference as a share of the largest reference magnitude (inf for NaNs)."""
    if not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def assert_raw_outputs_match(box_encodings, class_logits, outputs):
    for name, ours, theirs in (("box encodings", box_encodings, outputs["box_encodings"]),
                               ("class logits", class_logits, outputs["class_logits"])):
        error = relative_error(ours, theirs)
        assert error <= RAW_TOLERANCE, f"{name} differ by {error:.3g} of their largest magnitude"


def raw_outputs(detector, photos):
    images = np.stack([read_resized_image(p, detector.input_size) for p in photos])
    box_encodings, class_logits = detector.float_model(detector.preprocess(images), training=False)
    return images, box_encodings.numpy(), class_logits.numpy()


def assert_same_detections(ours, reference, image: int):
    """The same number of detections, scores equal in NMS order, and each of ours matched to a
    distinct reference detection of the same class and score with a box within NMS_BOX_TOLERANCE
    (so the order is the same up to ties)."""
    count = int(reference["num_detections"][image])
    assert int(ours["num_detections"][image]) == count
    scores, ref_scores = ours["scores"][image][:count], reference["nms_scores"][image][:count]
    np.testing.assert_allclose(scores, ref_scores, atol=1e-6, err_msg=f"image {image}: scores in NMS order")
    boxes, ref_boxes = ours["boxes"][image][:count], reference["nms_boxes"][image][:count]
    classes, ref_classes = ours["classes"][image][:count], reference["nms_classes"][image][:count]
    unmatched = set(range(count))
    for i in range(count):
        match = next((j for j in sorted(unmatched)
                      if classes[i] == ref_classes[j] and abs(scores[i] - ref_scores[j]) <= 1e-6
                      and np.max(np.abs(boxes[i] - ref_boxes[j])) <= NMS_BOX_TOLERANCE), None)
        assert match is not None, (f"image {image}: detection {i} (class {classes[i]}, score "
                                   f"{scores[i]:.6f}, box {boxes[i]}) is not among the reference's")
        unmatched.remove(match)


def check_parity(arch: str, input_size: int, reference, photos):
    detector, report = import_tf1_checkpoint(reference["checkpoint"], input_size=input_size)
    assert (report.arch, report.input_size, report.num_classes) == (arch, input_size, 90)

    # Every model variable used exactly once, every Keras weight set to it, the decoys ignored.
    tf1_names = [tf1 for _, tf1 in report.mapping]
    assert len(tf1_names) == len(set(tf1_names)) == NUM_VARIABLES[arch]
    assert set(tf1_names) == set(reference["variables"])
    assert len(report.mapping) == len(detector.float_model.weights)
    assert set(report.ignored) == set(reference["decoys"])
    reader = tf.train.load_checkpoint(reference["checkpoint"])
    keras_weights = {f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}": w
                     for layer in detector.float_model.layers for w in layer.weights}
    for keras_name, tf1_name in report.mapping:
        np.testing.assert_array_equal(keras_weights[keras_name].numpy(), reader.get_tensor(tf1_name),
                                      err_msg=f"{keras_name} <- {tf1_name}")

    outputs = reference["outputs"]
    images, box_encodings, class_logits = raw_outputs(detector, photos)
    np.testing.assert_allclose(images, outputs["resized_images"], atol=1e-3, err_msg="resized images")
    assert len(detector.anchors) == NUM_ANCHORS[input_size]
    assert np.max(np.abs(detector.anchors - outputs["anchors"])) <= ANCHOR_TOLERANCE
    assert_raw_outputs_match(box_encodings, class_logits, outputs)
    decoded = box_coding.decode(box_encodings, detector.anchors).numpy()
    assert np.max(np.abs(decoded - outputs["decoded_boxes"])) <= DECODED_TOLERANCE
    # The decoder alone, on the reference's encodings: scaled by 50, our encodings' own 1e-4 from the
    # reference would be amplified through exp() into the comparison.
    stressed = box_coding.decode(outputs["box_encodings"] * DECODE_STRESS_SCALE, detector.anchors).numpy()
    stress_error = relative_error(stressed, outputs["stressed_decoded_boxes"])
    assert stress_error <= DECODED_TOLERANCE, f"boxes of large encodings differ by {stress_error:.3g}"
    detections = {k: v.numpy() for k, v in detector.postprocess((box_encodings, class_logits)).items()}
    for image in range(len(photos)):
        assert_same_detections(detections, outputs, image)


@pytest.mark.slow
@pytest.mark.parametrize("arch,input_size", [
    ("mobiledet_cpu", 320), ("mobiledet_edgetpu", 320), ("mobiledet_dsp", 320),
    pytest.param("mobiledet_gpu", 320, marks=pytest.mark.xdist_group(TF1_GPU_GROUP)),
    ("mobilenet_v2", 300), ("mobilenet_v2", 320)])
def test_imported_tf1_checkpoint_matches_the_object_detection_api(arch, input_size, photos,
                                                                  tf1_reference):
    check_parity(arch, input_size, tf1_reference(arch, input_size), photos)


# Mutations ---------------------------------------------------------------------------------------
def write_tf1_checkpoint(prefix: str, tensors) -> str:
    """A name-based (TF1) checkpoint holding exactly `tensors` (name -> array)."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix


def mutated_checkpoint(reference, folder, change) -> str:
    reader = tf.train.load_checkpoint(reference["checkpoint"])
    tensors = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    change(tensors)
    return write_tf1_checkpoint(os.path.join(str(folder), "model.ckpt-1"), tensors)


BATCH_NORM = "FeatureExtractor/MobileDetGPU/IBN/SeparableConv2d/BatchNorm"
EXPAND_BATCH_NORM = "FeatureExtractor/MobileDetGPU/IBN/Conv/BatchNorm"   # same width


@pytest.mark.slow
@pytest.mark.xdist_group(TF1_GPU_GROUP)
def test_swapped_batch_norm_statistics_break_parity(tf1_reference, photos, tmp_path):
    reference = tf1_reference("mobiledet_gpu", 320)

    def swap(tensors):   # two layers' variances: a mapping mistake that shapes cannot reveal
        first, second = f"{BATCH_NORM}/moving_variance", f"{EXPAND_BATCH_NORM}/moving_variance"
        tensors[first], tensors[second] = tensors[second], tensors[first]

    mutated = dict(reference, checkpoint=mutated_checkpoint(reference, tmp_path, swap))
    with pytest.raises(AssertionError, match="(box encodings|class logits) differ"):
        check_parity("mobiledet_gpu", 320, mutated, photos)


@pytest.mark.slow
@pytest.mark.xdist_group(TF1_GPU_GROUP)
def test_a_missing_extra_or_misshapen_variable_stops_the_import(tf1_reference, tmp_path):
    reference = tf1_reference("mobiledet_gpu", 320)
    dropped = f"{BATCH_NORM}/gamma"
    with pytest.raises(TF1ImportError, match=f"not in the checkpoint: {dropped}"):
        import_tf1_checkpoint(mutated_checkpoint(reference, tmp_path / "a", lambda t: t.pop(dropped)))
    extra = "FeatureExtractor/MobileDetGPU/IBN_99/Conv/weights"
    with pytest.raises(TF1ImportError, match=f"no place in the mobiledet_gpu model.*{extra}"):
        import_tf1_checkpoint(mutated_checkpoint(
            reference, tmp_path / "b", lambda t: t.update({extra: np.zeros([1, 1, 8, 8], np.float32)})))
    misshapen = "BoxPredictor_0/ClassPredictor/weights"
    with pytest.raises(TF1ImportError, match=f"wrong shape: {misshapen}"):
        import_tf1_checkpoint(mutated_checkpoint(
            reference, tmp_path / "c", lambda t: t.update({misshapen: t[misshapen][:, :, :-1]})))


@pytest.mark.slow
@pytest.mark.xdist_group(TF1_GPU_GROUP)
def test_import_binary_writes_a_model_dir_that_restores_to_the_same_outputs(tf1_reference, photos,
                                                                           tmp_path):
    reference = tf1_reference("mobiledet_gpu", 320)
    output = str(tmp_path / "imported")
    result = subprocess.run([sys.executable, "-m", "mobiledets_tf.bin.import_tf1",
                             f"--tf1_checkpoint={reference['dir']}", f"--output={output}",
                             "--print_mapping"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("backbone_b00_conv/kernel" in result.stdout
            and "<-  FeatureExtractor/MobileDetGPU/Conv/weights" in result.stdout)
    assert "ignored global_step (training step)" in result.stdout
    assert "394 variables imported, 9 ignored" in result.stdout

    from mobiledets_tf.config import load_config
    from mobiledets_tf.data.label_map import read_label_map
    from mobiledets_tf.evaluation.keras_eval import restore_detector
    config = load_config(os.path.join(output, "config.yaml"))
    assert (config.model.arch, config.model.input_size, config.model.num_classes) == \
        ("mobiledet_gpu", 320, 90)
    label_map = read_label_map(config.data.label_map)
    assert len(label_map) == 80 and label_map[0].name == "person" and label_map[-1].id == 90
    detector = restore_detector(config, output)
    _, box_encodings, class_logits = raw_outputs(detector, photos)
    assert_raw_outputs_match(box_encodings, class_logits, reference["outputs"])


@pytest.mark.slow
@pytest.mark.xdist_group(TF1_GPU_GROUP)
def test_exports_of_the_imported_model_without_a_training_run(tf1_reference, photos, tmp_path):
    from ai_edge_litert.interpreter import Interpreter
    from conftest import run_binary
    from mobiledets_tf.export.metadata import (ANCHORS_FILE_NAME, read_labels, read_output_tensor_names,
                                              read_packed_file)
    from mobiledets_tf.tf1_zoo.checkpoint_import import save_imported

    reference = tf1_reference("mobiledet_gpu", 320)
    detector, report = import_tf1_checkpoint(reference["checkpoint"])
    model_dir = str(tmp_path / "imported")
    save_imported(detector, report, model_dir)
    export = os.path.join(model_dir, "export")
    run = run_binary("export", f"--model_dir={model_dir}", "--precision=float32,int8", "--nms=regular",
                     f"--calibration_data={os.path.dirname(photos[0])}", "--nosaved_model")
    assert "mobiledet_gpu_320_int8.tflite" in run.stdout
    run_binary("export", f"--model_dir={model_dir}", "--precision=float32", "--nopostprocess",
               "--nosaved_model")

    # Without the postprocess op: the raw outputs of the API's graph, and the anchors shipped.
    raw_path = os.path.join(export, "mobiledet_gpu_320_float32_raw.tflite")
    with open(raw_path, "rb") as f:
        raw_bytes = f.read()
    assert read_output_tensor_names(raw_bytes) == ["raw box encodings", "raw class logits"]
    assert read_labels(raw_bytes)[0] == "person" and len(read_labels(raw_bytes)) == 90
    packed_anchors = np.loadtxt(read_packed_file(raw_bytes, ANCHORS_FILE_NAME).splitlines(),
                                delimiter=",", ndmin=2)
    anchors_file = np.loadtxt(os.path.join(export, "mobiledet_gpu_320_anchors.csv"), delimiter=",")
    for anchors in (packed_anchors, anchors_file):
        assert np.max(np.abs(anchors - reference["outputs"]["anchors"])) <= ANCHOR_TOLERANCE
    raw = Interpreter(model_path=raw_path).get_signature_runner()
    with_op = Interpreter(model_path=os.path.join(export, "mobiledet_gpu_320_float32.tflite"))
    detect = with_op.get_signature_runner()
    images = np.stack([read_resized_image(p, 320) for p in photos])
    keras_detections = {k: v.numpy() for k, v in detector.detect(images).items()}
    for i, image in enumerate(images):
        normalised = detector.preprocess(image[np.newaxis]).numpy()
        outputs = raw(image=normalised)
        for name, key in (("box_encodings", "box_encodings"), ("class_logits", "class_logits")):
            error = relative_error(outputs[name][0], reference["outputs"][key][i])
            assert error <= RAW_TOLERANCE, f"image {i}: {name} differ by {error:.3g}"
        # With the postprocess op: the Keras model's detections (boxes clipped to the image, as
        # the Keras postprocess and the API do).
        result = detect(image=normalised)
        count = int(result["num_detections"][0])
        tflite = dict(boxes=np.clip(result["detection_boxes"], 0, 1),
                      classes=result["detection_classes"], scores=result["detection_scores"],
                      num_detections=np.array([count]))
        keras_image = {k: v[i:i + 1] for k, v in keras_detections.items()}
        keras_image["nms_boxes"], keras_image["nms_classes"], keras_image["nms_scores"] = (
            keras_image.pop("boxes"), keras_image.pop("classes"), keras_image.pop("scores"))
        assert_same_detections(tflite, keras_image, 0)
