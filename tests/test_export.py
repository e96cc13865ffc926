"""mobiledets-export: every architecture at every precision, output layout, accelerator reports,
float parity with Keras, MediaPipe loading, atomic writes and clear errors for bad checkpoints."""
import collections
import glob
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from conftest import ALL_ARCHITECTURES, TINY_BUILTIN, run_binary, tiny_config_yaml
from test_metadata import mediapipe_detect
from mobiledets_tf.benchmark.delegation import delegation_report
from mobiledets_tf.config import load_config
from mobiledets_tf.data import pipeline
from mobiledets_tf.export.exporter import export_detector
from mobiledets_tf.export.inference_graph import OUTPUT_NAMES
from mobiledets_tf.export.metadata import read_labels, read_output_tensor_names
from mobiledets_tf.export.postprocess_op import OP_NAME
from mobiledets_tf.export.tflite_model import read_tflite
from mobiledets_tf.layers import HardSwish
from mobiledets_tf.models.checkpoints import CheckpointError
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.data.sources import resolve_data

TAIL = ["DEQUANTIZE", "DEQUANTIZE", OP_NAME]


def _config(arch: str, input_size: int, quantization: str = ""):
    builtin = ",".join(f"data.builtin.{k}={v}" for k, v in TINY_BUILTIN.items())
    return load_config(None, [f"model.arch={arch},model.input_size={input_size},model.num_classes=6,"
                              f"model.quantization={quantization!r},{builtin}"])


def _checkpoint(config, directory) -> str:
    """A checkpoint of the (untrained) detector of `config`."""
    detector = SSDLiteDetector.from_config(config.model)
    return tf.train.Checkpoint(model=detector.model).write(os.path.join(str(directory), "ckpt"))


def _val_images(data, input_size: int, count: int) -> np.ndarray:
    images, _ = next(iter(pipeline.eval_dataset(data.val_pattern, input_size, count)))
    return images.numpy()


def _run(path: str, image: np.ndarray) -> dict:
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()["image"]
    if details["dtype"] == np.float32:
        image = image.astype(np.float32) * (2.0 / 255.0) - 1.0
    return runner(image=image[np.newaxis].astype(details["dtype"]))


def _check_model_file(path: str, data, input_size: int, int8: bool) -> None:
    interpreter = Interpreter(model_path=path)
    outputs = interpreter.get_output_details()
    assert [o["name"] for o in outputs] == list(OUTPUT_NAMES)
    assert all(o["dtype"] == np.float32 for o in outputs)
    image = interpreter.get_input_details()[0]
    assert list(image["shape"]) == [1, input_size, input_size, 3]
    assert image["dtype"] == (np.uint8 if int8 else np.float32)
    if int8:  # a uint8 pixel p means (p - 127.5) / 127.5
        scale, zero_point = image["quantization"]
        assert abs(scale - 2 / 255) < 1e-6 and zero_point in (127, 128)
    with open(path, "rb") as f:
        model_bytes = f.read()
    assert read_labels(model_bytes) == data.class_names
    assert read_output_tensor_names(model_bytes) == ["location", "category", "score", "number of detections"]
    result = _run(path, _val_images(data, input_size, 1)[0])
    assert result["detection_boxes"].shape == (1, 100, 4) and 0 < result["num_detections"][0] <= 100


