"""Accelerator compatibility report: .tflite description, Edge TPU prediction, compiler log parsing."""
import os
import re
import sys

import pytest

from mobiledets_tf.export import compatibility as compat
from mobiledets_tf.export import edgetpu
from mobiledets_tf.export.tflite_model import (
    OperatorInfo, SubgraphInfo, TensorInfo, TFLiteModelInfo, read_tflite)

LOG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "edgetpu_compiler")
INPUT_SHAPE = (16, 16, 3)


def recorded_log(name: str) -> str:
    with open(os.path.join(LOG_DIR, name), encoding="utf-8") as f:
        return f.read()


# ----------------------------------------------------------------------------- tiny real models

def tiny_net(activation, batch_size=1):
    """conv 3x3/2 -> activation -> depthwise 3x3 + ReLU6 -> conv 1x1 -> global average pool."""
    from mobiledets_tf.keras import keras
    inputs = keras.Input(INPUT_SHAPE, batch_size=batch_size)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = activation(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.Conv2D(4, 1)(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def convert(model, int8=True, uint8_output=True) -> bytes:
    import numpy as np
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.random((1,) + INPUT_SHAPE, dtype=np.float32)] for _ in range(4))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        if uint8_output:
            converter.inference_output_type = tf.uint8
    return converter.convert()


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    """Four tiny converted models: int8 ReLU6, int8 with hard-swish, float, int8 dynamic batch."""
    from mobiledets_tf.keras import keras
    from mobiledets_tf.layers.activations import HardSwish
    folder = tmp_path_factory.mktemp("tflite")
    models = {
        "relu6": convert(tiny_net(keras.layers.ReLU(6.0))),
        "hard_swish": convert(tiny_net(HardSwish()), uint8_output=False),
        "float": convert(tiny_net(keras.layers.ReLU(6.0)), int8=False),
        "dynamic": convert(tiny_net(keras.layers.ReLU(6.0), batch_size=None)),
    }
    paths = {}
    for name, data in models.items():
        paths[name] = str(folder / f"{name}.tflite")
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths


def statuses(report):
    return [(v.op, v.status) for v in report.operators]


def test_description_of_a_converted_model(tflite_files):
    info = read_tflite(tflite_files["relu6"])
    graph = info.main
    assert len(info.subgraphs) == 1
    assert [op.name for op in graph.operators] == [
        "QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN", "QUANTIZE"]
    model_input, = (graph.tensors[i] for i in graph.inputs)
    assert (model_input.dtype, model_input.shape, model_input.is_constant) == (
        "uint8", (1,) + INPUT_SHAPE, False)
    conv = graph.operators[1]
    activation, weights, bias = graph.input_tensors(conv)
    assert (activation.dtype, activation.is_constant) == ("int8", False)
    assert (weights.dtype, weights.shape, weights.is_constant) == ("int8", (8, 3, 3, 3), True)
    assert (bias.dtype, bias.shape, bias.is_constant) == ("int32", (8,), True)
    assert graph.output_tensors(conv)[0].shape == (1, 8, 8, 8)
    assert not conv.is_custom and conv.version >= 1
    assert graph.consumers(conv.outputs[0]) == (graph.operators[2],)
    with open(tflite_files["relu6"], "rb") as f:
        assert read_tflite(f.read(), name=tflite_files["relu6"]) == info


def test_dynamic_batch_is_in_the_shape_signature(tflite_files):
    graph = read_tflite(tflite_files["dynamic"]).main
    model_input = graph.tensors[graph.inputs[0]]
    assert model_input.shape == (1,) + INPUT_SHAPE
    assert model_input.shape_signature == (-1,) + INPUT_SHAPE
    assert model_input.is_dynamic


