"""The Colab notebooks (notebooks/*.ipynb) run top to bottom with papermill on tiny parameters, and what
they show matches the files the binaries wrote. The install cell is a no-op here (the package is
installed); a failing command fails the cell, so a broken notebook fails its test. One tiny quickstart
run (conftest's `tiny_quickstart`) is shared: quickstart.ipynb runs on a copy of its folder and
deploy.ipynb exports its float model. The Edge TPU compiler and the phone are the stand-ins of
test_compatibility.py and test_benchmark_adb.py."""
import json
import os
import re
import shutil
import statistics

import nbformat
import papermill
import pytest

from conftest import REPO_ROOT, TINY_QUICKSTART_GROUP, TINY_QUICKSTART_OPTIONS
from mobiledets_tf.search.latency_data import read_dataset
from test_benchmark_adb import DEVICES, S10, S10_RULES, FakeAdb, run_rule
from test_compatibility import install_fake_compiler
from test_search import SMALL_SPACE, search_config

NOTEBOOKS_DIR = os.path.join(REPO_ROOT, "notebooks")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def execute(name, work_dir, **parameters):
    """Runs notebooks/NAME.ipynb with these parameters; returns the executed notebook."""
    output = os.path.join(work_dir, f"{name}.out.ipynb")
    papermill.execute_notebook(os.path.join(NOTEBOOKS_DIR, f"{name}.ipynb"), output, parameters=parameters,
                               kernel_name="python3", cwd=str(work_dir), progress_bar=False)
    return nbformat.read(output, as_version=4)


def outputs(nb, kind):
    """Every output of the code cells: 'text' (streams and plain results), 'markdown' or 'png'."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if kind == "text" and output.output_type == "stream":
                found.append(output.text)
            data = output.get("data", {})
            key = {"text": "text/plain", "markdown": "text/markdown", "png": "image/png"}[kind]
            if key in data:
                found.append(data[key])
    return found


def text_of(nb):
    return "".join(outputs(nb, "text"))


def read_json(path):
    with open(path) as f:
        return json.load(f)


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, path


@pytest.fixture(scope="module")
def quickstart(tiny_quickstart, tmp_path_factory):
    """(output folder, executed notebook) of quickstart.ipynb with the parameters of the shared tiny
    quickstart run, on a copy of that run's folder: every stage finds its outputs there."""
    config, finished, _, _ = tiny_quickstart
    work = tmp_path_factory.mktemp("quickstart_notebook")
    out = work / "out"
    shutil.copytree(finished, out)
    options = TINY_QUICKSTART_OPTIONS
    nb = execute("quickstart", work, OUTPUT_DIR=str(out), CONFIG=str(config), TRAIN_STEPS=options["train_steps"],
                 QAT_STEPS=options["qat_steps"], FLOAT32=False, BENCHMARK_RUNS=options["benchmark_runs"],
                 BENCHMARK_WARMUP_RUNS=options["benchmark_warmup_runs"])
    return out, nb


@pytest.mark.slow
@pytest.mark.xdist_group(TINY_QUICKSTART_GROUP)
def test_quickstart_notebook(quickstart):
    """The notebook runs mobiledets-quickstart with its parameters: on the folder of a run with the same
    ones, every stage is found done (the stages themselves are tested in test_quickstart.py)."""
    out, nb = quickstart
    text = text_of(nb)
    assert "no TPU or GPU: running on the CPU -> mobiledets-train --strategy=default" in text
    assert "$ mobiledets-stats --arch=mobiledet_edgetpu" in text and "multiply-adds" in text
    assert "$ mobiledets-quickstart --config=" in text
    for number in range(1, 7):
        assert re.search(rf"\[{number}/6\] [^\n]*: skipped, already done", text), text
    assert "[1/6] $ mobiledets-" not in text

    summary = read_json(out / "summary.json")
    int8 = summary["models"]["int8"]
    assert set(summary["models"]) == {"float", "int8"}   # FLOAT32=False
    assert int8["latency_ms"] > 0 and os.path.getsize(int8["tflite"]) > 0
    assert (f"int8 .tflite (QAT): AP {int8['ap']:.3f}, AP50 {int8['ap50']:.3f}, median latency "
            f"{int8['latency_ms']:.2f} ms, {int8['size_mb']:.2f} MB: {int8['tflite']}") in text
    float_metrics = read_json(out / "float" / "eval" / "metrics.json")
    assert summary["models"]["float"]["ap50"] == float_metrics["AP50"]

    # Shown inline: summary.md and the latency table, the two detection pictures and the Pareto plot.
    markdown = outputs(nb, "markdown")
    assert (out / "summary.md").read_text() in markdown
    assert (out / "benchmark" / "latency.md").read_text() in markdown
    assert len(outputs(nb, "png")) == 3
    for picture in (summary["models"]["float"]["detections"], int8["detections"], summary["pareto_plot"]):
        assert_png(picture)


