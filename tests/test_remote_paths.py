"""Every path on a remote filesystem: TensorFlow's in-memory `ram://` stands in for a `gs://` bucket.

The whole chain runs in one process through the Python API (the `ram://` filesystem lives only
inside one process): COCO-format data converted to TFRecords and a label map on `ram://`, training
with model_dir on `ram://` and evaluation inside the run, a second training call that resumes,
evaluation, export, a search and a latency dataset. Each binary then runs once in a subprocess
(`ram_binary.py`) with its paths on `ram://`, and reports the files it wrote there. Nothing may
appear on local disk under a `ram:` folder.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_BUILTIN, tiny_config_yaml

pytestmark = pytest.mark.slow
RAM_BINARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ram_binary.py")


def _raw_dataset(tiny_data_dir):
    """The tiny built-in dataset's COCO-format source files (JSON + image folders)."""
    from mobiledets_tf.data.builtin import builtin_dataset
    root = os.path.dirname(os.path.dirname(builtin_dataset(**TINY_BUILTIN).label_map_path))
    return os.path.join(root, "raw")


def _no_local_url_folders(*folders):
    for folder in folders:
        for _, dirs, _ in os.walk(folder):
            assert not [d for d in dirs if d in ("ram:", "gs:")], folder
    assert not os.path.exists("ram:") and not os.path.exists("gs:")


def _ram_config(data_root: str, steps: int, **train) -> str:
    text = tiny_config_yaml(steps=steps, checkpoint_every=3, log_every=3, image_summary_every=1000, **train)
    data = ("data: {dataset: tfrecord, max_boxes: 8, shuffle_buffer: 16, "
            f"train_pattern: '{data_root}/train-*.tfrecord', val_pattern: '{data_root}/val-*.tfrecord', "
            f"val_annotations: '{data_root}/raw/val.json', label_map: '{data_root}/train.label_map.pbtxt'}}\n")
    return "\n".join(data if line.startswith("data:") else line for line in text.splitlines()) + "\n"


