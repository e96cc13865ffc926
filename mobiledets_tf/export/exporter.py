"""From a detector (restored from a run, imported from the zoo, or built in memory) to deployable files.

`tflite_model_bytes` is the one conversion: an `SSDLiteDetector` -> .tflite bytes at a precision,
with the SSD postprocess op (standard output order and names) or, with `postprocess=False`, the raw
box encodings and class logits, and the TFLite model metadata (labels, input normalisation, output
semantics; the anchors of a raw model). `write_exports` writes, for one detector,
- `saved_model/`: TensorFlow serving signature (uint8 images of any batch -> detections);
- `{name}_{precision}.tflite` (`{name}_{precision}_raw.tflite` without the postprocess op, plus
  `{name}_anchors.csv`); hard-swish in the op form that runs fast on CPUs at each precision
  ("decomposed" for int8, "fused" otherwise; `hard_swish_form` picks one for every precision), and
  in int8 and int8_qat without multiplications by a constant scalar, folded into quantization scales
  (`fold_scalar_muls=False` keeps them);
- `{name}_{precision}.model.json`: the model card (architecture, input size, precision,
  multiply-adds, parameters) that latency tables read;
- `labels.txt`: one class name per class index (`???` for ids missing from the label map);
- `{name}_{precision}.report.{txt,json}`: the accelerator compatibility report (per-op counts and
  data types, predicted Edge TPU mapping); with `edgetpu=True` int8 models are also compiled by
  `edgetpu_compiler` when it is installed, and its parsed log is saved next to the prediction.
`export_detector` is the wrapper the binary uses: it restores a checkpoint of an experiment config
and reads int8 calibration images (training TFRecords, or `calibration_data`: a TFRecord pattern or
a folder of images). Everything is written under a temporary name first, so a killed export never
leaves a partial file under a final name.
"""
import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from mobiledets_tf import fileio
from mobiledets_tf.config import ExperimentConfig
from mobiledets_tf.data import pipeline
from mobiledets_tf.data.image_files import image_files, read_resized_image
from mobiledets_tf.data.label_map import names_by_class_index
from mobiledets_tf.export.compatibility import (CompatibilityReport, build_report, format_report,
                                                 save_report)
from mobiledets_tf.export.converter import PRECISIONS, convert, resolve_hard_swish_form
from mobiledets_tf.export.detection_outputs import standardize_detection_outputs
from mobiledets_tf.export.edgetpu import CompileResult, CompilerNotFoundError, compile_model
from mobiledets_tf.export.inference_graph import DetectionExportModule
from mobiledets_tf.export.metadata import (add_detection_metadata, add_raw_prediction_metadata,
                                          anchors_csv)
from mobiledets_tf.export.model_card import ModelCard, save_model_card
from mobiledets_tf.export.postprocess_op import NmsSettings
from mobiledets_tf.export.tflite_model import read_tflite
from mobiledets_tf.models.checkpoints import restore_weights
from mobiledets_tf.models.detector import SSDLiteDetector
from mobiledets_tf.stats import model_stats
from mobiledets_tf.data.sources import DataSources

FLOAT_PRECISIONS = ("float32", "float16", "int8")


@dataclasses.dataclass
class ExportedModel:
    precision: str
    tflite_path: str
    report: CompatibilityReport
    compiled: Optional[CompileResult] = None   # edgetpu_compiler's result, when it ran
    compiler_missing: str = ""                 # why it did not run, when it was asked for


def check_precisions(precisions: Sequence[str], quantization: str) -> None:
    """Float checkpoints export to float32/float16/int8, QAT checkpoints to int8_qat."""
    for precision in precisions:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        if quantization == "qat" and precision != "int8_qat":
            raise ValueError(f"a QAT checkpoint exports only to int8_qat, not {precision}; export the "
                             f"float checkpoint the QAT run started from for {precision}")
        if quantization != "qat" and precision == "int8_qat":
            raise ValueError("int8_qat needs a quantization-aware-trained checkpoint: train one with "
                             "mobiledets-train --quantization=qat --init_checkpoint=FLOAT_CKPT")


