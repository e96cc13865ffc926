"""Benchmark: the search rewards (absolute, mnas_soft, mnas_hard) at one latency target, against
random architectures near the same target.

    python benchmarks/reward_comparison.py --target_ms=25                        # hours on 2 CPUs
    python benchmarks/reward_comparison.py --target_ms=25 --rewards=absolute --name=searched_vs_random

Runs `mobiledets-search` once per reward and seed (search.seed and train.seed = the seed) with the
same config and budget, and draws --num_random random architectures predicted within
+-`--random_band` of the target by the search's cost model. It then measures every found and random
architecture as the cost model's data was measured (`mobiledets-cost-model measure`: exported at the
model's size and precision, fastest of the timed runs, with nothing else running), trains each
standalone with one fixed recipe once per --standalone_seeds (`mobiledets-train --config=...
--arch=ARCH.yaml`, then `mobiledets-eval`), and writes benchmarks/results/{name}.md: per reward, how
far each search landed from the target (measured and predicted) and the standalone AP50 of what it
found (the mean over the seeds), with mean and standard deviation over the architectures, beside the
random group's; a reward passes when its mean AP50 exceeds the random mean by more than one standard
deviation of the random group. Searches that end with a finalist stage (`search.finalists`) get a
second table: what each chose by which score, the range of its finalists' scores and, with several
trainings per finalist, how far their mean can rank the finalists (one training's noise against the
finalists' spread).

With --random_results=FILE the random group's AP50 per seed is read from an earlier report of this
benchmark (checked to hold the same architectures by name and predicted latency, the same recipe and
seeds) instead of training it again: 6 random architectures under three seeds are 18 trainings. Its
latency is measured here with the found architectures', so all measured latencies come from one machine.

Searches and trainings run --jobs at a time, each pinned to its own CPU (`taskset`), a search's
trainings queued as soon as it has ended; the latency measurement runs alone, after all of them.
Every stage writes its result into --work_dir and is skipped when that result exists, so an
interrupted run resumes where it stopped.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import yaml
from absl import app, flags

from mobiledets_tf.search.finalists import FINALISTS_JSON, MEASURE_LABELS
from mobiledets_tf.search.rewards import REWARDS
from pinned_jobs import (QUICKSTART_SEARCH, STANDALONE_RECIPE, Job, architectures_near_target, binary, repository_path,
                         run_pinned, standalone_ap50, standalone_job, write_results)
from ranking_reports import RANDOM, read_results_table
from seed_statistics import ground_truth_ceiling, seed_noise

WORK_DIR = flags.DEFINE_string("work_dir", "runs/reward_comparison", "Where searches, models and measurements go.")
CONFIG = flags.DEFINE_string("config", QUICKSTART_SEARCH, "Search config (also the standalone recipe's base).")
TARGET_MS = flags.DEFINE_float("target_ms", 25.0, "Latency target of every search (cost-model milliseconds).")
REWARD_LIST = flags.DEFINE_list("rewards", list(REWARDS), "Rewards to compare.")
SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Search seeds (search.seed and train.seed).")
SEARCH_OVERRIDE = flags.DEFINE_list("search_override", [], "Config overrides of every search (key=value).")
STANDALONE_OVERRIDE = flags.DEFINE_list("standalone_override", STANDALONE_RECIPE,
                                        "Config overrides of every standalone training (key=value).")
STANDALONE_SEEDS = flags.DEFINE_list("standalone_seeds", ["0", "1", "2"],
                                      "train.seed of each standalone training; an architecture's standalone AP50 "
                                      "is the mean over them (with one seed, one architecture's AP50 can move by up to "
                                      "0.18 with the seed).")
NUM_RANDOM = flags.DEFINE_integer("num_random", 6, "Random architectures near the target, trained with the same "
                                  "recipe as what the searches found (0: none).")
RANDOM_BAND = flags.DEFINE_float("random_band", 0.03, "Relative band around the target the random architectures "
                                 "are predicted in.")
RANDOM_SEED = flags.DEFINE_integer("random_seed", 0, "Seed of the random architectures.")
RANDOM_RESULTS = flags.DEFINE_string("random_results", "", "An earlier report of this benchmark whose random rows' "
                                     "AP50 per seed stand for the random group's instead of training it again; it "
                                     "must hold the same random architectures, recipe and seeds.")
JOBS = flags.DEFINE_integer("jobs", 2, "Searches or trainings at once, each pinned to one CPU.")
ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved timing passes of the latency measurement.")
NAME = flags.DEFINE_string("name", "reward_comparison", "Result file stem under benchmarks/results/.")


def run_key(reward: str, seed: str) -> str:
    return f"{reward}_seed{seed}"


def search_dir(work_dir: str, key: str) -> str:
    return os.path.join(work_dir, "search", key)


def search_jobs(work_dir: str, keys: Dict[str, Tuple[str, str]]) -> Dict[str, Job]:
    """The searches not yet finished, as jobs by key."""
    commands = {}
    for key, (reward, seed) in keys.items():
        model_dir = search_dir(work_dir, key)
        if os.path.exists(os.path.join(model_dir, "searched_arch.yaml")):
            continue
        os.makedirs(model_dir, exist_ok=True)
        overrides = [f"search.reward={reward}", f"search.seed={seed}", f"train.seed={seed}",
                     *SEARCH_OVERRIDE.value]
        commands[key] = (os.path.join(model_dir, "search.log"),
                         [binary("mobiledets-search"), f"--config={CONFIG.value}", f"--model_dir={model_dir}",
                          f"--target_ms={TARGET_MS.value}", f"--override={','.join(overrides)}"])
    return commands


def search_config():
    """The searches' config: --config with --search_override (its cost model predicts every latency)."""
    from mobiledets_tf.config import load_config
    return load_config(CONFIG.value, SEARCH_OVERRIDE.value)