def test_int8_model_with_uint8_input_maps_entirely(tflite_files):
    report = compat.build_report(tflite_files["relu6"])
    assert all(status == compat.MAPPED for _, status in statuses(report))
    assert (report.ops_on_edgetpu, report.ops_on_cpu, report.edgetpu_subgraphs) == (6, 0, 1)
    assert report.compiled and report.errors == []
    assert report.only_int8_except_postprocess is True
    assert report.float_ops == []
    assert len(report.fully_int8_ops) == 6
    assert {row.dtype_class for row in report.rows} == {"int8"}


def test_hard_swish_ends_the_edgetpu_subgraph(tflite_files):
    report = compat.build_report(tflite_files["hard_swish"])
    assert statuses(report) == [
        ("QUANTIZE", compat.MAPPED),
        ("CONV_2D", compat.MAPPED),
        ("HARD_SWISH", compat.NOT_SUPPORTED),
        ("DEPTHWISE_CONV_2D", compat.MORE_THAN_ONE_SUBGRAPH),
        ("CONV_2D", compat.MORE_THAN_ONE_SUBGRAPH),
        ("MEAN", compat.MORE_THAN_ONE_SUBGRAPH),
        ("DEQUANTIZE", compat.UNSUPPORTED_DATA_TYPE),
    ]
    assert (report.ops_on_edgetpu, report.ops_on_cpu, report.edgetpu_subgraphs) == (2, 5, 1)
    assert report.status_counts()[("CONV_2D", compat.MAPPED)] == 1
    assert report.status_counts()[("CONV_2D", compat.MORE_THAN_ONE_SUBGRAPH)] == 1
    assert report.operators[3].reason == "after HARD_SWISH (op 2), where the Edge TPU subgraph ends"
    # HARD_SWISH is int8, so only the DEQUANTIZE of the float output computes in float; that
    # DEQUANTIZE feeds the model output, not a postprocess op.
    assert report.float_ops == ["DEQUANTIZE"]
    assert report.operators[2].fully_int8
    assert report.only_int8_except_postprocess is False


def test_float_model_is_not_quantized(tflite_files):
    report = compat.build_report(tflite_files["float"])
    assert report.errors == [compat.MODEL_NOT_QUANTIZED] and not report.compiled
    assert {status for _, status in statuses(report)} == {compat.UNSUPPORTED_DATA_TYPE}
    assert {row.dtype_class for row in report.rows} == {"float32"}
    assert report.float_ops == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN"]
    assert report.fully_int8_ops == []
    assert (report.ops_on_edgetpu, report.ops_on_cpu, report.edgetpu_subgraphs) == (0, 4, 0)


def test_dynamic_batch_model_fails_static_sizes(tflite_files):
    report = compat.build_report(tflite_files["dynamic"])
    assert report.errors == [compat.DYNAMIC_SIZED_TENSORS] and not report.compiled
    assert {status for _, status in statuses(report)} == {compat.DYNAMIC_SIZE}
    assert (report.ops_on_edgetpu, report.ops_on_cpu) == (0, 6)
    assert report.only_int8_except_postprocess is True


def test_report_json_round_trip_and_text(tflite_files, tmp_path):
    report = compat.build_report(tflite_files["hard_swish"])
    path = str(tmp_path / "report.json")
    compat.save_report(report, path)
    assert compat.load_report(path) == report
    assert compat.CompatibilityReport.from_json(report.to_json()) == report
    text = compat.format_report(report)
    hard_swish_line, = (line for line in text.splitlines() if line.startswith("HARD_SWISH"))
    assert re.split(r"  +", hard_swish_line) == [
        "HARD_SWISH", "1", "int8", compat.NOT_SUPPORTED, "not in Coral's supported operations"]
    assert "Operations on Edge TPU: 2, on CPU: 5, Edge TPU subgraphs: 1" in text
    assert "Float operations: DEQUANTIZE" in text
    assert "Only int8 except postprocess: no" in text


# ----------------------------------------------------------------------------- hand-built graphs