def representative_images(source: str, input_size: int, num_images: int) -> List[np.ndarray]:
    """`num_images` images as the model sees them, [1, S, S, 3] float32 in [-1, 1]: from a folder of
    image files, or from TFRecords matching a pattern."""
    if not source:
        raise ValueError("int8 calibration needs images: set data.train_pattern or give "
                         "--calibration_data (a TFRecord pattern or a folder of images)")
    if fileio.isdir(source):
        files = image_files(source)[:num_images]
        images = [SSDLiteDetector.preprocess(read_resized_image(f, input_size)[None]).numpy()
                  for f in files]
    else:
        dataset = pipeline.eval_dataset(source, input_size, batch_size=1, max_images=num_images)
        images = [SSDLiteDetector.preprocess(image).numpy() for image, _ in dataset]
    if not images:
        raise ValueError(f"no calibration images found in {source}")
    logging.info("Calibrating int8 on %d images of %s", len(images), source)
    return images


def save_saved_model(module: DetectionExportModule, path: str) -> None:
    """Writes the serving SavedModel to a temporary folder, then swaps it in place of `path`. An object
    store cannot rename a folder: there the SavedModel is written to a local folder, the old one is
    deleted and the new one uploaded (a kill in between leaves no SavedModel, or part of one)."""
    if fileio.is_remote(path):
        with fileio.local_output_dir(path) as folder:
            _save_saved_model(module, folder)
            fileio.rmtree(path)
        return
    tmp, old = fileio.temp_path(path), f"{path}.old.{os.getpid()}"
    fileio.rmtree(tmp)
    try:
        _save_saved_model(module, tmp)
        if fileio.exists(path):
            fileio.rename(path, old)
        fileio.rename(tmp, path)
    finally:
        fileio.rmtree(tmp)
        fileio.rmtree(old)


def _save_saved_model(module: DetectionExportModule, path: str) -> None:
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def tflite_model_bytes(detector: SSDLiteDetector, precision: str, labels: Sequence[str],
                       nms: NmsSettings = NmsSettings(), calibration_images=None,
                       postprocess: bool = True, name: str = "",
                       description: str = "", hard_swish_form: Optional[str] = None,
                       fold_scalar_muls: bool = True) -> bytes:
    """The .tflite file of a batch-1 `detector` at `precision`, with its metadata (see the module
    docstring); int8 needs `calibration_images` ([1, S, S, 3] in [-1, 1]). `hard_swish_form`:
    "fused" or "decomposed" (default: the precision's, see `mobiledets_tf.export.converter`);
    `fold_scalar_muls`: fold int8 multiplications by a constant into quantization scales."""
    module = DetectionExportModule(detector, nms)
    model_bytes = convert(module, precision, calibration_images, postprocess=postprocess,
                          hard_swish_form=hard_swish_form, fold_scalar_muls=fold_scalar_muls)
    name = name or f"{detector.arch.name}_{detector.input_size}_{precision}"
    description = description or (
        f"SSDLite {detector.arch.name} detector, {detector.input_size}x{detector.input_size}, "
        f"{detector.num_classes} classes, exported by mobiledets_tf")
    if not postprocess:
        return add_raw_prediction_metadata(model_bytes, labels, detector.anchors, name=name,
                                           description=description)
    return add_detection_metadata(standardize_detection_outputs(model_bytes), labels, name=name,
                                  description=description)