@pytest.mark.slow
def test_search_notebook(tiny_data_dir, tmp_path):
    space = tmp_path / "small_space.yaml"
    space.write_text(SMALL_SPACE)
    config = search_config(tmp_path, 4, str(space), rl_delay=0.25, warmup=0.25)
    out = tmp_path / "out"
    nb = execute("search", tmp_path, OUTPUT_DIR=str(out), SPACE=str(space), PLATFORM="edgetpu",
                 NUM_ARCHITECTURES=12, HOLDOUT=2, LATENCY_INPUT_SIZE=64, LATENCY_NUM_CLASSES=3,
                 LATENCY_DEPTH_MULTIPLIER=0.5, LATENCY_RUNS=2, LATENCY_WARMUP_RUNS=1, LATENCY_ROUNDS=1,
                 SEARCH_CONFIG=str(config), SEARCH_STEPS=4, TRAIN_STEPS=2)
    text = text_of(nb)
    assert "-> mobiledets-search --strategy=default" in text

    latency_dir = out / "latency"
    header, rows = read_dataset(str(latency_dir / "small_space_edgetpu.jsonl"))
    latencies = [row["stats"]["min_ms"] for row in rows]   # the fastest runs, which the cost model fits
    assert header["space_source"] == str(space) and header["platform"] == "edgetpu"
    assert len(latencies) == 12 and all(ms > 0 for ms in latencies)
    target = round(statistics.median(latencies), 3)
    assert f"latency target: {target} ms (median of the measured architectures' fastest runs)" in text

    cost_model = read_json(latency_dir / "small_space_edgetpu_cost.json")
    assert cost_model["num_train"] == 10 and "holdout" in cost_model["metrics"]
    assert cost_model["measured_with"]["statistic"] == "min"
    assert_png(latency_dir / "small_space_edgetpu_cost.png")
    assert len(outputs(nb, "png")) == 1

    searched = read_json(out / "search" / "searched_arch.json")
    assert searched["step"] == 4
    assert f"step 4: predicted {searched['predicted_ms']:.2f} ms for a target of {target} ms" in text
    assert (out / "search" / "searched_arch.yaml").read_text() in text
    assert (out / "train" / "ckpt-2.index").exists()


def test_the_search_notebook_shows_a_finalist_search_result(tmp_path, capsys):
    """The search notebook's result cell on what a random search with finalists writes (no controller,
    so no probabilities; test_search_notebook covers the TuNAS result)."""
    from mobiledets_tf.search.space import load_space
    from mobiledets_tf.search.tunas import save_result

    space = load_space("ibn_fused_tucker", "cpu")
    indices = [0] * len(space.decisions)
    save_result(space, indices, 24.7, str(tmp_path), "searched_arch", "finalist 3 of a test search", 25.0,
                "test cost model", finalist="finalist_03", finalist_training_loss=1.2345)
    nb = nbformat.read(os.path.join(NOTEBOOKS_DIR, "search.ipynb"), as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and '"searched_arch.json"' in c.source)
    exec(cell.source, {"os": os, "json": json, "SEARCH_DIR": str(tmp_path), "TARGET_MS": 25.0})
    shown = capsys.readouterr().out
    assert "chosen among the finalists: finalist_03, finalist_training_loss 1.2345" in shown
    assert "predicted 24.70 ms for a target of 25.0 ms" in shown and "probability" not in shown
    first_tag, first_choice = next(iter(json.loads((tmp_path / "searched_arch.json").read_text())["choices"].items()))
    assert f"{first_tag:12s} {first_choice}" in shown
    assert (tmp_path / "searched_arch.yaml").read_text() in shown


@pytest.mark.slow
@pytest.mark.xdist_group(TINY_QUICKSTART_GROUP)
def test_deploy_notebook(quickstart, tmp_path, monkeypatch):
    quickstart_out, _ = quickstart
    compiler_dir = tmp_path / "compiler"
    compiler_dir.mkdir()
    compiler = install_fake_compiler(str(compiler_dir), "ssdlite_mobiledet_edgetpu_mapped.log")
    adb = FakeAdb(tmp_path)
    monkeypatch.setenv("ADB_STANDIN_LOG", str(adb.log))
    monkeypatch.setenv("ADB_STANDIN_SCENARIO", str(adb.scenario))
    adb.answer(DEVICES, run_rule(S10, "--use_xnnpack=true", "cpu_xnnpack.txt"), *S10_RULES)
    benchmark_binary = tmp_path / "benchmark_model"
    benchmark_binary.write_bytes(b"\x7fELF")

    out = tmp_path / "out"
    nb = execute("deploy", tmp_path, OUTPUT_DIR=str(out), MODEL_DIR=str(quickstart_out / "float"),
                 CALIBRATION_IMAGES=4, EDGETPU_COMPILER=compiler, BENCHMARK_RUNS=3, ADB=adb.path,
                 BENCHMARK_BINARY=str(benchmark_binary), SERIALS=S10)
    text = text_of(nb)
    name = "mobiledet_edgetpu_64_int8"
    export = out / "export"
    assert "-> export int8" in text
    assert (compiler_dir / "argv.txt").read_text().split("\n")[-1] == str(export / f"{name}.tflite")
    assert f"compiled for the Edge TPU: {export / (name + '_edgetpu.tflite')}" in text
    assert (export / f"{name}.edgetpu_report.txt").read_text() in text
    assert (export / f"{name}.report.txt").read_text() in text

    local = read_json(out / "benchmark_local" / "latency.json")["rows"][0]
    assert local["model"] == f"{name}.tflite" and local["median_ms"] > 0
    assert f"{name}.tflite [cpu] on {local['device']}: {local['median_ms']:.2f} ms" in text

    # The phone: the recorded benchmark_model run (mean 23.4501 ms) reaches the tables.
    assert ["devices"] in adb.calls()
    assert any(call[:3] == ["-s", S10, "shell"] and f"--graph=/data/local/tmp/mobiledets/{name}.tflite" in call[-1]
               for call in adb.calls())
    phone = read_json(out / "benchmark_adb" / "latency.json")["rows"][0]
    assert phone["mean_ms"] == pytest.approx(23.4501) and not phone["error"]
    assert f"{name}.tflite [cpu] on {phone['device']}: 23.45 ms" in text
    assert (out / "benchmark_adb" / "latency.md").read_text() in outputs(nb, "markdown")
    assert len(outputs(nb, "png")) == 2