def tensor(index, dtype, shape, constant=False):
    return TensorInfo(index=index, name=f"t{index}", dtype=dtype, shape=shape,
                      shape_signature=shape, is_constant=constant)


def operator(index, name, inputs, outputs):
    custom = name == compat.POSTPROCESS_OP
    return OperatorInfo(index=index, name=name, is_custom=custom, version=1, inputs=inputs,
                        outputs=outputs)


def ssd_graph(class_scores_also: str = "") -> TFLiteModelInfo:
    """uint8 image -> QUANTIZE -> CONV_2D -> box/class CONV_2D + RESHAPE -> DEQUANTIZE -> postprocess.

    `class_scores_also`: "" (the dequantized class scores only feed the postprocess op), "output"
    (they are a model output too) or "logistic" (a LOGISTIC reads them too).
    """
    tensors = [
        tensor(0, "uint8", (1, 8, 8, 3)), tensor(1, "int8", (1, 8, 8, 3)),
        tensor(2, "int8", (4, 3, 3, 3), True), tensor(3, "int32", (4,), True),
        tensor(4, "int8", (1, 8, 8, 4)),
        tensor(5, "int8", (8, 1, 1, 4), True), tensor(6, "int8", (1, 8, 8, 8)),
        tensor(7, "int8", (6, 1, 1, 4), True), tensor(8, "int8", (1, 8, 8, 6)),
        tensor(9, "int32", (3,), True), tensor(10, "int8", (1, 128, 4)),
        tensor(11, "int32", (3,), True), tensor(12, "int8", (1, 128, 3)),
        tensor(13, "float32", (1, 128, 4)), tensor(14, "float32", (1, 128, 3)),
        tensor(15, "float32", (128, 4), True),
        tensor(16, "float32", (1, 10, 4)), tensor(17, "float32", (1, 10)),
        tensor(18, "float32", (1, 10)), tensor(19, "float32", (1,)),
        tensor(20, "float32", (1, 128, 3)),
    ]
    ops = [
        operator(0, "QUANTIZE", (0,), (1,)),
        operator(1, "CONV_2D", (1, 2, 3), (4,)),
        operator(2, "CONV_2D", (4, 5), (6,)),
        operator(3, "CONV_2D", (4, 7), (8,)),
        operator(4, "RESHAPE", (6, 9), (10,)),
        operator(5, "RESHAPE", (8, 11), (12,)),
        operator(6, "DEQUANTIZE", (10,), (13,)),
        operator(7, "DEQUANTIZE", (12,), (14,)),
        operator(8, compat.POSTPROCESS_OP, (13, 14, 15), (16, 17, 18, 19)),
    ]
    outputs = (16, 17, 18, 19)
    if class_scores_also == "output":
        outputs += (14,)
    if class_scores_also == "logistic":
        ops.append(operator(9, "LOGISTIC", (14,), (20,)))
        outputs += (20,)
    graph = SubgraphInfo(name="main", tensors=tuple(tensors), operators=tuple(ops), inputs=(0,),
                         outputs=outputs)
    return TFLiteModelInfo(name="ssd.tflite", subgraphs=(graph,))


def test_ssd_postprocess_and_its_dequantizes_stay_on_cpu_at_the_end():
    report = compat.build_report(ssd_graph())
    mapped = ("QUANTIZE", "CONV_2D", "CONV_2D", "CONV_2D", "RESHAPE", "RESHAPE")
    assert statuses(report) == [(op, compat.MAPPED) for op in mapped] + [
        ("DEQUANTIZE", compat.UNSUPPORTED_DATA_TYPE), ("DEQUANTIZE", compat.UNSUPPORTED_DATA_TYPE),
        (compat.POSTPROCESS_OP, compat.UNSUPPORTED_DATA_TYPE)]
    assert (report.ops_on_edgetpu, report.ops_on_cpu, report.edgetpu_subgraphs) == (6, 3, 1)
    assert report.only_int8_except_postprocess is True
    assert report.float_ops == ["DEQUANTIZE", "DEQUANTIZE", compat.POSTPROCESS_OP]
    assert [row.dtype_class for row in report.rows][-2:] == ["mixed", "float32"]


