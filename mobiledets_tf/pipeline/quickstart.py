"""The quickstart pipeline: every step from a config to a timed int8 model, each one a run of the
package's own binary, then a summary of the results.

Stages, all under one output folder OUT:
  1. `mobiledets-train` the float model into OUT/float;
  2. `mobiledets-eval` it (OUT/float/eval/metrics.json, detections.png);
  3. `mobiledets-train --quantization=qat` from it into OUT/qat (a short fine-tuning);
  4. `mobiledets-export` the QAT checkpoint to int8 (OUT/qat/export/NAME_int8_qat.tflite), and the float
     checkpoint to float32 for comparison;
  5. `mobiledets-eval --tflite=...` each .tflite (eval_NAME_PRECISION/ next to it);
  6. `mobiledets-benchmark` them on the local CPU (OUT/benchmark/latency.{md,csv,json,png}).

Each binary runs as a child process whose output goes straight to the console, so its progress
shows as it does when run alone. A stage whose outputs are already there is skipped (training is
done when its final checkpoint exists), and every stage after one that ran runs again, since its
inputs changed (a training that already reached its final step stays as it is: delete its folder to
redo it). `collect_summary` reads the numbers back from the JSON files the binaries wrote.
"""
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, TextIO

import tensorflow as tf

from mobiledets_tf import fileio
from mobiledets_tf.arch import ArchSpecError, load_arch
from mobiledets_tf.benchmark.results import BenchmarkRow, read_ap, read_rows
from mobiledets_tf.config import ConfigError, ExperimentConfig, load_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join("configs", "experiments", "quickstart.yaml")
BENCHMARK_NAME = "latency"
MODEL_LABELS = {"float": "float (Keras checkpoint)", "float32": "float32 .tflite", "int8": "int8 .tflite (QAT)"}


class PipelineError(RuntimeError):
    """Bad input found before any stage ran, or a stage that failed; the message says which."""


# Options and where things go ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class QuickstartOptions:
    output_dir: str
    config: str = DEFAULT_CONFIG
    overrides: Sequence[str] = ()        # applied to the float and the QAT training alike
    qat_steps: int = 300
    qat_learning_rate: float = 0.0005
    nms: str = "regular"                 # per-class NMS, as the Keras evaluation does
    float32: bool = True                 # also export, evaluate and time a float32 .tflite
    saved_model: bool = False            # also export TensorFlow SavedModels (doubles the export time)
    benchmark_runs: int = 50
    benchmark_warmup_runs: int = 10


@dataclasses.dataclass(frozen=True)
class Layout:
    """The files of one quickstart run under `root`; `name` is the exported models' stem."""
    root: str
    name: str

    @property
    def float_dir(self) -> str:
        return os.path.join(self.root, "float")

    @property
    def qat_dir(self) -> str:
        return os.path.join(self.root, "qat")

    @property
    def float_eval_dir(self) -> str:
        return os.path.join(self.float_dir, "eval")

    @property
    def int8_tflite(self) -> str:
        return os.path.join(self.qat_dir, "export", f"{self.name}_int8_qat.tflite")

    @property
    def float32_tflite(self) -> str:
        return os.path.join(self.float_dir, "export", f"{self.name}_float32.tflite")

    @property
    def benchmark_dir(self) -> str:
        return os.path.join(self.root, "benchmark")

    @property
    def benchmark_json(self) -> str:
        return os.path.join(self.benchmark_dir, f"{BENCHMARK_NAME}.json")

    @property
    def pareto_png(self) -> str:
        return os.path.join(self.benchmark_dir, f"{BENCHMARK_NAME}.png")

    @property
    def summary_md(self) -> str:
        return os.path.join(self.root, "summary.md")

    @property
    def summary_json(self) -> str:
        return os.path.join(self.root, "summary.json")

    def model_dir(self, key: str) -> str:
        """The training folder of a model key: the QAT run for int8, the float run otherwise."""
        return self.qat_dir if key == "int8" else self.float_dir

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    @staticmethod
    def tflite_eval_dir(tflite_path: str) -> str:
        """eval_STEM next to the model: where the benchmark also looks for a model's AP."""
        stem = os.path.splitext(os.path.basename(tflite_path))[0]
        return os.path.join(os.path.dirname(tflite_path), f"eval_{stem}")


def resolve_config_path(path: str) -> str:
    """`path` as given, else relative to the repository (so the default works from any folder)."""
    is_absolute = os.path.isabs(path) or fileio.is_remote(path)
    candidates = [path] if is_absolute else [path, os.path.join(REPO_ROOT, path)]
    for candidate in candidates:
        if fileio.isfile(candidate):
            return fileio.absolute(candidate)
    where = "" if is_absolute else f" in {os.getcwd()} or {REPO_ROOT}"
    raise PipelineError(f"{path}: config file not found{where}")