@pytest.mark.slow
@pytest.mark.parametrize("arch", ALL_ARCHITECTURES)
def test_every_architecture_exports_at_every_precision(arch, tiny_data_dir, tmp_path):
    input_size = 320
    float_config, qat_config = _config(arch, input_size), _config(arch, input_size, "qat")
    data = resolve_data(float_config)
    exported = export_detector(float_config, _checkpoint(float_config, tmp_path / "float"), data,
                               str(tmp_path / "export"), ["float32", "float16", "int8"],
                               num_calibration_images=2, saved_model=False)
    exported.update(export_detector(qat_config, _checkpoint(qat_config, tmp_path / "qat"), data,
                                    str(tmp_path / "export"), ["int8_qat"], saved_model=False))
    assert sorted(exported) == ["float16", "float32", "int8", "int8_qat"]
    for precision, model in exported.items():
        int8 = precision.startswith("int8")
        _check_model_file(model.tflite_path, data, input_size, int8)
        assert os.path.exists(model.tflite_path.replace(".tflite", ".report.json"))
        if not int8:
            continue
        report = model.report
        # Only int8 builtin ops except the DEQUANTIZE ops feeding the postprocess op and the op itself
        # (MobileNetV3's QAT hard-sigmoid gate included: its intermediate tensors are fake-quantized).
        assert report.only_int8_except_postprocess, (precision, report.float_ops)
        assert report.float_ops == TAIL
        # Hard-swish is exported as ADD (RELU6) and MUL (its 1/6 folded): everything maps to the Edge TPU.
        assert "HARD_SWISH" not in {v.op for v in report.operators}
        assert report.ops_on_cpu == 3 and report.edgetpu_subgraphs == 1
        assert {v.status for v in report.operators[:-3]} == {"Mapped to Edge TPU"}
        _check_xnnpack_takes_everything_but_the_input_and_postprocess(model.tflite_path)
    assert os.path.exists(tmp_path / "export" / "labels.txt")


def _delegation(path: str):
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    return delegation_report(interpreter)


def _check_xnnpack_takes_everything_but_the_input_and_postprocess(path: str) -> None:
    """XNNPACK takes every op of an int8 export but the uint8 input's QUANTIZE and the postprocess op,
    in one partition; or else the ops left out are ADDs whose scale ratio XNNPACK refuses (untrained
    weights can give an activation range over 1536, 256x the [0, 6] of relu6(x + 3)), named as such."""
    delegation = _delegation(path)
    assert delegation.outside.pop("QUANTIZE") == 1 and delegation.outside.pop(OP_NAME) == 1, delegation.summary()
    assert "uint8 -> int8" in delegation.reasons["QUANTIZE"] and "custom" in delegation.reasons[OP_NAME]
    refused_adds = delegation.outside.pop("ADD", 0)
    assert not delegation.outside, delegation.summary()
    assert not refused_adds or "scale ratio" in delegation.reasons["ADD"], delegation.summary()
    assert delegation.partitions <= 1 + refused_adds, delegation.summary()


def data_class_names():
    return ["circle", "square", "triangle", "star", "cross", "ring"]


def _postprocess_inputs(interpreter: Interpreter, path: str):
    graph = read_tflite(path).main
    op = next(op for op in graph.operators if op.name == OP_NAME)
    return [interpreter.get_tensor(i) for i in op.inputs[:2]]


@pytest.mark.parametrize("arch", ["mobiledet_edgetpu", "mobiledet_cpu"])
def test_float_tflite_raw_predictions_match_keras(arch, tiny_data_dir, tmp_path):
    input_size = 160
    config = _config(arch, input_size)
    data = resolve_data(config)
    checkpoint = _checkpoint(config, tmp_path)
    path = export_detector(config, checkpoint, data, str(tmp_path / "export"), ["float32"],
                           saved_model=False)["float32"].tflite_path
    detector = SSDLiteDetector.from_config(config.model)
    tf.train.Checkpoint(model=detector.model).read(checkpoint).assert_consumed()
    interpreter = Interpreter(model_path=path, experimental_preserve_all_tensors=True)
    runner = interpreter.get_signature_runner()
    for image in _val_images(data, input_size, 4):
        normalised = SSDLiteDetector.preprocess(image[np.newaxis]).numpy()
        runner(image=normalised)
        box_encodings, class_scores = _postprocess_inputs(interpreter, path)
        keras_boxes, keras_logits = detector.model(normalised, training=False)
        for tflite, keras in ((box_encodings, keras_boxes.numpy()), (class_scores, tf.sigmoid(keras_logits).numpy())):
            relative = np.abs(tflite - keras).max() / np.abs(keras).max()
            assert relative <= 1e-4, relative


def _op_counts(model) -> collections.Counter:
    return collections.Counter(v.op for v in model.report.operators)