def test_the_whole_chain_with_every_path_on_ram(tiny_data_dir, tmp_path, monkeypatch):
    import tensorflow as tf
    from mobiledets_tf import fileio
    from mobiledets_tf.config import load_config, save_config
    from mobiledets_tf.data.coco_to_tfrecords import convert_coco_to_tfrecords
    from mobiledets_tf.evaluation.continuous import CheckpointEvaluator
    from mobiledets_tf.evaluation.keras_eval import evaluate_predict_fn, keras_predict_fn, restore_detector
    from mobiledets_tf.evaluation.tflite_eval import tflite_predict_fn
    from mobiledets_tf.export.exporter import export_detector
    from mobiledets_tf.search.latency_data import CollectionSettings, collect, read_dataset
    from mobiledets_tf.training.loop import TrainingLoop
    from mobiledets_tf.data.sources import resolve_data
    from mobiledets_tf.training.task import DetectionTask

    monkeypatch.chdir(tmp_path)   # a `ram:` folder made by mistake would land here
    root = "ram://bucket"
    fileio.copy_tree(_raw_dataset(tiny_data_dir), f"{root}/data/raw")
    for split, shards in (("train", 2), ("val", 1)):
        report = convert_coco_to_tfrecords(f"{root}/data/raw/{split}.json", f"{root}/data/raw/{split}",
                                           f"{root}/data/{split}", num_shards=shards)
        assert report.num_images_written == {"train": 24, "val": 8}[split]
    assert fileio.exists(f"{root}/data/train-00001-of-00002.tfrecord")
    assert fileio.exists(f"{root}/data/train.label_map.pbtxt") and fileio.exists(f"{root}/data/train.report.json")

    # Training, evaluated in the run every 3 steps; then a second call that resumes to step 6.
    model_dir = f"{root}/runs/tiny"
    fileio.write_text_atomically(f"{root}/configs/tiny3.yaml", _ram_config(f"{root}/data", 3, eval_every=3))
    fileio.write_text_atomically(f"{root}/configs/tiny6.yaml", _ram_config(f"{root}/data", 6, eval_every=3))
    for steps in (3, 6):
        config = load_config(f"{root}/configs/tiny{steps}.yaml")
        task = DetectionTask(config, tf.distribute.get_strategy())
        save_config(config, f"{model_dir}/config.yaml")
        task.detector.arch.save(f"{model_dir}/arch.json")
        loop = TrainingLoop(task, model_dir, evaluator=CheckpointEvaluator(config, model_dir, task.data))
        assert (loop.restore() is None) == (steps == 3)
        loop.run()
        assert loop.manager.latest_checkpoint == f"{model_dir}/ckpt-{steps}"
    history = json.loads(fileio.read_text(f"{model_dir}/eval_history.json"))["entries"]
    assert [(e["step"], e["status"]) for e in history] == [(3, "evaluated"), (6, "evaluated")]
    assert tf.train.latest_checkpoint(f"{model_dir}/best") in (f"{model_dir}/best/ckpt-3", f"{model_dir}/best/ckpt-6")
    assert fileio.listdir(f"{model_dir}/train") and fileio.listdir(f"{model_dir}/eval")

    # Evaluation of the best checkpoint, export, and the exported model scored from ram://.
    data = resolve_data(config)
    detector = restore_detector(config, f"{model_dir}/best")
    metrics = evaluate_predict_fn(keras_predict_fn(detector, config.eval), config, data, f"{model_dir}/eval_best",
                                  progress=False)
    assert json.loads(fileio.read_text(f"{model_dir}/eval_best/metrics.json"))["AP"] == pytest.approx(metrics["AP"])
    assert fileio.getsize(f"{model_dir}/eval_best/detections.png") > 0
    exported = export_detector(config, f"{model_dir}/best", data, f"{model_dir}/export", ["float32", "int8"],
                               num_calibration_images=4)
    names = set(fileio.listdir(f"{model_dir}/export"))
    for precision in ("float32", "int8"):
        stem = f"mobiledet_edgetpu_64_{precision}"
        assert exported[precision].tflite_path == f"{model_dir}/export/{stem}.tflite"
        assert {f"{stem}.tflite", f"{stem}.report.txt", f"{stem}.report.json"} <= names, names
    assert any(n.endswith(".txt") and "labels" in n for n in names), names
    assert fileio.exists(f"{model_dir}/export/saved_model/saved_model.pb")
    tflite_metrics = evaluate_predict_fn(tflite_predict_fn(exported["float32"].tflite_path), config, data,
                                         progress=False)
    assert tflite_metrics["AP"] == pytest.approx(metrics["AP"], abs=0.02)

    # A latency dataset (each .tflite staged locally for the interpreter) and a search.
    settings = CollectionSettings(space="ibn_fused_tucker", platform="edgetpu", input_size=64, num_classes=3,
                                  depth_multiplier=0.5, warmup_runs=1, num_runs=2, rounds=1)
    collected = collect(settings, 2, f"{root}/latency/edgetpu.jsonl", chunk_size=2, log=lambda _: None)
    assert collected.num_new == 2
    header, rows = read_dataset(f"{root}/latency/edgetpu.jsonl")
    assert len(rows) == 2 and all(r["latency_ms"] > 0 for r in rows)
    _search_on_ram(root, tiny_data_dir)
    _no_local_url_folders(str(tmp_path), tiny_data_dir)


def _write_search_inputs(folder: str, steps: int) -> None:
    """The small search space of test_search.py, a cost model fitted on synthetic latencies and a
    search config, written under `folder` (local or ram://)."""
    from mobiledets_tf import fileio
    from mobiledets_tf.search.cost_model import fit
    from mobiledets_tf.search.space import load_space
    from test_search import SMALL_SPACE

    fileio.write_text_atomically(f"{folder}/small_space.yaml", SMALL_SPACE)
    space = load_space(f"{folder}/small_space.yaml", "edgetpu")
    rng = np.random.default_rng(0)
    rows = [{"row": r, "indices": space.sample(rng), "latency_ms": 10.0 + r % 7} for r in range(60)]
    fit(space, rows, {"space": "small", "platform": "edgetpu", "skeleton": space.skeleton,
                      "space_source": f"{folder}/small_space.yaml", "precision": "float32",
                      "input_size": 320}).save(f"{folder}/cost.json")
    text = tiny_config_yaml(steps=steps, checkpoint_every=2, log_every=2, batch_size=4)
    text += (f"search: {{space: '{folder}/small_space.yaml', platform: edgetpu, validation_batch_multiple: 2, "
             f"cost_model: '{folder}/cost.json', target_ms: 13}}\n")
    fileio.write_text_atomically(f"{folder}/search.yaml", text)


