"""mobiledets-quickstart: the whole flow end to end on a tiny config, its summary against the files the
binaries wrote, skipping finished stages on a second run, and its errors."""
import json
import os
import re
import time

import pytest

from conftest import REPO_ROOT, TINY_QUICKSTART_GROUP, run_binary
from mobiledets_tf.benchmark.results import read_rows
from mobiledets_tf.pipeline.quickstart import (DEFAULT_CONFIG, Command, PipelineError, Stage,
                                               resolve_config_path, run_stages)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUMBER = r"-?\d+\.\d+"


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _latest_step(model_dir) -> int:
    import tensorflow as tf
    return int(tf.train.latest_checkpoint(str(model_dir)).rsplit("-", 1)[1])


@pytest.mark.slow
@pytest.mark.xdist_group(TINY_QUICKSTART_GROUP)
def test_quickstart_runs_every_stage_then_skips_them(tiny_quickstart):
    _, out, args, first = tiny_quickstart
    for number in range(1, 7):
        assert f"[{number}/6] " in first.stdout and f"[{number}/6] $ mobiledets-" in first.stdout
    assert "skipped" not in first.stdout
    # The binaries' own output shows in between (export's file list, benchmark's table).
    assert re.search(r"int8_qat: \S+_int8_qat\.tflite", first.stdout) and "\ntables: " in first.stdout
    assert _latest_step(out / "float") == 4 and _latest_step(out / "qat") == 2   # override, --qat_steps

    summary = _read_json(out / "summary.json")
    models = summary["models"]
    float_metrics = _read_json(out / "float" / "eval" / "metrics.json")
    assert (models["float"]["ap"], models["float"]["ap50"]) == (float_metrics["AP"], float_metrics["AP50"])
    rows = {row.model: row for row in read_rows(str(out / "benchmark" / "latency.json"))}
    for key, precision in [("int8", "int8_qat"), ("float32", "float32")]:
        model = models[key]
        assert model["tflite"].endswith(f"mobiledet_edgetpu_64_{precision}.tflite")
        metrics = _read_json(os.path.join(os.path.dirname(model["tflite"]),
                                          f"eval_mobiledet_edgetpu_64_{precision}", "metrics.json"))
        assert (model["ap"], model["ap50"]) == (metrics["AP"], metrics["AP50"])
        row = rows[os.path.basename(model["tflite"])]
        assert row.precision == precision and row.runs == 3 and not row.error
        assert model["latency_ms"] == row.median_ms > 0
        assert model["size_mb"] == os.path.getsize(model["tflite"]) / 1e6 > 0
    assert summary["latency"]["threads"] == 1 and summary["latency"]["backend"] == "local"
    for picture in [models["float"]["detections"], models["int8"]["detections"], summary["pareto_plot"]]:
        with open(picture, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE, picture

    markdown = (out / "summary.md").read_text()
    assert markdown in first.stdout
    assert re.search(rf"\| int8 \.tflite \(QAT\) \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|", markdown)
    assert re.search(rf"\| float \(Keras checkpoint\) \| {NUMBER} \| {NUMBER} \|  \|  \|", markdown)
    assert f"{models['int8']['latency_ms']:.2f}" in markdown and summary["pareto_plot"] in markdown
    assert [s["status"] for s in summary["stages"]] == ["ran"] * 6

    start = time.monotonic()
    second = run_binary("quickstart", *args)
    seconds = time.monotonic() - start
    for number in range(1, 7):
        assert re.search(rf"\[{number}/6\] [^\n]*: skipped, already done", second.stdout), second.stdout
    assert "$ mobiledets-" not in second.stdout
    again = _read_json(out / "summary.json")
    assert again["models"] == models and [s["status"] for s in again["stages"]] == ["skipped"] * 6
    assert seconds < 60, seconds


def test_bad_input_stops_before_any_stage(tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "missing.yaml"
    for args, message in [([f"--config={missing}"], f"{missing}: config file not found"),
                          (["--override=train.nope=1"], "override 'train.nope=1': unknown key"),
                          (["--qat_steps=0"], "--qat_steps must be at least 1")]:
        run = run_binary("quickstart", *args, f"--output_dir={out}", check=False)
        assert run.returncode != 0 and f"mobiledets-quickstart: {message}" in run.stderr, run.stderr[-1000:]
        assert "[1/6]" not in run.stdout and not out.exists()


def test_default_config_is_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(DEFAULT_CONFIG) == os.path.join(REPO_ROOT, "configs", "experiments",
                                                               "quickstart.yaml")
    with pytest.raises(PipelineError, match="nowhere.yaml: config file not found"):
        resolve_config_path("nowhere.yaml")


def test_a_failing_stage_stops_the_run_and_names_itself(tmp_path, capfd):
    stages = [Stage("Evaluating nothing", [Command("eval", [f"--model_dir={tmp_path / 'missing'}"],
                                                   lambda: False, "")]),
              Stage("Never reached", [Command("eval", [f"--model_dir={tmp_path}"], lambda: False, "")])]
    with pytest.raises(PipelineError, match=r"^stage 1/2 \(Evaluating nothing\) failed: "
                                            r"mobiledets-eval exited with code 1 \(its output is above\)$"):
        run_stages(stages)
    output = capfd.readouterr()
    assert "[1/2] $ mobiledets-eval --model_dir=" in output.out and "[2/2]" not in output.out
    assert "missing/config.yaml: config file not found" in output.err