def random_architectures(work_dir: str) -> List[Dict]:
    """Draws the random architectures (WORK/archs/random_NN.yaml): [{name, indices, predicted_ms, arch}]."""
    if NUM_RANDOM.value <= 0:
        return []
    return architectures_near_target(os.path.join(work_dir, "random.json"), search_config(), TARGET_MS.value,
                                     NUM_RANDOM.value, RANDOM_BAND.value, RANDOM_SEED.value, prefix=f"{RANDOM}_")


def random_keys(archs: List[Dict]) -> Dict[str, Tuple[str, str]]:
    """The random architectures keyed as the group RANDOM (random_NN -> (RANDOM, NN))."""
    return {row["name"]: (RANDOM, row["name"][len(RANDOM) + 1:]) for row in archs}


def recorded_random(path: str, archs: List[Dict]) -> Dict[str, List[float]]:
    """The AP50 per seed of the random rows of a report of this benchmark (`report`'s first table); exits
    when it lacks one of `archs`, predicts its latency otherwise, or trained with another recipe or other
    seeds."""
    table = read_results_table(path)
    if table.seeds != STANDALONE_SEEDS.value or table.recipe != ",".join(STANDALONE_OVERRIDE.value):
        recipe = f"standalone overrides `{table.recipe}`" if table.recipe else "an unnamed recipe"
        sys.exit(f"{path}: trained under seeds {', '.join(table.seeds)} with {recipe}, not seeds "
                 f"{', '.join(STANDALONE_SEEDS.value)} with standalone overrides `{','.join(STANDALONE_OVERRIDE.value)}`")
    rows = {f"{RANDOM}_{row[1]}": row for row in table.rows if row[0] == RANDOM}
    for arch in archs:
        row = rows.get(arch["name"])
        if row is None or abs(float(row[2]) - arch["predicted_ms"]) > 0.006:
            found = f"predicted at {row[2]} ms" if row else "missing"
            sys.exit(f"{path}: {arch['name']} (predicted at {arch['predicted_ms']:.2f} ms here) is {found} there: "
                     "it holds other architectures (another --random_seed, --random_band, --target_ms or cost model)")
    ap50 = table.ap50_per_seed(RANDOM)
    return {a["name"]: ap50[a["name"]] for a in archs}


def found_arch(work_dir: str, key: str) -> str:
    """The found ArchSpec, renamed after its run (the measurement needs distinct names); a random
    architecture's ArchSpec as drawn."""
    path = os.path.join(work_dir, "archs", f"{key}.yaml")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.path.join(search_dir(work_dir, key), "searched_arch.yaml")) as f:
            spec = yaml.safe_load(f)
        spec["name"] = key
        with open(path, "w") as f:
            yaml.safe_dump(spec, f, sort_keys=False, default_flow_style=None, width=120)
    return path


def finalist_records(work_dir: str, keys) -> Dict[str, dict]:
    """The finalists.json of each search in `keys` that ended with a finalist stage."""
    records = {}
    for key in keys:
        path = os.path.join(search_dir(work_dir, key), FINALISTS_JSON)
        if os.path.exists(path):
            with open(path) as f:
                records[key] = json.load(f)
    return records