def qat_overrides(options: QuickstartOptions) -> List[str]:
    """The float run's overrides, then the fine-tuning's own steps and learning rate (no warmup)."""
    return [*options.overrides, f"train.steps={options.qat_steps},train.base_learning_rate={options.qat_learning_rate!r},"
                                "train.warmup_steps=0"]


def check_options(options: QuickstartOptions) -> ExperimentConfig:
    """The float config, loaded and validated (and the QAT one too) before anything runs."""
    for name in ("qat_steps", "benchmark_runs"):
        if getattr(options, name) < 1:
            raise PipelineError(f"--{name} must be at least 1, got {getattr(options, name)}")
    if options.benchmark_warmup_runs < 0:
        raise PipelineError(f"--benchmark_warmup_runs must be 0 or more, got {options.benchmark_warmup_runs}")
    if options.qat_learning_rate <= 0:
        raise PipelineError(f"--qat_learning_rate must be positive, got {options.qat_learning_rate}")
    for name in ("output_dir", "config"):
        if str(getattr(options, name)).startswith("ram://"):
            raise PipelineError(f"--{name}={getattr(options, name)}: a ram:// filesystem lives inside one "
                                "process, and the quickstart runs each stage as its own process; use a "
                                "local folder or a bucket (gs://...)")
    try:
        config = load_config(options.config, options.overrides)
        load_config(options.config, [*qat_overrides(options), "model.quantization=qat"])
        load_arch(config.model.arch)
    except (ConfigError, ArchSpecError, OSError) as e:
        raise PipelineError(str(e)) from None
    return config


def layout_for(options: QuickstartOptions, config: ExperimentConfig) -> Layout:
    name = f"{load_arch(config.model.arch).name}_{config.model.input_size}"
    return Layout(fileio.absolute(options.output_dir), name)


# Stages -------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Command:
    """One run of `mobiledets-BINARY ARGS`; `done` tells whether its result is already there."""
    binary: str                          # module under mobiledets_tf.bin: train, eval, export, benchmark
    args: List[str]
    done: Callable[[], bool]
    result: str                          # what `done` checks, for the skip message

    def argv(self) -> List[str]:
        return [sys.executable, "-m", f"mobiledets_tf.bin.{self.binary}", *self.args]

    def display(self) -> str:
        return shlex.join([f"mobiledets-{self.binary}", *self.args])


@dataclasses.dataclass
class Stage:
    title: str
    commands: List[Command]

    def done(self) -> bool:
        return all(command.done() for command in self.commands)


@dataclasses.dataclass
class StageResult:
    title: str
    status: str                          # "ran" or "skipped"
    seconds: float


def latest_checkpoint_step(model_dir: str) -> Optional[int]:
    path = tf.train.latest_checkpoint(model_dir) if fileio.isdir(model_dir) else None
    return int(path.rsplit("-", 1)[1]) if path else None


def training_done(model_dir: str, steps: int) -> Callable[[], bool]:
    return lambda: (latest_checkpoint_step(model_dir) or 0) >= steps


def files_exist(*paths: str) -> Callable[[], bool]:
    return lambda: all(fileio.isfile(p) for p in paths)


def evaluation_files(eval_dir: str) -> List[str]:
    return [os.path.join(eval_dir, "metrics.json"), os.path.join(eval_dir, "detections.png")]


def tflite_models(layout: Layout, options: QuickstartOptions) -> Dict[str, str]:
    """The timed models by key: int8 (QAT) and, when asked for, float32."""
    return {"int8": layout.int8_tflite, **({"float32": layout.float32_tflite} if options.float32 else {})}


PRECISIONS = {"int8": "int8_qat", "float32": "float32"}


def float_training_stage(options: QuickstartOptions, config: ExperimentConfig, layout: Layout) -> Stage:
    return Stage("Training the float model", [Command(
        "train", [f"--config={options.config}", f"--model_dir={layout.float_dir}",
                  *[f"--override={o}" for o in options.overrides]],
        training_done(layout.float_dir, config.train.steps),
        f"{layout.relative(layout.float_dir)}/ has its final checkpoint, step {config.train.steps}")])


def float_evaluation_stage(layout: Layout) -> Stage:
    files = evaluation_files(layout.float_eval_dir)
    return Stage("Evaluating the float model", [Command(
        "eval", [f"--model_dir={layout.float_dir}", f"--output_dir={layout.float_eval_dir}"],
        files_exist(*files), layout.relative(files[0]))])


