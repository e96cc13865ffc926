"""mobiledets-latency-data: real exports of sampled architectures measured by the local backend,
resuming after a kill (including a line cut short), settings checks and error messages."""
import json
import os

import pytest

from conftest import run_binary
from mobiledets_tf.benchmark.harness import BenchmarkOptions
from mobiledets_tf.benchmark.local import vector_extensions
from mobiledets_tf.search import latency_data
from mobiledets_tf.search.latency_data import (CollectionSettings, LatencyDataError, collect, read_dataset,
                                               sample_row)

SMALL = dict(space="ibn_fused_tucker", platform="edgetpu", input_size=64, num_classes=3,
             depth_multiplier=0.5, warmup_runs=1, num_runs=3, rounds=1)


def test_collects_resumes_and_keeps_one_row_per_architecture(tmp_path, monkeypatch):
    settings = CollectionSettings(**SMALL)
    output = str(tmp_path / "latency.jsonl")
    first = collect(settings, 2, output, chunk_size=2, log=lambda _: None)
    assert (first.num_rows, first.num_new, first.num_errors) == (2, 2, 0)

    header, rows = read_dataset(output)
    space = settings.load_space()
    assert header["space"] == "ibn_fused_tucker" and header["skeleton"] == "mobiledet_edgetpu"
    assert header["num_decisions"] == len(space.decisions) and header["context"]["host"]
    assert header["context"]["vector extensions"] == vector_extensions()   # the CPU the rows were timed on
    for row in rows:
        assert row["indices"] == sample_row(space, 0, row["row"])
        assert row["arch"] == space.to_arch_spec(row["indices"]).to_dict()
        assert row["latency_ms"] > 0 and row["stats"]["count"] == 3
        assert row["stats"]["min_ms"] <= row["latency_ms"] <= row["stats"]["p90_ms"] + 1e-9
        assert row["choices"] == {d.tag: d.choices[i].label for d, i in zip(space.decisions, row["indices"])}

    # A kill in the middle of writing leaves a line cut short: it is dropped and measured again.
    with open(output, "a") as f:
        f.write('{"row": 2, "indices": [0, 1')
    resumed = collect(settings, 3, output, chunk_size=2, log=lambda _: None)
    assert (resumed.num_rows, resumed.num_new) == (3, 1)
    _, rows = read_dataset(output)
    assert [r["row"] for r in rows] == [0, 1, 2]
    with open(output) as f:
        assert all(json.loads(line) for line in f)   # every line is whole JSON again

    again = collect(settings, 3, output, log=lambda _: None)
    assert again.num_new == 0

    # Export first (any time), measure later (on a quiet machine): the exported model is used, then removed.
    work_dir = tmp_path / "models"
    collect(settings, 4, output, work_dir=str(work_dir), export_only=True, log=lambda _: None)
    assert sorted(os.listdir(work_dir)) == ["row00003.tflite"] and len(read_dataset(output)[1]) == 3
    def no_export(*args):
        raise AssertionError("the exported model should have been measured as it is")
    monkeypatch.setattr(latency_data, "export_architecture", no_export)
    measured = collect(settings, 4, output, work_dir=str(work_dir), log=lambda _: None)
    assert measured.num_new == 1 and not work_dir.exists()
    assert read_dataset(output)[1][-1]["row"] == 3


def test_other_settings_do_not_resume_a_file(tmp_path):
    output = str(tmp_path / "latency.jsonl")
    collect(CollectionSettings(**SMALL), 1, output, log=lambda _: None)
    with pytest.raises(LatencyDataError, match=r"other settings \(input_size: file 64, requested 128\)"):
        collect(CollectionSettings(**{**SMALL, "input_size": 128}), 2, output, log=lambda _: None)


@pytest.mark.parametrize("change, message", [
    (dict(precision="int4"), "precision must be one of float32, float16, int8"),
    (dict(num_runs=0), "num_runs must be at least 1"),
    (dict(depth_multiplier=0.0), "depth_multiplier must be positive"),
    (dict(target="gpu"), "target 'gpu'"),
    (dict(backend="edgetpu", target="edgetpu"), "the Edge TPU runs int8 models only"),
])
def test_bad_settings_are_named(change, message, tmp_path):
    with pytest.raises(LatencyDataError, match=message):
        collect(CollectionSettings(**{**SMALL, **change}), 1, str(tmp_path / "x.jsonl"))
    assert not (tmp_path / "x.jsonl").exists()


def test_adb_needs_one_device_and_edgetpu_needs_the_compiler(tmp_path):
    with pytest.raises(LatencyDataError, match="exactly one --serials"):
        collect(CollectionSettings(**{**SMALL, "backend": "adb"}), 1, str(tmp_path / "x.jsonl"),
                options=BenchmarkOptions(benchmark_binary="benchmark_model"))
    with pytest.raises(FileNotFoundError, match="not an executable"):
        collect(CollectionSettings(**{**SMALL, "backend": "edgetpu", "target": "edgetpu", "precision": "int8"}),
                1, str(tmp_path / "x.jsonl"), edgetpu_compiler=str(tmp_path / "no_compiler"))


def test_not_a_dataset_is_named(tmp_path):
    path = tmp_path / "other.jsonl"
    path.write_text('{"row": 0, "indices": []}\n')
    with pytest.raises(LatencyDataError, match="not a latency dataset"):
        read_dataset(str(path))


def test_binary_collects_and_reports(tmp_path):
    output = tmp_path / "cpu.jsonl"
    run = run_binary("latency_data", "--space=ibn", "--platform=cpu", "--num=1", "--input_size=64",
                     "--num_classes=3", "--depth_multiplier=0.5", "--num_runs=2", "--warmup_runs=1",
                     "--rounds=1", f"--output={output}")
    assert f"{output}: 1 architectures (1 measured now" in run.stdout
    header, rows = read_dataset(str(output))
    assert header["space"] == "ibn" and header["platform"] == "cpu" and rows[0]["latency_ms"] > 0
    missing = run_binary("latency_data", "--num=1", check=False)
    assert missing.returncode != 0 and "give --output=FILE.jsonl" in missing.stderr
    bad = run_binary("latency_data", "--num=1", "--space=nope", f"--output={tmp_path / 'y.jsonl'}", check=False)
    assert bad.returncode != 0 and "unknown search space 'nope'" in bad.stderr