@pytest.mark.parametrize("class_scores_also", ["output", "logistic"])
def test_dequantize_that_feeds_more_than_the_postprocess_is_not_exempt(class_scores_also):
    report = compat.build_report(ssd_graph(class_scores_also))
    assert report.only_int8_except_postprocess is False
    assert report.float_ops[:3] == ["DEQUANTIZE", "DEQUANTIZE", compat.POSTPROCESS_OP]


def test_one_subgraph_from_the_first_mappable_op_to_the_first_blocked_one():
    blocked = (compat.UNSPECIFIED_LIMITATION, "leading")
    hard_swish = (compat.NOT_SUPPORTED, "not supported")
    dequantize = (compat.UNSUPPORTED_DATA_TYPE, "float")
    names = ["QUANTIZE", "CONV_2D", "ADD", "HARD_SWISH", "CONV_2D", "DEQUANTIZE"]
    result = compat.single_subgraph_statuses(
        [blocked, None, None, hard_swish, None, dequantize], names)
    assert [status for status, _ in result] == [
        compat.UNSPECIFIED_LIMITATION, compat.MAPPED, compat.MAPPED, compat.NOT_SUPPORTED,
        compat.MORE_THAN_ONE_SUBGRAPH, compat.UNSUPPORTED_DATA_TYPE]
    assert result[4][1] == "after HARD_SWISH (op 3), where the Edge TPU subgraph ends"
    assert [s for s, _ in compat.single_subgraph_statuses([dequantize, dequantize], names)] == [
        compat.UNSUPPORTED_DATA_TYPE] * 2


def test_quantize_of_a_float_input_is_reported_as_the_compiler_does():
    tensors = (tensor(0, "float32", (1, 4, 4, 3)), tensor(1, "int8", (1, 4, 4, 3)),
               tensor(2, "int8", (1, 4, 4, 3)))
    ops = (operator(0, "QUANTIZE", (0,), (1,)), operator(1, "RELU6", (1,), (2,)))
    graph = SubgraphInfo("main", tensors, ops, inputs=(0,), outputs=(2,))
    report = compat.build_report(TFLiteModelInfo("q.tflite", (graph,)))
    assert statuses(report) == [("QUANTIZE", compat.UNSPECIFIED_LIMITATION), ("RELU6", compat.MAPPED)]
    assert report.only_int8_except_postprocess is False


@pytest.mark.parametrize("shape, unsupported", [
    ((1, 8, 8, 3), False), ((8, 8, 3), False), ((2, 8, 8, 3), True), ((1, 1, 2, 3, 4), False),
    ((1, 2, 1, 3, 4), True)])
def test_rank_rule(shape, unsupported):
    assert compat.has_unsupported_rank(shape) is unsupported


def test_rank_blocks_a_reshape_to_five_dimensions():
    tensors = (tensor(0, "int8", (1, 6, 4)), tensor(1, "int32", (5,), True),
               tensor(2, "int8", (1, 2, 3, 2, 2)), tensor(3, "int8", (1, 2, 3, 2, 2)))
    ops = (operator(0, "RESHAPE", (0, 1), (2,)), operator(1, "RELU", (2,), (3,)))
    graph = SubgraphInfo("main", tensors, ops, inputs=(0,), outputs=(3,))
    report = compat.build_report(TFLiteModelInfo("r.tflite", (graph,)))
    assert statuses(report) == [("RESHAPE", compat.UNSUPPORTED_RANK), ("RELU", compat.UNSUPPORTED_RANK)]


# ----------------------------------------------------------------------------- compiler logs