def qat_training_stage(options: QuickstartOptions, layout: Layout) -> Stage:
    return Stage(f"Fine-tuning with quantization-aware training ({options.qat_steps} steps)", [Command(
        "train", [f"--config={options.config}", f"--model_dir={layout.qat_dir}", "--quantization=qat",
                  f"--init_checkpoint={layout.float_dir}", *[f"--override={o}" for o in qat_overrides(options)]],
        training_done(layout.qat_dir, options.qat_steps),
        f"{layout.relative(layout.qat_dir)}/ has its final checkpoint, step {options.qat_steps}")])


def export_stage(options: QuickstartOptions, layout: Layout) -> Stage:
    models = tflite_models(layout, options)
    flags = [f"--name={layout.name}", f"--nms={options.nms}", f"--saved_model={str(options.saved_model).lower()}"]
    return Stage(f"Exporting {' and '.join(MODEL_LABELS[key] for key in models)}", [Command(
        "export", [f"--model_dir={layout.model_dir(key)}", f"--precision={PRECISIONS[key]}", *flags],
        files_exist(path), layout.relative(path)) for key, path in models.items()])


def tflite_evaluation_stage(options: QuickstartOptions, layout: Layout) -> Stage:
    models = tflite_models(layout, options)
    commands = []
    for key, path in models.items():
        eval_dir = layout.tflite_eval_dir(path)
        files = evaluation_files(eval_dir)
        commands.append(Command(
            "eval", [f"--model_dir={layout.model_dir(key)}", f"--tflite={path}", f"--output_dir={eval_dir}"],
            files_exist(*files), layout.relative(files[0])))
    return Stage("Evaluating the .tflite model" + ("s" if len(models) > 1 else ""), commands)


def benchmark_stage(options: QuickstartOptions, layout: Layout) -> Stage:
    models = tflite_models(layout, options)
    eval_json = [f"--eval_json={os.path.basename(path)}={evaluation_files(layout.tflite_eval_dir(path))[0]}"
                 for path in models.values()]
    return Stage("Timing the .tflite model" + ("s" if len(models) > 1 else "") + " on the local CPU", [Command(
        "benchmark", [f"--models={','.join(models.values())}", f"--output_dir={layout.benchmark_dir}",
                      f"--name={BENCHMARK_NAME}", f"--num_runs={options.benchmark_runs}",
                      f"--warmup_runs={options.benchmark_warmup_runs}", "--title=Quickstart models", *eval_json],
        files_exist(layout.benchmark_json, layout.pareto_png), layout.relative(layout.benchmark_json))])


def plan_stages(options: QuickstartOptions, config: ExperimentConfig, layout: Layout) -> List[Stage]:
    """The six stages of a quickstart run, as commands of the existing binaries."""
    return [float_training_stage(options, config, layout), float_evaluation_stage(layout),
            qat_training_stage(options, layout), export_stage(options, layout),
            tflite_evaluation_stage(options, layout), benchmark_stage(options, layout)]


