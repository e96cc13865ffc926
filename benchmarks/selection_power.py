"""Benchmark report: how well a quality signal must rank architectures for a search to beat random.

    python benchmarks/selection_power.py      # under a minute: reads the committed reports, simulates

The acceptance line of the searched-vs-random comparison (`reward_comparison.py`) asks the mean
standalone AP50 of three searches' architectures to exceed the random group's mean by one standard
deviation of that group. How likely that is depends on how well the search's quality signal ranks
architectures (the Kendall tau `supernet_ranking.py` measures against the mean of the standalone
seeds) and on how many candidates the signal chooses among. This fits the bivariate-normal model of
`seed_statistics.ground_truth_ceiling` to every architecture the committed reports trained with one
recipe and seeds (the --ground_truth reports' and the random group of --random_results): true AP50
spread, one training's noise. It then simulates searches that each take the best of N candidates by a
signal of Kendall tau t against the mean of the seeds, and writes benchmarks/results/{--name}.md: per
t and N, the probability that --searches searches pass the line against the recorded random group
(its mean plus standard deviation as measured), the probability against a fresh random group of the
same size, and the expected AP50 of what the searches find. A signal ranking above the ground
truth's ceiling (a noise-free measure's tau against the seeds' mean) is impossible: "-".
"""
import math
import os
import statistics
import sys
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
from absl import app, flags

from pinned_jobs import RECIPE, RESULTS_DIR, write_results
from ranking_reports import RANDOM, read_ranking_table, read_results_table
from seed_statistics import Ceiling, ground_truth_ceiling

GROUND_TRUTH = flags.DEFINE_list(
    "ground_truth", [os.path.join(RESULTS_DIR, f"{stem}.md") for stem in ("supernet_ranking", "supernet_ranking_confirmation")],
    "Reports of supernet_ranking.py whose standalone AP50 columns (one recipe and seeds) fit the model.")
RANDOM_RESULTS = flags.DEFINE_string("random_results", os.path.join(RESULTS_DIR, "searched_vs_random.md"),
                                     "The report of reward_comparison.py whose random group the searches must beat.")
SEARCHES = flags.DEFINE_integer("searches", 3, "Searches whose mean AP50 is compared (the acceptance line's three).")
TAUS = flags.DEFINE_list("taus", ["0.15", "0.25", "0.35", "0.45", "0.55", "0.65"],
                         "Kendall tau of the signal against the mean of the seeds (the ceiling's row is added).")
CANDIDATES = flags.DEFINE_list("candidates", ["10", "30", "100", "1000"], "Candidates each search chooses among.")
TRIALS = flags.DEFINE_integer("trials", 20000, "Simulated repetitions of the whole comparison per cell.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the simulation.")
NAME = flags.DEFINE_string("name", "selection_power", "Result file stem under benchmarks/results/.")


class Outcome(NamedTuple):
    pass_recorded: float    # probability that the searches' mean exceeds the recorded group's mean + std
    pass_fresh: float       # ... exceeds a fresh random group's mean + std
    found_ap50: float       # expected mean AP50 (over the seeds) of what one search finds


def signal_correlation(tau: float, ceiling: Ceiling, seeds: int) -> Optional[float]:
    """The correlation with the true AP50 of a signal ranking at Kendall `tau` against the mean of
    `seeds` trainings (tau = 2/pi arcsin r, bivariate normal); None above the ceiling."""
    truth_share = ceiling.spread ** 2 / (ceiling.spread ** 2 + ceiling.noise ** 2 / seeds) if ceiling.spread else 0.0
    if truth_share == 0.0:
        return None
    correlation = math.sin(math.pi * tau / 2) / math.sqrt(truth_share)
    return min(correlation, 1.0) if correlation <= 1.0 + 1e-9 else None