SSD_STATUS_COUNTS = {
    ("LOGISTIC", compat.MAPPED): 1, ("DEPTHWISE_CONV_2D", compat.MAPPED): 27,
    ("CUSTOM", compat.UNSUPPORTED_DATA_TYPE): 1, ("DEQUANTIZE", compat.UNSUPPORTED_DATA_TYPE): 2,
    ("RESHAPE", compat.MAPPED): 12, ("CONCATENATION", compat.MAPPED): 2, ("ADD", compat.MAPPED): 13,
    ("QUANTIZE", compat.MAPPED): 1, ("CONV_2D", compat.MAPPED): 88}


def test_parse_fully_mapped_ssd():
    report = edgetpu.parse_compiler_log(recorded_log("ssdlite_mobiledet_edgetpu_mapped.log"))
    assert report.source == compat.COMPILER
    assert report.compiler_version == "16.0.384591198"
    assert report.model == "ssdlite_mobiledet_edgetpu_320_int8.tflite"
    assert (report.ops_on_edgetpu, report.ops_on_cpu, report.edgetpu_subgraphs) == (144, 3, 1)
    assert report.compiled and report.errors == []
    assert report.status_counts() == SSD_STATUS_COUNTS
    segment, = report.segments
    assert report.output_model == "ssdlite_mobiledet_edgetpu_320_int8_edgetpu.tflite"
    assert segment.compile_time_ms == 1843
    assert (segment.input_size, segment.output_size) == ("4.09MiB", "4.87MiB")
    assert segment.on_chip_memory_used == "4.23MiB"
    assert segment.on_chip_memory_remaining == "3.07MiB"
    assert segment.off_chip_memory_used == "0.00B"
    assert segment.total_operations == 147
    assert segment.operation_log == "ssdlite_mobiledet_edgetpu_320_int8_edgetpu.log"


def test_parse_hard_swish_split():
    report = edgetpu.parse_compiler_log(recorded_log("ssdlite_mobiledet_cpu_hard_swish.log"))
    assert (report.ops_on_edgetpu, report.ops_on_cpu, report.edgetpu_subgraphs) == (2, 229, 1)
    assert report.status_counts() == {
        ("HARD_SWISH", compat.NOT_SUPPORTED): 46, ("MUL", compat.MORE_THAN_ONE_SUBGRAPH): 20,
        ("CONV_2D", compat.MAPPED): 1, ("CONV_2D", compat.MORE_THAN_ONE_SUBGRAPH): 95,
        ("DEPTHWISE_CONV_2D", compat.MORE_THAN_ONE_SUBGRAPH): 28,
        ("MEAN", compat.MORE_THAN_ONE_SUBGRAPH): 10, ("ADD", compat.MORE_THAN_ONE_SUBGRAPH): 12,
        ("QUANTIZE", compat.MAPPED): 1, ("RESHAPE", compat.MORE_THAN_ONE_SUBGRAPH): 12,
        ("CONCATENATION", compat.MORE_THAN_ONE_SUBGRAPH): 2,
        ("LOGISTIC", compat.MORE_THAN_ONE_SUBGRAPH): 1,
        ("DEQUANTIZE", compat.UNSUPPORTED_DATA_TYPE): 2, ("CUSTOM", compat.UNSUPPORTED_DATA_TYPE): 1}
    conv_rows = [(r.count, r.status) for r in report.rows if r.op == "CONV_2D"]
    assert conv_rows == [(1, compat.MAPPED), (95, compat.MORE_THAN_ONE_SUBGRAPH)]
    assert report.segments[0].on_chip_memory_used == "1.25KiB"
    assert report.compiled


def test_parse_float_model_error():
    report = edgetpu.parse_compiler_log(recorded_log("float_model_not_quantized.log"))
    assert report.errors == [compat.MODEL_NOT_QUANTIZED]
    assert not report.compiled
    assert report.model == "ssdlite_mobiledet_edgetpu_320_float.tflite"
    assert (report.rows, report.segments, report.ops_on_edgetpu) == ([], [], 0)


