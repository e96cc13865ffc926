"""Shared by the search benchmarks: the package's binaries, run as jobs pinned one per CPU, random
architectures near a latency target, the standalone training of an architecture with a fixed recipe,
and writing the report and reading its tables back.

Imported by the search benchmarks and `ranking_reports.py` (no flags here, so all of them can).
"""
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Job = Tuple[str, List[str]]   # (log path, command)


def binary(name: str) -> str:
    """A console script of this package, next to the running Python."""
    return os.path.join(os.path.dirname(sys.executable), name)


def run_pinned(jobs: Sequence[Job], parallel: int, then: Optional[Callable[[Job], List[Job]]] = None,
               poll_seconds: float = 5.0) -> None:
    """Runs (log path, command) jobs `parallel` at a time, each on its own CPU (`taskset`); stops on a failure.
    then(job): the jobs that wait for `job`, queued once it has succeeded (a search's trainings of what it found)."""
    pending, running = list(jobs), []
    cpus = sorted(os.sched_getaffinity(0))[:parallel]
    while pending or running:
        free = [c for c in cpus if c not in {cpu for cpu, _, _ in running}]
        while pending and free:
            log_path, command = pending.pop(0)
            cpu = free.pop(0)
            print(f"[cpu {cpu}] {' '.join(command)}", flush=True)
            with open(log_path, "w") as log:
                process = subprocess.Popen(["taskset", "-c", str(cpu)] + command, stdout=log,
                                           stderr=subprocess.STDOUT)
            running.append((cpu, process, (log_path, command)))
        time.sleep(poll_seconds)
        for entry in list(running):
            cpu, process, job = entry
            if process.poll() is not None:
                running.remove(entry)
                if process.returncode:
                    for _, other, _ in running:
                        other.kill()
                    sys.exit(f"failed (exit {process.returncode}); see {job[0]}")
                if then:
                    pending.extend(then(job))


RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART_SEARCH = os.path.join(REPO_ROOT, "configs", "experiments", "search_quickstart.yaml")   # the default search config
# The standalone recipe both search benchmarks train architectures with (overrides of the search
# config): on the built-in data at 160x160, two seeds rank 10 architectures at one latency alike at
# Kendall tau 0.42-0.47 on one set (results/supernet_ranking.md) and 0.07-0.60 on another
# (results/supernet_ranking_confirmation.md), one architecture's AP50 moving by up to 0.18 with the
# seed (0.046 root mean square, against 0.063 between the architectures' means): a noisy ground
# truth for 10 architectures, hence several seeds. Twice the steps lifts AP50 from 0.57 to 0.83 but the
# architectures' spread shrinks with the noise, leaving the ceiling as it is (results/standalone_recipe_4000.md).
# The peak learning rate stays the search config's 0.008: at the quickstart's 0.016 some seeds of the
# MobileDet-CPU skeleton sit on a plateau.
STANDALONE_RECIPE = ["train.steps=2000", "model.match_threshold=0.4", "train.warmup_steps=200"]


def repository_path(path: str) -> str:
    """`path` as given when it exists (or is absolute), else relative to the repository's root (how
    configs name the shipped cost models)."""
    return path if os.path.isabs(path) or os.path.exists(path) else os.path.join(REPO_ROOT, path)


def architectures_near_target(path: str, config, target_ms: float, count: int, band: float, seed: int,
                               prefix: str) -> List[Dict]:
    """[{name, indices, predicted_ms, arch}] of `count` distinct random architectures of the search
    space of `config`, each predicted by its cost model within +-`band` of `target_ms`
    (`random_search.sample_near_target`), named `{prefix}{number:02d}` and saved as ArchSpecs beside
    `path` (in archs/); read back from `path` when it exists."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from mobiledets_tf.search.cost_model import CostModel
    from mobiledets_tf.search.random_search import sample_near_target
    from mobiledets_tf.search.search_task import search_space_of
    space = search_space_of(config)
    cost_model = CostModel.load(repository_path(config.search.cost_model))
    arch_dir = os.path.join(os.path.dirname(path), "archs")
    os.makedirs(arch_dir, exist_ok=True)
    rows = []
    for number, (indices, predicted) in enumerate(sample_near_target(space, cost_model, target_ms, count, band,
                                                                     seed=seed)):
        name = f"{prefix}{number:02d}"
        arch_path = os.path.join(arch_dir, f"{name}.yaml")
        space.to_arch_spec(indices, name=name, description=f"random, predicted {predicted:.2f} ms").save(arch_path)
        rows.append({"name": name, "indices": list(map(int, indices)), "predicted_ms": float(predicted),
                     "arch": arch_path})
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
    return rows


NOTES_HEADING = "## Notes"   # where the measured part of a report ends and what was written about it begins


def write_results(name: str, text: str) -> None:
    """Writes a benchmark's Markdown report to benchmarks/results/{name}.md and prints it. The notes of
    the report it replaces (from its first `## Notes` heading to its end) are kept below the new text."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.md")
    notes = ""
    if os.path.exists(path):
        with open(path) as f:
            earlier = f.read()
        start = earlier.find(f"\n{NOTES_HEADING}")
        if start >= 0:
            notes = "\n" + earlier[start + 1:]
            print(f"{path}: kept the earlier report's notes (check they still hold)", file=sys.stderr)
    with open(path, "w") as f:
        f.write(text + notes)
    print(text)


def markdown_table(lines: Sequence[str], header_start: str) -> Tuple[int, List[str], List[List[str]]]:
    """(line number of the header, header cells, rows of cells) of the first Markdown table of a report
    whose header line starts with `header_start`; (-1, [], []) when there is none."""
    def cells(line: str) -> List[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    header = next((k for k, line in enumerate(lines) if line.startswith(header_start)), -1)
    if header < 0:
        return -1, [], []
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return header, cells(lines[header]), rows


RECIPE = re.compile(r"standalone overrides `([^`]*)`")   # how the reports name the standalone recipe


def standalone_metrics(model_dir: str) -> str:
    return os.path.join(model_dir, "eval", "metrics.json")


def standalone_job(config: str, arch: str, model_dir: str, overrides: Sequence[str]) -> Optional[Job]:
    """Training `arch` with the recipe `config` (+ `overrides`) into `model_dir`, then evaluating it,
    as one job; None when its evaluation already exists."""
    if os.path.exists(standalone_metrics(model_dir)):
        return None
    os.makedirs(model_dir, exist_ok=True)
    train = [binary("mobiledets-train"), f"--config={config}", f"--arch={arch}", f"--model_dir={model_dir}"]
    if overrides:
        train.append(f"--override={','.join(overrides)}")
    script = " && ".join(" ".join(part) for part in (train, [binary("mobiledets-eval"), f"--model_dir={model_dir}"]))
    return os.path.join(model_dir, "standalone.log"), ["bash", "-c", script]


def standalone_ap50(model_dir: str) -> float:
    with open(standalone_metrics(model_dir)) as f:
        return float(json.load(f)["AP50"])
