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


def sorted_detections(boxes, classes, scores, count):
    """Detections ordered by score, ties (equal scores) broken by class and box."""
    boxes, classes, scores = boxes[:count], classes[:count], scores[:count]
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], classes,
                        -np.round(scores, 6)))
    return boxes[order], classes[order], scores[order]


def assert_same_detections(ours, reference, image: int):
    count = int(reference["num_detections"][image])
    assert int(ours["num_detections"][image]) == count
    np.testing.assert_allclose(ours["scores"][image][:count], reference["nms_scores"][image][:count],
                               atol=1e-6, err_msg=f"image {image}: scores in NMS order")
    our_boxes, our_classes, _ = sorted_detections(
        ours["boxes"][image], ours["classes"][image], ours["scores"][image], count)
    ref_boxes, ref_classes, _ = sorted_detections(
        reference["nms_boxes"][image], reference["nms_classes"][image],
        reference["nms_scores"][image], count)
    np.testing.assert_array_equal(our_classes, ref_classes, err_msg=f"image {image}: classes")
    np.testing.assert_allclose(our_boxes, ref_boxes, atol=NMS_BOX_TOLERANCE,
                               err_msg=f"image {image}: boxes")


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