def test_parse_dynamic_size_failure():
    report = edgetpu.parse_compiler_log(recorded_log("dynamic_batch_failed.log"), model="dyn.tflite")
    assert report.errors == [
        compat.DYNAMIC_SIZED_TENSORS,
        "Compilation failed: Model failed in Tflite interpreter. Please ensure model can be "
        "loaded/run in Tflite interpreter.",
        "Compilation failed!"]
    assert not report.compiled and report.model == "dyn.tflite" and report.rows == []


def test_parse_operation_log_with_rank_failure():
    report = edgetpu.parse_compiler_log(recorded_log("unsupported_rank_operation_log.log"))
    assert report.model == "box_head_5d_int8.tflite"
    assert report.output_model == "box_head_5d_int8_edgetpu.tflite"
    assert report.status_counts() == {
        ("DEPTHWISE_CONV_2D", compat.MAPPED): 6, ("RESHAPE", compat.UNSUPPORTED_RANK): 2,
        ("QUANTIZE", compat.MAPPED): 1, ("CONV_2D", compat.MAPPED): 12,
        ("CONV_2D", compat.MORE_THAN_ONE_SUBGRAPH): 4, ("TRANSPOSE", compat.MORE_THAN_ONE_SUBGRAPH): 2,
        ("CONCATENATION", compat.MORE_THAN_ONE_SUBGRAPH): 1,
        ("DEQUANTIZE", compat.UNSUPPORTED_DATA_TYPE): 1}
    assert (report.ops_on_edgetpu, report.ops_on_cpu, report.edgetpu_subgraphs) == (19, 10, 1)
    assert report.segments[0].compile_time_ms is None


def test_parse_two_segments():
    report = edgetpu.parse_compiler_log(recorded_log("ssdlite_mobiledet_edgetpu_two_segments.log"))
    assert [s.output_model for s in report.segments] == [
        "ssdlite_mobiledet_edgetpu_320_int8_segment_0_of_2_edgetpu.tflite",
        "ssdlite_mobiledet_edgetpu_320_int8_segment_1_of_2_edgetpu.tflite"]
    assert [(s.ops_on_edgetpu, s.ops_on_cpu) for s in report.segments] == [(74, 0), (70, 3)]
    assert [s.compile_time_ms for s in report.segments] == [1021, 988]
    assert (report.ops_on_edgetpu, report.ops_on_cpu, report.edgetpu_subgraphs) == (144, 3, 2)
    assert report.status_counts() == SSD_STATUS_COUNTS
    assert report.compiled


def test_parse_unsupported_opcode_version():
    report = edgetpu.parse_compiler_log(
        "Edge TPU Compiler version 16.0.384591198\n"
        "ERROR: Didn't find op for builtin opcode 'TRANSPOSE_CONV' version '4'. An older version of "
        "this builtin might be supported. Are you using an old TFLite binary with a newer model?\n"
        "\nERROR: Registration failed.\n\nInvalid model: head.tflite\nModel could not be parsed\n")
    assert report.errors == [
        "Didn't find op for builtin opcode 'TRANSPOSE_CONV' version '4'. An older version of this "
        "builtin might be supported. Are you using an old TFLite binary with a newer model?",
        "Registration failed.", "Model could not be parsed"]
    assert not report.compiled and report.model == "head.tflite"


def test_parse_internal_compiler_error():
    report = edgetpu.parse_compiler_log(
        "Edge TPU Compiler version 15.0.340273435\n\nInternal compiler error. Aborting! \n")
    assert report.compiler_version == "15.0.340273435"
    assert report.errors == ["Internal compiler error. Aborting!"] and not report.compiled