def _search_on_ram(root, tiny_data_dir):
    import tensorflow as tf
    from mobiledets_tf import fileio
    from mobiledets_tf.arch import load_arch
    from mobiledets_tf.config import load_config
    from mobiledets_tf.search.cost_model import CostModel
    from mobiledets_tf.search.search_task import SearchTask
    from mobiledets_tf.search.space import load_space
    from mobiledets_tf.search.tunas import SearchLoop

    _write_search_inputs(f"{root}/search", steps=4)
    config = load_config(f"{root}/search/search.yaml")
    space = load_space(config.search.space, "edgetpu")
    result = SearchLoop(SearchTask(config, tf.distribute.get_strategy()), CostModel.load(config.search.cost_model),
                        f"{root}/search/run").run()
    assert result.arch_path == f"{root}/search/run/searched_arch.yaml"
    assert space.indices_of(load_arch(result.arch_path)) == json.loads(fileio.read_text(result.json_path))["indices"]
    assert tf.train.latest_checkpoint(f"{root}/search/run") == f"{root}/search/run/ckpt-4"


# Each binary once, in its own process --------------------------------------------------------------
def _ram_binary(cwd, *args):
    run = subprocess.run([sys.executable, RAM_BINARY, *map(str, args)], capture_output=True, text=True,
                         timeout=900, cwd=cwd)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RAM_FILES: ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    files = dict(json.loads(lines[-1][len("RAM_FILES: "):]))
    _no_local_url_folders(str(cwd))
    return run, files


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir, tmp_path_factory):
    """A local tiny run (2 steps), staged onto ram:// by the tests that need one."""
    from conftest import run_binary
    work = tmp_path_factory.mktemp("trained")
    (work / "tiny.yaml").write_text(tiny_config_yaml(steps=2, checkpoint_every=2, image_summary_every=1000))
    run_binary("train", f"--config={work / 'tiny.yaml'}", f"--model_dir={work / 'run'}")
    return work


def test_make_tfrecords_writes_to_ram(tiny_data_dir, tmp_path):
    raw = _raw_dataset(tiny_data_dir)
    run, files = _ram_binary(tmp_path, f"--stage={raw}=ram://in", "--list=ram://out", "make_tfrecords",
                             "--annotations=ram://in/val.json", "--images=ram://in/val", "--output=ram://out/val",
                             "--num_shards=2")
    assert {"ram://out/val-00000-of-00002.tfrecord", "ram://out/val-00001-of-00002.tfrecord",
            "ram://out/val.label_map.json", "ram://out/val.label_map.pbtxt", "ram://out/val.report.json"} <= set(files)


def test_train_with_eval_every_writes_its_model_dir_on_ram(tiny_data_dir, tmp_path):
    (tmp_path / "tiny.yaml").write_text(tiny_config_yaml(steps=2, checkpoint_every=2, image_summary_every=1000))
    run, files = _ram_binary(tmp_path, f"--stage={tmp_path / 'tiny.yaml'}=ram://cfg/tiny.yaml", "--list=ram://run",
                             "train", "--config=ram://cfg/tiny.yaml", "--model_dir=ram://run", "--eval_every=2")
    assert {"ram://run/config.yaml", "ram://run/arch.json", "ram://run/checkpoint", "ram://run/ckpt-2.index",
            "ram://run/eval_history.json", "ram://run/best/ckpt-2.index", "ram://run/best/checkpoint"} <= set(files)
    assert any(p.startswith("ram://run/train/events.out.tfevents") for p in files)
    assert any(p.startswith("ram://run/eval/events.out.tfevents") for p in files)


def test_continuous_eval_follows_a_run_on_ram(trained_run, tmp_path):
    run, files = _ram_binary(tmp_path, f"--stage={trained_run / 'run'}=ram://run", "--list=ram://run", "eval",
                             "--model_dir=ram://run", "--continuous", "--timeout=0", "--poll_seconds=0")
    assert "step 2: AP" in run.stdout
    assert {"ram://run/eval_history.json", "ram://run/best/ckpt-2.index",
            "ram://run/best/ckpt-2.metrics.json"} <= set(files)


def test_eval_and_export_of_a_run_on_ram(trained_run, tmp_path):
    run, files = _ram_binary(tmp_path, f"--stage={trained_run / 'run'}=ram://run", "--list=ram://run", "eval",
                             "--model_dir=ram://run")
    assert {"ram://run/eval/metrics.json", "ram://run/eval/detections.png"} <= set(files)
    run, files = _ram_binary(tmp_path, f"--stage={trained_run / 'run'}=ram://run", "--list=ram://run", "export",
                             "--model_dir=ram://run", "--precision=float32", "--nosaved_model")
    assert {"ram://run/export/mobiledet_edgetpu_64_float32.tflite",
            "ram://run/export/mobiledet_edgetpu_64_float32.report.json"} <= set(files)