def test_hard_swish_exports_decomposed_and_folded_for_int8_and_fused_for_float_or_on_request(tiny_data_dir, tmp_path):
    config = _config("mobiledet_cpu", 160)
    data = resolve_data(config)
    checkpoint = _checkpoint(config, tmp_path)
    hard_swish_layers = sum(isinstance(layer, HardSwish)
                            for layer in SSDLiteDetector.from_config(config.model).model.layers)
    default = export_detector(config, checkpoint, data, str(tmp_path / "default"), ["float32", "int8"],
                              num_calibration_images=2, saved_model=False)
    unfolded = export_detector(config, checkpoint, data, str(tmp_path / "unfolded"), ["int8"],
                               num_calibration_images=2, saved_model=False, fold_scalar_muls=False)
    fused = export_detector(config, checkpoint, data, str(tmp_path / "fused"), ["int8"],
                            num_calibration_images=2, saved_model=False, hard_swish_form="fused")
    float_ops, int8_ops, unfolded_ops, fused_ops = (
        _op_counts(m) for m in (default["float32"], default["int8"], unfolded["int8"], fused["int8"]))
    assert float_ops["HARD_SWISH"] == fused_ops["HARD_SWISH"] == hard_swish_layers > 0
    # int8 by default: each hard-swish is ADD(x, 3) with fused RELU6 and MUL, its 1/6 folded into the
    # quantization scales of what reads it; --nofold_scalar_muls keeps MUL(x, 1/6).
    assert int8_ops["HARD_SWISH"] == unfolded_ops["HARD_SWISH"] == 0
    assert unfolded_ops["MUL"] == fused_ops["MUL"] + 2 * hard_swish_layers
    assert int8_ops["MUL"] == fused_ops["MUL"] + hard_swish_layers
    assert int8_ops["ADD"] == unfolded_ops["ADD"] == fused_ops["ADD"] + hard_swish_layers
    for model in (default["int8"], unfolded["int8"]):
        assert model.report.only_int8_except_postprocess
        # XNNPACK runs the decomposed int8 graph in one partition; the int8 HARD_SWISH ops it leaves out.
        _check_xnnpack_takes_everything_but_the_input_and_postprocess(model.tflite_path)
    # Folding changes no result: the detections of both files on a validation image agree.
    image = _val_images(data, 160, 1)[0]
    folded_result, unfolded_result = _run(default["int8"].tflite_path, image), _run(unfolded["int8"].tflite_path, image)
    np.testing.assert_allclose(folded_result["detection_scores"], unfolded_result["detection_scores"], atol=0.02)
    one_op = _delegation(fused["int8"].tflite_path)
    assert one_op.outside["HARD_SWISH"] == hard_swish_layers and one_op.partitions > 1
    assert one_op.reasons["HARD_SWISH"] == "int8: XNNPACK runs HARD_SWISH in float only"
    assert _delegation(default["float32"].tflite_path).outside == {OP_NAME: 1}
    with pytest.raises(ValueError, match="int8_qat export keeps the hard-swish form"):
        export_detector(_config("mobiledet_cpu", 160, "qat"), checkpoint, data, str(tmp_path / "qat"),
                        ["int8_qat"], saved_model=False, hard_swish_form="decomposed")


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("export_run")
    config = root / "tiny.yaml"
    config.write_text(tiny_config_yaml(steps=3))
    run_binary("train", f"--config={config}", f"--model_dir={root / 'run'}")
    return config, root / "run"