def test_parsed_report_round_trips_and_prints():
    report = edgetpu.parse_compiler_log(recorded_log("ssdlite_mobiledet_cpu_hard_swish.log"))
    assert compat.CompatibilityReport.from_json(report.to_json()) == report
    text = compat.format_report(report)
    assert "(Edge TPU Compiler 16.0.384591198)" in text
    assert "HARD_SWISH         46     Operation not supported" in text
    assert "Output model: ssdlite_mobiledet_cpu_320_int8_edgetpu.tflite, compiled in 402 ms" in text


# ----------------------------------------------------------------------------- running the compiler

def test_missing_compiler_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(edgetpu.CompilerNotFoundError, match="is not on PATH") as error:
        edgetpu.find_compiler()
    assert "x86-64 Linux only" in str(error.value)
    with pytest.raises(edgetpu.CompilerNotFoundError):
        edgetpu.compile_model(str(tmp_path / "m.tflite"), str(tmp_path / "out"))
    with pytest.raises(edgetpu.CompilerNotFoundError, match="not an executable"):
        edgetpu.find_compiler(str(tmp_path / "no_such_compiler"))


def install_fake_compiler(folder, log_name: str, exit_code: int = 0) -> str:
    """An `edgetpu_compiler` that records its arguments, writes the output model, prints a log."""
    path = os.path.join(folder, "edgetpu_compiler")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"""#!{sys.executable}
import os, shutil, sys
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "argv.txt"), "w") as f:
    f.write("\\n".join(sys.argv[1:]))
out_dir, model = sys.argv[sys.argv.index("-o") + 1], sys.argv[-1]
if {exit_code} == 0:
    stem = os.path.splitext(os.path.basename(model))[0]
    shutil.copyfile(model, os.path.join(out_dir, stem + "_edgetpu.tflite"))
sys.stdout.write(open({os.path.join(LOG_DIR, log_name)!r}).read())
sys.exit({exit_code})
""")
    os.chmod(path, 0o755)
    return path


def test_compile_model_runs_the_compiler_and_parses_its_output(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = install_fake_compiler(str(bin_dir), "ssdlite_mobiledet_edgetpu_mapped.log")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "ssdlite_mobiledet_edgetpu_320_int8.tflite"
    model.write_bytes(b"tflite model bytes")
    out_dir = str(tmp_path / "out")

    result = edgetpu.compile_model(str(model), out_dir, min_runtime=14, timeout_sec=300)

    assert edgetpu.find_compiler() == fake
    assert result.command == [fake, "-s", "-o", out_dir, "-m", "14", "-t", "300", str(model)]
    assert (bin_dir / "argv.txt").read_text().split("\n") == result.command[1:]
    assert result.returncode == 0
    assert result.log_path == os.path.join(
        out_dir, "ssdlite_mobiledet_edgetpu_320_int8.edgetpu_compiler.log")
    with open(result.log_path, encoding="utf-8") as f:
        assert f.read() == recorded_log("ssdlite_mobiledet_edgetpu_mapped.log")
    assert result.report == edgetpu.parse_compiler_log(
        recorded_log("ssdlite_mobiledet_edgetpu_mapped.log"), model=str(model))
    assert result.output_paths == [
        os.path.join(out_dir, "ssdlite_mobiledet_edgetpu_320_int8_edgetpu.tflite")]
    assert all(os.path.exists(p) for p in result.output_paths)


def test_compile_model_with_segments_and_a_failing_compiler(tmp_path):
    fake = install_fake_compiler(str(tmp_path), "dynamic_batch_failed.log", exit_code=1)
    model = tmp_path / "dyn.tflite"
    model.write_bytes(b"tflite model bytes")
    out_dir = str(tmp_path / "out")

    result = edgetpu.compile_model(str(model), out_dir, compiler=fake, num_segments=2)

    assert result.command == [fake, "-s", "-o", out_dir, "-n", "2", str(model)]
    assert result.returncode == 1
    assert not result.report.compiled
    assert result.report.errors[0] == compat.DYNAMIC_SIZED_TENSORS
    assert result.output_paths == []
    assert os.path.exists(result.log_path)
