"""mobiledets-benchmark: the local backend on real exported models, tables and plot, the Edge TPU
backend through a stand-in libedgetpu.so.1 built from tests/edgetpu_standin/, per-row failures."""
import collections
import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from ai_edge_litert.interpreter import OpResolverType

from conftest import TINY_BUILTIN, run_binary
from mobiledets_tf.benchmark.edgetpu_backend import benchmark_on_edgetpu
from mobiledets_tf.benchmark.harness import BenchmarkOptions, expand_models, run_benchmark
from mobiledets_tf.benchmark.latency import LatencyStats, Measurement, pool_rounds
from mobiledets_tf.benchmark.local import benchmark_locally
from mobiledets_tf.benchmark.pareto import pareto_front
from mobiledets_tf.benchmark.results import read_rows
from mobiledets_tf.benchmark.targets import parse_target, parse_targets, split_target_specs

STANDIN_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "edgetpu_standin",
                              "edgetpu_standin.c")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_data_dir):
    """A tiny MobileDet-EdgeTPU exported at float32 and int8, with its model cards and statistics."""
    import tensorflow as tf
    from mobiledets_tf.config import load_config
    from mobiledets_tf.export.exporter import export_detector
    from mobiledets_tf.models.detector import SSDLiteDetector
    from mobiledets_tf.stats import model_stats
    from mobiledets_tf.data.sources import resolve_data

    builtin = ",".join(f"data.builtin.{k}={v}" for k, v in TINY_BUILTIN.items())
    config = load_config(None, ["model.arch=mobiledet_edgetpu,model.input_size=64,model.num_classes=6,"
                                f"model.depth_multiplier=0.5,{builtin}"])
    root = tmp_path_factory.mktemp("bench")
    detector = SSDLiteDetector.from_config(config.model)
    checkpoint = tf.train.Checkpoint(model=detector.model).write(str(root / "ckpt"))
    models = export_detector(config, checkpoint, resolve_data(config), str(root / "export"),
                             ["float32", "int8"], num_calibration_images=8, saved_model=False)
    return {"float32": models["float32"].tflite_path, "int8": models["int8"].tflite_path,
            "stats": model_stats(detector.float_model)["total"], "dir": str(root / "export")}


def test_target_specs_parse_and_reject_bad_input():
    assert split_target_specs("cpu,gpu,external:path=/d/libQnn.so,options=backend_type:htp,nnapi") == [
        "cpu", "gpu", "external:path=/d/libQnn.so,options=backend_type:htp", "nnapi"]
    assert parse_target("nnapi:accelerator=qti-dsp").label == "nnapi(accelerator=qti-dsp)"
    assert parse_target("cpu:xnnpack=false").flag("xnnpack", True) is False
    assert parse_targets([], "edgetpu")[0].kind == "edgetpu"
    for spec, message in [("tpu", "unknown kind 'tpu'"), ("gpu", "the local backend runs cpu, external"),
                          ("cpu:threads=4", "cpu has no option 'threads'"), ("external", "needs path="),
                          ("cpu:xnnpack", "'xnnpack' is not key=value")]:
        with pytest.raises(ValueError, match=message):
            parse_target(spec, "local")


def test_rounds_pool_their_samples_and_fail_when_one_failed():
    first = Measurement("m.tflite", "local", "cpu", "host", 1, LatencyStats.from_samples([1, 2, 9]),
                        samples_ms=[1.0, 2.0, 9.0])
    second = Measurement("m.tflite", "local", "cpu", "host", 1, LatencyStats.from_samples([3, 4]),
                         samples_ms=[3.0, 4.0])
    pooled = pool_rounds([first, second])
    assert pooled.ok and pooled.latency.count == 5 and pooled.latency.median_ms == 3.0
    assert pooled.latency.min_ms == 1.0 and pooled.latency.max_ms == 9.0 and pooled.details["rounds"] == 2
    crashed = Measurement("m.tflite", "local", "cpu", "host", 1, error="crashed (signal 11): boom")
    failed = pool_rounds([first, crashed])
    assert not failed.ok and failed.latency is None and failed.error == "crashed (signal 11): boom"