def finalist_row(reward: str, seed: str, record: dict) -> str:
    """One search's finalist stage as a table row: what it chose by which score among how spread a field,
    and, with several trainings per finalist, how far their mean can rank the finalists at all (the
    two-way layout of `ground_truth_ceiling`: the k-th training of every finalist shares its seed).
    Records written before the stage had a measure and several trainings hold one AP50 per finalist."""
    measure, finalists = record.get("measure", "ap50"), record["finalists"]
    scores = {f["name"]: f[measure] for f in finalists if f[measure] is not None}
    chosen = record.get("chosen")
    row = (f"| {reward} | {seed} | {len(scores)} of {len(finalists)} | {MEASURE_LABELS[measure]}, "
           f"{record['steps']} steps x {record.get('seeds', 1)} | {chosen or '-'} | "
           f"{f'{scores[chosen]:.3f}' if chosen in scores else '-'} | "
           f"{f'{min(scores.values()):.3f}-{max(scores.values()):.3f}' if scores else '-'} |")
    per_seed = [f["per_seed"] for f in finalists if f.get("per_seed") and None not in f["per_seed"]]
    if len(per_seed) < 2:
        return row + " - | - | - |"
    ceiling = ground_truth_ceiling(per_seed)
    return row + f" {ceiling.noise:.3f} | {ceiling.spread:.3f} | {ceiling.tau_mean:.2f} |"


def finalist_lines(keys: Dict[str, Tuple[str, str]], finalists: Dict[str, dict]) -> List[str]:
    """The report's table of the searches' finalist stages (none without one)."""
    if not finalists:
        return []
    lines = ["", "finalist stages (each search's `finalists.json`): the chosen finalist's score and the range of all "
             "finalists' scores; with several trainings per finalist, one training's standard deviation around its "
             "finalist's score, the spread of the finalists' expected scores (estimated) and the Kendall tau at which "
             "the mean of the trainings ranks the finalists by that expectation (a bivariate-normal model)", "",
             "| reward | seed | finalists scored | measure, steps x trainings | chosen | its score | scores | one "
             "training's SD | finalists' spread | tau of the mean |", "|---|---|---|---|---|---|---|---|---|---|"]
    return lines + [finalist_row(*keys[key], record) for key, record in finalists.items()]


def measure_latency(work_dir: str, keys) -> list:
    """The cost-model measurement of every found architecture; only those not yet measured are timed."""
    output = os.path.join(work_dir, "measured.json")
    rows = []
    if os.path.exists(output):
        with open(output) as f:
            rows = json.load(f)
    missing = [key for key in keys if key not in {row["arch"] for row in rows}]
    if missing:
        cost_model = repository_path(search_config().search.cost_model)
        archs = ",".join(found_arch(work_dir, key) for key in missing)
        new_rows = os.path.join(work_dir, "measured_new.json")
        subprocess.run([binary("mobiledets-cost-model"), "measure", f"--model={cost_model}", f"--arch={archs}",
                        "--cpus=1", f"--rounds={ROUNDS.value}", f"--work_dir={os.path.join(work_dir, 'latency')}",
                        f"--measure_output={new_rows}"], check=True)
        with open(new_rows) as f:
            rows += json.load(f)
        with open(output, "w") as f:
            json.dump(rows, f, indent=1)
        os.remove(new_rows)
    return rows


def standalone_dir(work_dir: str, key: str, seed: str) -> str:
    return os.path.join(work_dir, "standalone", key, f"seed{seed}")


def standalone_jobs(work_dir: str, keys) -> List[Job]:
    """The standalone trainings of `keys` not yet evaluated, one per seed, as jobs (every architecture's
    first seed before any second one)."""
    jobs = [standalone_job(CONFIG.value, found_arch(work_dir, key), standalone_dir(work_dir, key, seed),
                           [*STANDALONE_OVERRIDE.value, f"train.seed={seed}"])
            for seed in STANDALONE_SEEDS.value for key in keys]
    return [job for job in jobs if job]


def ap50_per_seed(work_dir: str, key: str) -> List[float]:
    """An architecture's standalone AP50 under each of --standalone_seeds (the report scores it by their mean)."""
    return [standalone_ap50(standalone_dir(work_dir, key, seed)) for seed in STANDALONE_SEEDS.value]