def test_benchmark_latency_data_and_cost_model_on_ram(trained_run, tmp_path):
    from conftest import run_binary
    run_binary("export", f"--model_dir={trained_run / 'run'}", "--precision=float32", "--nosaved_model",
               f"--output_dir={tmp_path / 'export'}")
    run, files = _ram_binary(tmp_path, f"--stage={tmp_path / 'export'}=ram://models", "--list=ram://tables",
                             "benchmark", "--models=ram://models/*.tflite", "--num_runs=2", "--warmup_runs=1",
                             "--output_dir=ram://tables", "--name=tiny")
    assert {"ram://tables/tiny.md", "ram://tables/tiny.json"} <= set(files)
    run, files = _ram_binary(tmp_path, "--list=ram://latency", "latency_data", "--space=ibn_fused_tucker",
                             "--platform=edgetpu", "--num=2", "--input_size=64", "--num_classes=3",
                             "--depth_multiplier=0.5", "--rounds=1", "--output=ram://latency/edgetpu.jsonl",
                             "--keep_models")
    assert "ram://latency/edgetpu.jsonl" in files
    assert len([p for p in files if p.endswith(".tflite")]) == 2


def test_search_and_stats_with_their_files_on_ram(tiny_data_dir, tmp_path):
    from mobiledets_tf.arch import load_arch
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _write_search_inputs(str(inputs), steps=2)
    text = (inputs / "search.yaml").read_text().replace(str(inputs), "ram://in")
    (inputs / "search.yaml").write_text(text)
    run, files = _ram_binary(tmp_path, f"--stage={inputs}=ram://in", "--list=ram://search", "search",
                             "--config=ram://in/search.yaml", "--model_dir=ram://search")
    assert {"ram://search/searched_arch.yaml", "ram://search/searched_arch.json", "ram://search/config.yaml",
            "ram://search/ckpt-2.index"} <= set(files)
    load_arch("mobiledet_cpu").save(str(tmp_path / "arch.yaml"))
    run, files = _ram_binary(tmp_path, f"--stage={tmp_path / 'arch.yaml'}=ram://in/arch.yaml", "stats",
                             "--arch=ram://in/arch.yaml", "--input_size=64")
    assert "mobiledet_cpu" in run.stdout


def test_cost_model_fit_reads_and_writes_ram(tmp_path):
    from conftest import REPO_ROOT
    data = os.path.join(REPO_ROOT, "configs", "cost_models", "ibn_fused_tucker_cpu.latency.jsonl")
    run, files = _ram_binary(tmp_path, f"--stage={data}=ram://latency/cpu.jsonl", "--list=ram://models",
                             "cost_model", "fit", "--data=ram://latency/cpu.jsonl", "--holdout=50",
                             "--output=ram://models/cpu_cost.json")
    assert {"ram://models/cpu_cost.json"} <= set(files) and any(p.endswith(".png") for p in files), files


def test_import_reads_a_tf1_checkpoint_from_ram_and_writes_a_model_dir_there(tmp_path):
    """The checkpoint carries the TF1 names of MobileDet-GPU's weights (from the name table)."""
    import tensorflow as tf
    from mobiledets_tf.models.detector import SSDLiteDetector
    from mobiledets_tf.tf1_zoo.variable_names import weight_names
    from test_tf1_parity import write_tf1_checkpoint
    detector = SSDLiteDetector("mobiledet_gpu", num_classes=90, input_size=320)
    tensors = {w.tf1: w.variable.numpy() for w in weight_names(detector.model, detector.arch)}
    tensors["global_step"] = np.int64(400000)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    write_tf1_checkpoint(str(zoo / "model.ckpt-400000"), tensors)
    tf.compat.v1.train.update_checkpoint_state(str(zoo), "model.ckpt-400000")   # relative: found on ram:// too
    run, files = _ram_binary(tmp_path, f"--stage={zoo}=ram://zoo", "--list=ram://imported", "import_tf1",
                             "--tf1_checkpoint=ram://zoo", "--output=ram://imported", "--input_size=320")
    assert {"ram://imported/ckpt-0.index", "ram://imported/config.yaml", "ram://imported/arch.json",
            "ram://imported/label_map.pbtxt", "ram://imported/import_report.json"} <= set(files), files
    assert f"{len(tensors) - 1} variables imported, 1 ignored" in run.stdout


def test_quickstart_refuses_ram_paths_its_stage_processes_could_not_see(tmp_path):
    from conftest import run_binary
    run = run_binary("quickstart", "--output_dir=ram://quickstart", check=False)
    assert run.returncode != 0 and "lives inside one process" in run.stderr