def test_pareto_front_keeps_only_undominated_points():
    points = [(10.0, 0.30), (12.0, 0.25), (15.0, 0.35), (15.0, 0.20), (20.0, 0.35), (30.0, 0.40)]
    assert pareto_front(points) == [(10.0, 0.30), (15.0, 0.35), (30.0, 0.40)]


def test_local_backend_times_real_models_and_reports_a_broken_one(exported, tmp_path):
    broken = tmp_path / "broken_float32.tflite"
    broken.write_bytes(b"not a flatbuffer")
    paths = [exported["float32"], exported["int8"], str(broken)]
    finished = []
    measurements = benchmark_locally(paths, parse_targets(["cpu,cpu:xnnpack=false"], "local"),
                                     warmup_runs=2, num_runs=7, cpus=[0], rounds=2, progress=finished.append)
    assert len(finished) == 2 * len(measurements) == 12   # every round reports progress
    assert [(os.path.basename(m.model_path), m.target) for m in measurements] == [
        (os.path.basename(p), t) for t in ("cpu", "cpu(xnnpack=false)") for p in paths]
    for m in measurements:
        assert m.threads == 1 and "pinned to CPU 0" in m.device
        if m.model_path == str(broken):
            assert not m.ok and "cannot load the model" in m.error and m.latency is None
            continue
        s = m.latency
        assert m.ok and s.count == 14 and len(m.samples_ms) == 14 and m.details["rounds"] == 2
        assert s.median_ms == pytest.approx(float(np.median(m.samples_ms)))
        assert 0 < s.min_ms <= s.median_ms <= s.p90_ms <= s.max_ms
        assert s.min_ms <= s.mean_ms <= s.max_ms and s.std_ms >= 0
        assert m.details["init_ms"] > 0 and m.details["first_inference_ms"] > 0