def write_exports(detector: SSDLiteDetector, output_dir: str, precisions: Sequence[str],
                  labels: Sequence[str], nms: NmsSettings = NmsSettings(), name: Optional[str] = None,
                  calibration_images=None, saved_model: bool = True, edgetpu: bool = False,
                  edgetpu_compiler: Optional[str] = None, postprocess: bool = True,
                  hard_swish_form: Optional[str] = None,
                  fold_scalar_muls: bool = True) -> Dict[str, ExportedModel]:
    """Writes the files of a batch-1 `detector` at each precision; returns them by precision."""
    for precision in precisions:
        resolve_hard_swish_form(precision, hard_swish_form)   # a bad combination fails before any work
    name = name or f"{detector.arch.name}_{detector.input_size}"
    suffix = "" if postprocess else "_raw"
    fileio.makedirs(output_dir)
    fileio.write_text_atomically(os.path.join(output_dir, "labels.txt"), "\n".join(labels) + "\n")
    if not postprocess:
        fileio.write_text_atomically(os.path.join(output_dir, f"{name}_anchors.csv"),
                                     anchors_csv(detector.anchors))
    if saved_model:
        logging.info("Writing the SavedModel")
        save_saved_model(DetectionExportModule(detector, nms), os.path.join(output_dir, "saved_model"))
    totals = model_stats(detector.float_model)["total"]
    exported = {}
    for precision in precisions:
        logging.info("Converting to %s", precision)
        model_bytes = tflite_model_bytes(detector, precision, labels, nms, calibration_images,
                                         postprocess, name=f"{name}_{precision}{suffix}",
                                         hard_swish_form=hard_swish_form,
                                         fold_scalar_muls=fold_scalar_muls)
        path = os.path.join(output_dir, f"{name}_{precision}{suffix}.tflite")
        fileio.write_bytes_atomically(path, model_bytes)
        logging.info("Wrote %s (%.2f MB)", path, len(model_bytes) / 1e6)
        save_model_card(ModelCard(architecture=detector.arch.name, precision=precision,
                                  input_size=detector.input_size, num_classes=detector.num_classes,
                                  depth_multiplier=detector.depth_multiplier,
                                  multiply_adds=totals["madds"], parameters=totals["params"]), path)
        report = build_report(read_tflite(model_bytes, name=os.path.basename(path)))
        save_report_files(report, os.path.splitext(path)[0] + ".report")
        result = ExportedModel(precision, path, report)
        if edgetpu and precision.startswith("int8"):
            try:
                result.compiled = compile_model(path, output_dir, compiler=edgetpu_compiler)
                save_report_files(result.compiled.report, os.path.splitext(path)[0] + ".edgetpu_report")
            except CompilerNotFoundError as e:
                result.compiler_missing = str(e)
        exported[precision] = result
    return exported


def export_detector(config: ExperimentConfig, checkpoint: str, data: DataSources, output_dir: str,
                    precisions: Sequence[str], nms: NmsSettings = NmsSettings(),
                    name: Optional[str] = None, num_calibration_images: int = 100,
                    saved_model: bool = True, edgetpu: bool = False,
                    edgetpu_compiler: Optional[str] = None, calibration_data: str = "",
                    postprocess: bool = True, hard_swish_form: Optional[str] = None,
                    fold_scalar_muls: bool = True) -> Dict[str, ExportedModel]:
    """Restores `checkpoint` into the detector of `config` at batch 1 and writes its exports;
    int8 is calibrated on `calibration_data` (default: the training TFRecords)."""
    check_precisions(precisions, config.model.quantization)
    for precision in precisions:
        resolve_hard_swish_form(precision, hard_swish_form)
    m = config.model
    detector = SSDLiteDetector.from_config(m, batch_size=1)
    restore_weights(detector.model, checkpoint, f"{m.arch} detector")
    calibration = None
    if "int8" in precisions:
        calibration = representative_images(calibration_data or data.train_pattern, m.input_size,
                                            num_calibration_images)
    labels = names_by_class_index(data.label_map, m.num_classes, missing="???")
    return write_exports(detector, output_dir, precisions, labels, nms, name, calibration, saved_model,
                         edgetpu, edgetpu_compiler, postprocess, hard_swish_form, fold_scalar_muls)


def save_report_files(report: CompatibilityReport, stem: str) -> None:
    """`{stem}.json` and `{stem}.txt` (the printed table)."""
    save_report(report, f"{stem}.json")
    fileio.write_text_atomically(f"{stem}.txt", format_report(report) + "\n")