def simulate(ceiling: Ceiling, mean: float, seeds: int, correlation: float, candidates: int, searches: int,
             random_archs: int, recorded_threshold: float, trials: int, rng: np.random.Generator) -> Outcome:
    """Searches taking the best of `candidates` by a signal of `correlation` with the true AP50, against
    the recorded threshold and against fresh groups of `random_archs`, each architecture measured as
    the mean of `seeds` trainings (seed offsets, common to all, cancel and are left out)."""
    measured_noise = ceiling.noise / math.sqrt(seeds)
    passed_recorded = passed_fresh = 0
    found = 0.0
    chunk = max(1, min(trials, 4_000_000 // (searches * candidates)))
    for start in range(0, trials, chunk):
        n = min(chunk, trials - start)
        true = rng.standard_normal((n, searches, candidates))
        signal = correlation * true + math.sqrt(max(1.0 - correlation ** 2, 0.0)) * rng.standard_normal(true.shape)
        best = np.take_along_axis(true, signal.argmax(axis=-1)[..., None], axis=-1)[..., 0]
        searched = (mean + ceiling.spread * best + measured_noise * rng.standard_normal(best.shape)).mean(axis=-1)
        random = mean + ceiling.spread * rng.standard_normal((n, random_archs)) + \
            measured_noise * rng.standard_normal((n, random_archs))
        passed_recorded += int(np.sum(searched > recorded_threshold))
        passed_fresh += int(np.sum(searched > random.mean(axis=-1) + random.std(axis=-1, ddof=1)))
        found += float(np.sum(searched))
    return Outcome(passed_recorded / trials, passed_fresh / trials, found / trials)


def pooled_ground_truth(ranking_reports: Sequence[str], random_results: str):
    """([architecture][seed] AP50 of every distinct architecture of the reports, {random name: mean over seeds},
    seeds); exits when the reports trained with other recipes or seeds."""
    random_table = read_results_table(random_results)
    rows, recipes = list(random_table.ap50_per_seed(RANDOM).values()), {random_results: (random_table.recipe,
                                                                                          random_table.seeds)}
    if len(rows) < 2:
        sys.exit(f"{random_results}: fewer than two random architectures")
    for path in ranking_reports:
        table = read_ranking_table(path)
        recipe = RECIPE.search(table.preamble)
        recipes[path] = (recipe.group(1) if recipe else "", table.seeds)
        rows += [row.ap50 for row in table.rows.values()]
    # A ranking set and the random group drawn with the same seed share their first architectures: the
    # same architecture trained under the same seeds gives the same AP50 to the last digit; counted once.
    rows = list({tuple(row): row for row in rows}.values())
    if len(set(map(str, recipes.values()))) > 1:
        sys.exit("the reports trained with different recipes or seeds: " +
                 "; ".join(f"{p}: `{r}` seeds {', '.join(s)}" for p, (r, s) in recipes.items()))
    random_means = {name: statistics.mean(ap50) for name, ap50 in random_table.ap50_per_seed(RANDOM).items()}
    return rows, random_means, random_table.seeds


def report(ranking_reports: Sequence[str], random_results: str, taus: List[float], candidates: List[int],
           searches: int, trials: int, seed: int) -> str:
    rows, random_means, seeds = pooled_ground_truth(ranking_reports, random_results)
    ceiling = ground_truth_ceiling(rows)
    mean = statistics.mean(statistics.mean(row) for row in rows)
    group = list(random_means.values())
    threshold = statistics.mean(group) + statistics.stdev(group)
    rng = np.random.default_rng(seed)
    lines = [
        "# What a search's quality signal must reach to beat random by one standard deviation (simulated)",
        "",
        f"ground truth: {len(rows)} architectures trained under seeds {', '.join(seeds)} "
        f"({', '.join(f'`{os.path.relpath(p)}`' for p in [*ranking_reports, random_results])}): mean AP50 {mean:.3f}, "
        f"true spread {ceiling.spread:.3f}, one training's noise {ceiling.noise:.3f}; a noise-free signal ranks them at "
        f"Kendall tau {ceiling.tau_mean:.2f} against the mean of {len(seeds)} seeds  ",
        f"the line: the mean of {searches} searches above the random group's mean plus standard deviation; recorded "
        f"group: {len(group)} architectures at {statistics.mean(group):.3f} +- {statistics.stdev(group):.3f}, "
        f"threshold {threshold:.3f}  ",
        f"{trials} simulated comparisons per cell (seed {seed})",
        "",
        "Each cell: probability of passing against the recorded group / against a fresh group of "
        f"{len(group)} (expected AP50 of what one search finds).",
        "",
        "| signal's Kendall tau against the seeds' mean | correlation with the true AP50 | " +
        " | ".join(f"best of {n}" for n in candidates) + " |",
        "|---|---|" + "---|" * len(candidates)]
    for tau in [*taus, ceiling.tau_mean]:
        correlation = signal_correlation(tau, ceiling, len(seeds))
        label = f"{tau:.2f}" + (" (the ceiling)" if tau == ceiling.tau_mean else "")
        if correlation is None:
            lines.append(f"| {label} | - |" + " - |" * len(candidates))
            continue
        cells = []
        for n in candidates:
            outcome = simulate(ceiling, mean, len(seeds), correlation, n, searches, len(group), threshold, trials, rng)
            cells.append(f"{outcome.pass_recorded:.2f} / {outcome.pass_fresh:.2f} ({outcome.found_ap50:.3f})")
        lines.append(f"| {label} | {correlation:.2f} | " + " | ".join(cells) + " |")
    command = " ".join(["python", "benchmarks/selection_power.py", *sys.argv[1:]])
    lines += ["", f"command: `{command}`"]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    taus, candidates = [float(t) for t in TAUS.value], [int(n) for n in CANDIDATES.value]
    if any(not 0 <= t < 1 for t in taus) or any(n < 1 for n in candidates) or SEARCHES.value < 1 or TRIALS.value < 1:
        sys.exit("--taus must lie in [0, 1); --candidates, --searches and --trials must be 1 or more")
    text = report(GROUND_TRUTH.value, RANDOM_RESULTS.value, taus, candidates, SEARCHES.value, TRIALS.value, SEED.value)
    write_results(NAME.value, text)
    print(text)


if __name__ == "__main__":
    app.run(main)