@pytest.mark.slow
def test_export_binary_writes_models_labels_saved_model_and_reports(trained_run, tmp_path):
    config, model_dir = trained_run
    out = tmp_path / "out"
    run = run_binary("export", f"--model_dir={model_dir}", f"--output_dir={out}", "--precision=float32,int8",
                     "--calibration_images=4", "--max_detections=10", "--nms=regular")
    assert "Edge TPU compatibility of mobiledet_edgetpu_64_int8.tflite" in run.stdout
    assert "edgetpu_compiler" not in run.stdout  # not asked for
    for precision in ("float32", "int8"):
        path = out / f"mobiledet_edgetpu_64_{precision}.tflite"
        assert f"{precision}: {path}" in run.stdout
        assert (out / f"mobiledet_edgetpu_64_{precision}.report.txt").read_text().startswith("Edge TPU")
        interpreter = Interpreter(model_path=str(path))
        assert list(interpreter.get_output_details()[0]["shape"]) == [1, 10, 4]
    assert (out / "labels.txt").read_text().split() == data_class_names()
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"](
        images=tf.zeros([2, 64, 64, 3], tf.uint8))
    assert served["detection_boxes"].shape == (2, 10, 4)
    assert not glob.glob(str(out / "*.tmp"))

    # MediaPipe's ObjectDetector (in its own environment) loads both files and names the classes.
    image_path = str(tmp_path / "image.npy")
    np.save(image_path, np.random.RandomState(0).randint(0, 256, [64, 64, 3]).astype(np.uint8))
    found = mediapipe_detect(image_path, [str(out / f"mobiledet_edgetpu_64_{p}.tflite") for p in ("float32", "int8")])
    for result in found:
        assert "error" not in result, result
        assert len(result["detections"]) > 0
        assert {d["category_name"] for d in result["detections"]} <= set(data_class_names())

    evaluation = run_binary("eval", f"--model_dir={model_dir}", f"--tflite={out / 'mobiledet_edgetpu_64_int8.tflite'}")
    assert "AP50" in evaluation.stdout
    assert os.path.exists(out / "eval_mobiledet_edgetpu_64_int8" / "metrics.json")

    missing = run_binary("export", f"--model_dir={model_dir}", f"--output_dir={out}", "--precision=int8",
                         "--edgetpu", "--nosaved_model", check=False)
    assert missing.returncode == 0 and "edgetpu_compiler is not on PATH" in missing.stdout

    wrong = run_binary("export", f"--model_dir={model_dir}", f"--output_dir={out}", "--precision=int8_qat",
                       check=False)
    assert wrong.returncode != 0 and "mobiledets-export: int8_qat needs a quantization-aware" in wrong.stderr


def test_export_errors_name_the_problem(tiny_data_dir, tmp_path):
    config = _config("mobiledet_edgetpu", 64)
    data = resolve_data(config)
    checkpoint = _checkpoint(config, tmp_path / "float")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (garbage / "ckpt-1.index").write_bytes(b"not a checkpoint")
    cases = [
        (config, checkpoint, ["int8_qat"], ValueError, "int8_qat needs a quantization-aware-trained"),
        (_config("mobiledet_edgetpu", 64, "qat"), checkpoint, ["int8"], ValueError,
         "a QAT checkpoint exports only to int8_qat"),
        (config, checkpoint, ["int4"], ValueError, "unknown precision 'int4'"),
        (_config("mobiledet_dsp", 64), checkpoint, ["float32"], CheckpointError,
         "cannot restore the mobiledet_dsp detector"),
        (config, str(tmp_path / "missing"), ["float32"], CheckpointError, "no checkpoint found"),
        (config, str(garbage), ["float32"], CheckpointError, "cannot restore"),
    ]
    for case_config, case_checkpoint, precisions, error, message in cases:
        with pytest.raises(error, match=message.replace("(", r"\(")):
            export_detector(case_config, case_checkpoint, data, str(tmp_path / "out"), precisions,
                            saved_model=False)
    assert not glob.glob(str(tmp_path / "out" / "*.tflite"))


@pytest.mark.slow
def test_killed_export_leaves_no_tflite_under_the_final_name(trained_run, tmp_path):
    config, model_dir = trained_run
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "mobiledets_tf.bin.export", f"--model_dir={model_dir}",
                                f"--output_dir={out}", "--precision=int8", "--calibration_images=8"],
                               stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "Converting to int8" in line:  # the converter runs for seconds after this line
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "mobiledet_edgetpu_64_int8.tflite").exists()
    run_binary("export", f"--model_dir={model_dir}", f"--output_dir={out}", "--precision=int8",
               "--calibration_images=8")
    assert (out / "mobiledet_edgetpu_64_int8.tflite").exists()