def mean_std(values: List[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def beats_random(searched: List[float], random: List[float]) -> str:
    """The acceptance line of one reward: its mean standalone AP50 against the random group's."""
    if len(random) < 2 or not searched:
        return "-"
    margin, spread = statistics.mean(searched) - statistics.mean(random), statistics.stdev(random)
    return f"{margin:+.3f} vs {spread:.3f}: {'yes' if margin > spread else 'no'}"


def report(keys: Dict[str, Tuple[str, str]], measured: list, ap50: Dict[str, List[float]], elapsed_min: float,
           random_source: str = "", finalists: Optional[Dict[str, dict]] = None) -> str:
    from mobiledets_tf.benchmark.local import cpu_name, vector_extensions
    by_name = {row["arch"]: row for row in measured}
    target, seeds = TARGET_MS.value, STANDALONE_SEEDS.value
    lines = [f"# Search rewards at a {target:g} ms target (measured)", "",
             f"command: `python {' '.join(sys.argv)}`  ", f"config: `{os.path.relpath(CONFIG.value)}`, search overrides "
             f"`{','.join(SEARCH_OVERRIDE.value) or '-'}`, standalone overrides `{','.join(STANDALONE_OVERRIDE.value)}`, "
             f"standalone seeds (train.seed) {', '.join(seeds)}  ",
             f"CPU: {cpu_name()} ({os.cpu_count()} CPUs), vector extensions: {vector_extensions()}  ", f"wall time of this invocation: {elapsed_min:.0f} min", "",
             f"random architectures: {NUM_RANDOM.value} predicted within +-{100 * RANDOM_BAND.value:g}% of the "
             f"target (seed {RANDOM_SEED.value})" + (f"; their standalone AP50 recorded in `{random_source}`"
                                                    if random_source else ""), "",
             "| reward | seed | predicted ms | measured ms (fastest run) | off target | standalone AP50 (mean of the "
             f"seeds) | per seed ({', '.join(seeds)}) |", "|---|---|---|---|---|---|---|"]
    summary, seed_rows = {}, []
    for key, (reward, seed) in keys.items():
        row, per_seed = by_name[key], ap50[key]
        off, mean_ap50 = 100 * (row["measured_ms"] - target) / target, statistics.mean(per_seed)
        summary.setdefault(reward, []).append((abs(off), mean_ap50))
        if len(per_seed) > 1:
            seed_rows.append(per_seed)
        lines.append(f"| {reward} | {seed} | {row['predicted_ms']:.2f} | {row['measured_ms']:.2f} | {off:+.1f}% | "
                     f"{mean_ap50:.3f} | {' / '.join(f'{a:.3f}' for a in per_seed)} |")
    random = [a for _, a in summary.get(RANDOM, [])]
    lines += ["", "| reward | mean abs. distance from the target | standalone AP50 | mean minus random mean vs "
              "random std: above it? |", "|---|---|---|---|"]
    for reward, rows in summary.items():
        versus = "" if reward == RANDOM else beats_random([a for _, a in rows], random)
        lines.append(f"| {reward} | {statistics.mean(d for d, _ in rows):.1f}% | {mean_std([a for _, a in rows])} | "
                     f"{versus} |")
    if seed_rows:
        noise = seed_noise(seed_rows)
        lines += ["", f"seed noise: one architecture's AP50 has a standard deviation of {noise:.3f} over the seeds "
                  f"(root mean square over the architectures), so a mean of {len(seeds)} seeds is uncertain by about "
                  f"{noise / len(seeds) ** 0.5:.3f}"]
    lines += finalist_lines(keys, finalists or {})
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    for reward in REWARD_LIST.value:
        if reward not in REWARDS:
            sys.exit(f"unknown reward {reward!r}; expected among {', '.join(REWARDS)}")
    if not shutil.which("taskset"):
        sys.exit("taskset (util-linux) is needed to pin each job to one CPU")
    started, work_dir = time.time(), WORK_DIR.value
    searched = {run_key(r, s): (r, s) for r in REWARD_LIST.value for s in SEEDS.value}
    archs = random_architectures(work_dir)
    recorded = recorded_random(RANDOM_RESULTS.value, archs) if RANDOM_RESULTS.value else {}
    random = random_keys(archs)
    keys = {**searched, **random}
    # The random architectures train while the searches run, and what a search found as soon as it has
    # ended, so no CPU waits for the last search; the latency measurement runs alone, after them.
    searches = search_jobs(work_dir, searched)
    running = {log_path: key for key, (log_path, _) in searches.items()}
    ended = [key for key in searched if key not in searches]
    run_pinned([*searches.values(), *standalone_jobs(work_dir, {} if recorded else random),
                *standalone_jobs(work_dir, ended)], JOBS.value,
               then=lambda job: standalone_jobs(work_dir, [running[job[0]]]) if job[0] in running else [])
    measured = measure_latency(work_dir, keys)
    ap50 = {key: recorded[key] if key in recorded else ap50_per_seed(work_dir, key) for key in keys}
    text = report(keys, measured, ap50, (time.time() - started) / 60, RANDOM_RESULTS.value,
                  finalist_records(work_dir, searched))
    write_results(NAME.value, text)


if __name__ == "__main__":
    app.run(main)