# Running ------------------------------------------------------------------------------------------
def format_seconds(seconds: float) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def run_command(command: Command, where: str) -> None:
    """Runs the binary with this process's stdout and stderr; PipelineError if it fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    code = subprocess.call(command.argv())
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise PipelineError(f"{where} failed: mobiledets-{command.binary} {how} (its output is above)")


def run_stages(stages: Sequence[Stage], out: Optional[TextIO] = None) -> List[StageResult]:
    """Runs the stages in order, skipping those already done until one has to run."""
    results, start, rerun = [], time.monotonic(), False

    def say(message: str) -> None:
        print(message, file=out or sys.stdout, flush=True)

    for number, stage in enumerate(stages, 1):
        tag = f"[{number}/{len(stages)}]"
        if not rerun and stage.done():
            say(f"{tag} {stage.title}: skipped, already done ({'; '.join(c.result for c in stage.commands)})")
            results.append(StageResult(stage.title, "skipped", 0.0))
            continue
        say(f"\n{tag} {stage.title} ... (elapsed {format_seconds(time.monotonic() - start)})")
        stage_start = time.monotonic()
        for command in stage.commands:
            if not rerun and command.done():
                say(f"{tag} skipped, already done: {command.display()}")
                continue
            say(f"{tag} $ {command.display()}")
            run_command(command, f"stage {number}/{len(stages)} ({stage.title})")
        rerun = True
        seconds = time.monotonic() - stage_start
        say(f"{tag} {stage.title}: done in {format_seconds(seconds)}")
        results.append(StageResult(stage.title, "ran", seconds))
    return results


# Summary ------------------------------------------------------------------------------------------
def benchmark_row(rows: Sequence[BenchmarkRow], tflite_path: str, benchmark_json: str) -> BenchmarkRow:
    """The measured row of this model; PipelineError when it is missing or could not be measured."""
    for row in rows:
        if row.model == os.path.basename(tflite_path):
            if row.error or row.median_ms is None:
                raise PipelineError(f"{benchmark_json}: {row.model} was not measured: {row.error or 'no median'}")
            return row
    raise PipelineError(f"{benchmark_json}: no row of {os.path.basename(tflite_path)}")


def collect_summary(options: QuickstartOptions, layout: Layout, results: Sequence[StageResult],
                    total_seconds: float) -> Dict:
    """The run's numbers, read from the binaries' metrics.json and benchmark JSON files."""
    float_metrics = os.path.join(layout.float_eval_dir, "metrics.json")
    models = {"float": {**read_ap(float_metrics), "metrics": float_metrics,
                        "detections": os.path.join(layout.float_eval_dir, "detections.png")}}
    rows = read_rows(layout.benchmark_json)
    latency = {}
    for key, path in tflite_models(layout, options).items():
        eval_dir = layout.tflite_eval_dir(path)
        row = benchmark_row(rows, path, layout.benchmark_json)
        models[key] = {**read_ap(os.path.join(eval_dir, "metrics.json")), "latency_ms": row.median_ms,
                       "size_mb": fileio.getsize(path) / 1e6, "tflite": path,
                       "metrics": os.path.join(eval_dir, "metrics.json"),
                       "detections": os.path.join(eval_dir, "detections.png")}
        latency = {"backend": row.backend, "target": row.target, "device": row.device,
                   "threads": row.threads, "runs": row.runs}
    return {
        "output_dir": layout.root, "config": options.config, "overrides": list(options.overrides),
        "qat_steps": options.qat_steps, "nms": options.nms, "models": models,
        "latency": {**latency, "table": layout.benchmark_json},
        "pareto_plot": layout.pareto_png,
        "stages": [{"stage": i, **dataclasses.asdict(r)} for i, r in enumerate(results, 1)],
        "total_seconds": total_seconds,
    }


def _number(value: Optional[float], digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def format_summary(summary: Dict) -> str:
    """The summary as Markdown: accuracy, latency and size per model; time per stage; the pictures."""
    latency = summary["latency"]
    lines = ["## Quickstart summary", "",
             "| model | AP | AP50 | median latency (ms) | size (MB) |", "|---|---|---|---|---|"]
    for key in ("float", "float32", "int8"):
        if key in summary["models"]:
            m = summary["models"][key]
            lines.append(f"| {MODEL_LABELS[key]} | {_number(m['ap'], 3)} | {_number(m['ap50'], 3)} | "
                         f"{_number(m.get('latency_ms'), 2)} | {_number(m.get('size_mb'), 2)} |")
    lines += ["", f"Latency: median of {latency['runs']} runs, {latency['backend']} backend, target "
                  f"{latency['target']}, {latency['threads']} thread{'s' if latency['threads'] != 1 else ''}, "
                  f"on {latency['device']}. AP: validation split (.tflite files with {summary['nms']} NMS).", "",
              "| stage | | time |", "|---|---|---|"]
    for stage in summary["stages"]:
        time_text = format_seconds(stage["seconds"]) if stage["status"] == "ran" else ""
        lines.append(f"| {stage['stage']}. {stage['title']} | {stage['status']} | {time_text} |")
    lines += [f"| total | | {format_seconds(summary['total_seconds'])} |", ""]
    for key in ("float", "float32", "int8"):
        if key in summary["models"]:
            lines.append(f"- detections, {MODEL_LABELS[key]}: {summary['models'][key]['detections']}")
    lines += [f"- latency vs AP (Pareto plot): {summary['pareto_plot']}",
              f"- latency table: {summary['latency']['table']}"]
    return "\n".join(lines) + "\n"


def write_summary(summary: Dict, layout: Layout) -> str:
    text = format_summary(summary)
    fileio.write_text_atomically(layout.summary_md, text)
    fileio.write_text_atomically(layout.summary_json, json.dumps(summary, indent=2) + "\n")
    return text


def run_quickstart(options: QuickstartOptions, out: Optional[TextIO] = None) -> Dict:
    """Checks the options, runs (or skips) every stage, writes OUT/summary.{md,json}; returns the summary."""
    start = time.monotonic()
    options = dataclasses.replace(options, config=resolve_config_path(options.config))
    config = check_options(options)
    layout = layout_for(options, config)
    out = out or sys.stdout
    results = run_stages(plan_stages(options, config, layout), out)
    summary = collect_summary(options, layout, results, time.monotonic() - start)
    print("\n" + write_summary(summary, layout), file=out)
    print(f"summary: {layout.summary_md} {layout.summary_json}", file=out, flush=True)
    return summary