def test_benchmark_binary_writes_tables_and_plot(exported, tmp_path):
    metrics = tmp_path / "int8_metrics.json"
    metrics.write_text(json.dumps({"AP": 0.412, "AP50": 0.655}))
    eval_dir = os.path.join(exported["dir"], "eval_" + os.path.basename(exported["float32"])[:-len(".tflite")])
    os.makedirs(eval_dir, exist_ok=True)
    with open(os.path.join(eval_dir, "metrics.json"), "w") as f:
        json.dump({"AP": 0.421, "AP50": 0.671}, f)
    out = tmp_path / "tables"
    run = run_binary("benchmark", f"--models={exported['dir']}/*.tflite", "--num_runs=5", "--warmup_runs=1",
                     f"--eval_json={os.path.basename(exported['int8'])}={metrics}", f"--output_dir={out}",
                     "--name=tiny")
    assert "tables:" in run.stdout and "| mobiledet_edgetpu_64_float32.tflite |" in run.stdout
    rows = {r.precision: r for r in read_rows(str(out / "tiny.json"))}
    assert set(rows) == {"float32", "int8"}
    for precision, ap in [("float32", 0.421), ("int8", 0.412)]:
        row = rows[precision]
        assert row.architecture == "mobiledet_edgetpu" and row.input_size == 64 and row.threads == 1
        assert row.multiply_adds == exported["stats"]["madds"] and row.parameters == exported["stats"]["params"]
        assert row.ap == pytest.approx(ap) and row.runs == 5 and row.median_ms > 0 and not row.error
    with open(out / "tiny.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["precision"] for r in csv_rows] == ["float32", "int8"]
    assert float(csv_rows[1]["median_ms"]) == pytest.approx(rows["int8"].median_ms)
    markdown = (out / "tiny.md").read_text()
    assert "| model | architecture | precision |" in markdown and "versions: ai-edge-litert" in markdown
    assert (out / "tiny.png").read_bytes().startswith(PNG_SIGNATURE)


def test_benchmark_binary_errors_name_the_problem(tmp_path):
    cases = [(["--models=/nowhere/*.tflite"], "nothing matches '/nowhere/*.tflite'"),
             ([f"--models={STANDIN_SOURCE}"], "not .tflite files"),
             (["--models=x.tflite", "--targets=gpu"], "the local backend runs cpu, external"),
             (["--models=x.tflite", "--eval_json=x"], "is not MODEL=PATH")]
    (tmp_path / "x.tflite").write_bytes(b"")
    for args, message in cases:
        run = run_binary("benchmark", *[a.replace("x.tflite", str(tmp_path / "x.tflite")) for a in args],
                         f"--output_dir={tmp_path}", check=False)
        assert run.returncode != 0 and message in run.stderr, (args, run.stderr[-500:])


@pytest.fixture(scope="module")
def edgetpu_standin(tmp_path_factory):
    """libedgetpu.so.1 built from the stand-in source (a C compiler is part of the test set-up)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "tests of the Edge TPU backend need a C compiler (cc) to build the stand-in runtime"
    library = tmp_path_factory.mktemp("edgetpu") / "libedgetpu.so.1"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), STANDIN_SOURCE], check=True)
    return str(library)


def test_edgetpu_backend_through_the_standin_runtime(exported, edgetpu_standin, tmp_path, monkeypatch):
    log = tmp_path / "delegate_options.log"
    monkeypatch.setenv("EDGETPU_STANDIN_LOG", str(log))
    # edgetpu_compiler writes NAME_edgetpu.tflite next to NAME.tflite and its model card.
    compiled = tmp_path / "mobiledet_edgetpu_64_int8_edgetpu.tflite"
    shutil.copy(exported["int8"], compiled)
    shutil.copy(exported["int8"][:-len(".tflite")] + ".model.json", tmp_path)
    models = [str(compiled), exported["int8"]]
    targets = parse_targets(["edgetpu:device=usb:0,edgetpu:device=usb:1,edgetpu:device=pci:0"], "edgetpu")
    measurements = benchmark_on_edgetpu(models, targets, library=edgetpu_standin, warmup_runs=1, num_runs=4)
    by_target = {(m.target, os.path.basename(m.model_path)): m for m in measurements}
    for device in ("usb:0", "pci:0"):
        m = by_target[(f"edgetpu(device={device})", compiled.name)]
        assert m.ok and m.latency.count == 4 and m.device == f"Edge TPU {device}"
    missing = by_target[("edgetpu(device=usb:1)", compiled.name)]
    assert "Failed to load delegate from" in missing.error and "is an Edge TPU attached as usb:1" in missing.error
    for target in ("edgetpu(device=usb:0)", "edgetpu(device=usb:1)", "edgetpu(device=pci:0)"):
        assert "not compiled for the Edge TPU" in by_target[(target, os.path.basename(exported["int8"]))].error
    assert log.read_text().splitlines() == ["device=usb:0", "device=usb:1", "device=pci:0"]
    rows = run_benchmark([str(compiled)], "edgetpu", targets[:1], str(tmp_path / "tables"),
                         options=BenchmarkOptions(warmup_runs=1, num_runs=3, edgetpu_library=edgetpu_standin),
                         plot=False)
    assert (rows[0].architecture, rows[0].precision, rows[0].runs) == ("mobiledet_edgetpu", "int8", 3)
    assert rows[0].multiply_adds == exported["stats"]["madds"]


def test_benchmark_binary_writes_every_row_and_fails_when_one_could_not_be_measured(exported, edgetpu_standin,
                                                                                   tmp_path):
    compiled = tmp_path / "mobiledet_edgetpu_64_int8_edgetpu.tflite"
    shutil.copy(exported["int8"], compiled)
    run = run_binary("benchmark", "--backend=edgetpu", f"--edgetpu_library={edgetpu_standin}", f"--models={compiled}",
                     "--targets=edgetpu:device=usb:0,edgetpu:device=usb:1", "--warmup_runs=1", "--num_runs=3",
                     f"--output_dir={tmp_path / 'tables'}", check=False)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "1 of 2 rows could not be measured" in run.stderr
    rows = json.loads((tmp_path / "tables" / "latency.json").read_text())["rows"]
    assert [bool(row["error"]) for row in rows] == [False, True] and rows[0]["median_ms"] > 0


def test_edgetpu_backend_without_the_runtime_and_with_a_crashing_one(exported, edgetpu_standin, tmp_path):
    compiled = tmp_path / "tiny_int8_edgetpu.tflite"
    shutil.copy(exported["int8"], compiled)
    target = parse_targets(["edgetpu"], "edgetpu")
    missing = benchmark_on_edgetpu([str(compiled)], target, library=str(tmp_path / "libedgetpu.so.1"))
    assert "not found: install the Edge TPU runtime from Coral's apt repository" in missing[0].error
    from mobiledets_tf.benchmark.local import measure_in_worker
    crashed = measure_in_worker(str(compiled), "edgetpu", target[0], "Edge TPU usb:0", 1, 1, 3,
                                delegate=edgetpu_standin, delegate_options={"standin_crash": "1"})
    assert crashed.latency is None and crashed.error.startswith("crashed (signal 6)")


def test_models_expand_from_globs_in_order(exported):
    paths = expand_models([os.path.join(exported["dir"], "*.tflite"), exported["int8"]])
    assert [os.path.basename(p) for p in paths] == ["mobiledet_edgetpu_64_float32.tflite",
                                                    "mobiledet_edgetpu_64_int8.tflite"]
    assert np.all([os.path.exists(p) for p in paths])


def test_single_op_models_compute_what_the_operator_computes_in_the_whole_model(exported):
    """Every operator cut out alone, fed the inputs it sees in the whole model, gives the same outputs."""
    from ai_edge_litert.interpreter import Interpreter
    from mobiledets_tf.benchmark.single_op_models import single_op_models
    from mobiledets_tf.export.tflite_model import read_tflite

    with open(exported["int8"], "rb") as f:
        model_bytes = f.read()
    graph = read_tflite(model_bytes).main
    whole = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    whole.allocate_tensors()
    image = whole.get_input_details()[0]
    whole.set_tensor(image["index"], np.random.default_rng(0).integers(0, 255, image["shape"], dtype=np.uint8))
    whole.invoke()
    names = []
    for index, name, op_bytes in single_op_models(model_bytes):
        op = graph.operators[index]
        assert name == op.name
        names.append(name)
        alone = Interpreter(model_content=op_bytes,
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        alone.allocate_tensors()
        variable_inputs = [i for i in op.inputs if not graph.tensors[i].is_constant]
        assert len(alone.get_input_details()) == len(dict.fromkeys(variable_inputs))
        for details, tensor in zip(alone.get_input_details(), dict.fromkeys(variable_inputs)):
            alone.set_tensor(details["index"], whole.get_tensor(tensor))
        alone.invoke()
        outputs = [(alone.get_tensor(details["index"]), whole.get_tensor(tensor))
                   for details, tensor in zip(alone.get_output_details(), op.outputs)]
        if name == "TFLite_Detection_PostProcess":
            # Only the first num_detections rows are written; the rest of each buffer is left as it was.
            detections = int(outputs[3][1][0])
            assert int(outputs[3][0][0]) == detections > 0
            outputs = [(got[:, :detections], expected[:, :detections]) for got, expected in outputs[:3]]
        for got, expected in outputs:
            np.testing.assert_array_equal(got, expected, err_msg=f"operator {index} ({name})")
    assert names == [op.name for op in graph.operators] and "CONV_2D" in names


def test_local_rows_report_delegation_and_the_per_op_profile(exported, tmp_path):
    from mobiledets_tf.benchmark.op_profile import OpProfile
    from mobiledets_tf.export.tflite_model import read_tflite

    out = tmp_path / "profiled"
    rows = run_benchmark([exported["int8"]], "local", parse_targets(["cpu,cpu:xnnpack=false"], "local"),
                         str(out), name="ops", options=BenchmarkOptions(warmup_runs=1, num_runs=3, op_profile=True),
                         plot=False)
    operators = read_tflite(exported["int8"]).main.operators
    counts = collections.Counter(op.name for op in operators)
    xnnpack, reference = rows
    # XNNPACK takes everything but the uint8 input's QUANTIZE and the postprocess op, in one partition.
    assert xnnpack.delegation == (
        f"{len(operators) - 2}/{len(operators)} nodes delegated in 1 partition(s); outside: QUANTIZE x1 "
        "(uint8 -> int8, which XNNPACK's QUANTIZE does not convert), TFLite_Detection_PostProcess x1 "
        "(custom operator: no XNNPACK kernel)")
    assert reference.delegation == f"0/{len(operators)} nodes delegated in 0 partition(s); outside: " + ", ".join(
        f"{name} x{count}" for name, count in sorted(counts.items()))
    for row in rows:
        profile = OpProfile.from_dict(row.op_profile)
        assert {r.op: r.count for r in profile.rows} == dict(counts)
        assert all(r.total_ms > 0 for r in profile.rows)
        assert [r.total_ms for r in profile.rows] == sorted((r.total_ms for r in profile.rows), reverse=True)
        assert sum(r.share for r in profile.rows) == pytest.approx(1.0)
        assert profile.model_ms == pytest.approx(row.median_ms) and "one-op model" in profile.method
    markdown = (out / "ops.md").read_text()
    assert markdown.count("## Latency per op type:") == 2 and "| CONV_2D |" in markdown
    saved = json.loads((out / "ops.json").read_text())["rows"]
    assert saved[0]["op_profile"]["rows"][0]["op"] == OpProfile.from_dict(rows[0].op_profile).rows[0].op
    with open(out / "ops.csv") as f:
        assert "op_profile" not in next(csv.reader(f))


def test_outside_reasons_name_the_xnnpack_rule_an_operator_breaks():
    from mobiledets_tf.benchmark.delegation import outside_reason

    def tensor(index, dtype, scale=None):
        return {"index": index, "dtype": dtype,
                "quantization_parameters": {"scales": np.array([scale] if scale else [], np.float32)}}

    tensors = {0: tensor(0, np.int8, 6.04), 1: tensor(1, np.int8, 0.0118), 2: tensor(2, np.int8, 6 / 255),
               3: tensor(3, np.uint8, 2 / 255), 4: tensor(4, np.int8, 2 / 255), 5: tensor(5, np.float32)}
    add = {"op_name": "ADD", "inputs": np.array([0, 1]), "outputs": np.array([2])}
    assert "scale ratio 256.7 outside XNNPACK's [1/1024, 256)" in outside_reason(add, tensors)
    tensors[0] = tensor(0, np.int8, 5.9)   # a ratio of 250.75 is one XNNPACK takes
    assert outside_reason(add, tensors) is None
    quantize = {"op_name": "QUANTIZE", "inputs": np.array([3]), "outputs": np.array([4])}
    assert outside_reason(quantize, tensors).startswith("uint8 -> int8")
    concat = {"op_name": "CONCATENATION", "inputs": np.array([5] * 6), "outputs": np.array([5])}
    assert outside_reason(concat, tensors) == "6 inputs: XNNPACK concatenates 2 to 5"
    custom = {"op_name": "TFLite_Detection_PostProcess", "inputs": np.array([5]), "outputs": np.array([5])}
    assert outside_reason(custom, tensors) == "custom operator: no XNNPACK kernel"
