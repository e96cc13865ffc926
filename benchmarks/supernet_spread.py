"""Benchmark report: how much one supernet's ranking varies between supernets, and what their average ranks.

    python benchmarks/supernet_spread.py      # seconds: reads the committed supernet_ranking reports

`supernet_ranking.py` scores one supernet; its Kendall tau against standalone training is one draw.
This reads the reports of several supernets that scored the same architectures (each
`{set}{suffix}.md` of benchmarks/results/ for every --sets and --supernets entry), and writes
benchmarks/results/{--name}.md: each supernet's tau (the search's measure against the mean
standalone AP50 of the seeds) per set and over all sets together; the mean and standard deviation of
those taus per setting; how alike the supernets rank the architectures (Kendall tau between their
scores, over all pairs); and the tau of their consensus (the mean of each architecture's rank over
the supernets), which is what a supernet without its own training noise would reach; beside them the
zero-cost reference (`--reference`: the trainable-weight count of each architecture, from the reports
`supernet_ranking.py --ground_truth_only --standalone_results=...` wrote for each set), the tau any
one-shot measure has to beat, how alike each supernet ranks to it, and the tau of each supernet's
measure and the reference together (the mean of the two ranks), and of the search's Q with a capacity
term (`--capacity_weights`: measure + w ln(reference), as `search.capacity_weight` w adds it). Nothing is
trained or scored here.
"""
import itertools
import os
import statistics
import sys
from typing import Dict, List, Sequence

from absl import app, flags

from mobiledets_tf.search.rewards import capacity_term
from pinned_jobs import RESULTS_DIR, write_results
from ranking_reports import read_ranking_table

SETS = flags.DEFINE_list("sets", ["supernet_ranking", "supernet_ranking_confirmation"],
                         "Report stems of the architecture sets (each set's reports share its architectures).")
SUPERNETS = flags.DEFINE_list(
    "supernets", ["shipped:", "shipped:_shipped2", "shipped:_shipped3", "rl_boost=1:_boost1", "rl_delay=0.75:_delay75",
                  "rl_delay=1 (uniform paths):_uniform", "rl_delay=1 (uniform paths):_uniform2"],
    "SETTING:SUFFIX of each supernet: its reports are {set}{SUFFIX}.md; supernets of one setting are summarised together.")
RESULTS = flags.DEFINE_string("results_dir", RESULTS_DIR, "Where the reports are.")
MEASURE = flags.DEFINE_string("measure", "minibatch_quality", "The one-shot measure compared (a column of the reports).")
CAPACITY_WEIGHTS = flags.DEFINE_list(
    "capacity_weights", ["0.02", "0.05", "0.08", "0.12", "0.2", "0.5"],
    "Weights w of the capacity term the search can add to Q (search.capacity_weight): each supernet's measure + "
    "w ln(reference) is ranked (needs --reference).")
REFERENCE = flags.DEFINE_string("reference", "_parameters:parameters",
                                "SUFFIX:COLUMN of the zero-cost reference ranked beside the supernets ('' for none).")
NAME = flags.DEFINE_string("name", "supernet_spread", "Result file stem under benchmarks/results/.")


def kendall(x: List[float], y: List[float]):
    from scipy import stats
    result = stats.kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def mean_ranks(columns: List[List[float]]) -> List[float]:
    from scipy import stats
    ranks = [stats.rankdata(column) for column in columns]
    return [float(statistics.mean(values)) for values in zip(*ranks)]


def load(results_dir: str, sets: List[str], columns: Dict[str, str]):
    """(architecture names per set, ground truth per architecture, {entry: score per architecture}) for
    `columns` {entry: the column read}, each entry SETTING:SUFFIX naming the reports {set}{SUFFIX}.md."""
    names, truth, scores = {}, {}, {entry: {} for entry in columns}
    suffixes = {entry: entry.split(":", 1)[1] for entry in columns}
    first = next(iter(columns))
    for stem in sets:
        for entry, column in columns.items():
            path = os.path.join(results_dir, f"{stem}{suffixes[entry]}.md")
            if not os.path.exists(path):
                sys.exit(f"{path}: missing (--sets {stem}, entry {entry})")
            table = read_ranking_table(path)
            if stem not in names:
                names[stem] = sorted(table.rows)
                truth.update({a: statistics.mean(row.ap50) for a, row in table.rows.items()})
            if sorted(table.rows) != names[stem]:
                sys.exit(f"{path}: other architectures than {stem}{suffixes[first]}.md")
            if any(column not in row.scores for row in table.rows.values()):
                sys.exit(f"{path}: no {column} column")
            scores[entry].update({a: row.scores[column] for a, row in table.rows.items()})
    return names, truth, scores


def report(results_dir: str, sets: List[str], supernets: List[str], measure: str, reference: str = "",
           capacity_weights: Sequence[float] = ()) -> str:
    columns = {entry: measure for entry in supernets}
    reference_suffix, reference_column = reference.rsplit(":", 1) if reference else ("", "")
    reference_entry = f"reference:{reference_suffix}" if reference else None
    if reference_entry:
        columns[reference_entry] = reference_column
    names, truth, scores = load(results_dir, sets, columns)
    groups = {"both": [a for stem in sets for a in names[stem]]} if len(sets) > 1 else {}
    groups = {**{stem: names[stem] for stem in sets}, **groups}

    def tau_of(score: Dict[str, float], archs: List[str]):
        return kendall([score[a] for a in archs], [truth[a] for a in archs])

    set_header = " | ".join(f"{g} ({len(a)})" for g, a in groups.items())
    lines = [f"# Supernet to supernet: Kendall tau of {measure} against the mean standalone AP50", "",
             f"command: `python {' '.join(sys.argv)}`  ",
             f"reports: `{os.path.relpath(results_dir)}/{{{','.join(sets)}}}{{suffix}}.md`; tau against the mean standalone AP50 of "
             "the seeds each report holds (the same for every supernet of a set); `both`: all sets' architectures "
             "together", "",
             f"| setting | report suffix | {set_header} |", "|---|---|" + "---|" * len(groups)]
    per_setting: Dict[str, List[float]] = {}
    last = list(groups)[-1]
    for entry in supernets:
        setting, suffix = entry.split(":", 1)
        taus = {g: tau_of(scores[entry], archs) for g, archs in groups.items()}
        per_setting.setdefault(setting, []).append(taus[last][0])
        lines.append(f"| {setting} | `{suffix or '-'}` | " +
                     " | ".join(f"{t:.3f} (p {p:.2f})" if g == last else f"{t:.3f}" for g, (t, p) in taus.items()) + " |")
    lines += ["", f"| setting | supernets | tau on {last}: mean | standard deviation |", "|---|---|---|---|"]
    for setting, taus in per_setting.items():
        spread = f"{statistics.stdev(taus):.3f}" if len(taus) > 1 else "-"
        lines.append(f"| {setting} | {len(taus)} | {statistics.mean(taus):.3f} | {spread} |")
    every = [tau for taus in per_setting.values() for tau in taus]
    lines.append(f"| all | {len(every)} | {statistics.mean(every):.3f} | {statistics.stdev(every):.3f} |")
    everything = groups[last]
    pairs = [kendall([scores[a][x] for x in everything], [scores[b][x] for x in everything])[0]
             for a, b in itertools.combinations(supernets, 2)]
    consensus = dict(zip(everything, mean_ranks([[scores[e][x] for x in everything] for e in supernets])))
    lines += ["", f"supernets against each other ({last}, {len(pairs)} pairs): Kendall tau between their {measure} "
              f"{statistics.mean(pairs):.3f} on average (from {min(pairs):.3f} to {max(pairs):.3f})", "",
              f"consensus of the {len(supernets)} supernets (each architecture's mean rank): Kendall tau " +
              ", ".join(f"{tau_of(consensus, archs)[0]:.3f} on {g}" for g, archs in groups.items())]
    if reference_entry:
        counted = scores[reference_entry]
        lines += ["", f"zero-cost reference, no supernet (`{reference_column}` of `{{set}}{reference_suffix}.md`): "
                      "Kendall tau " +
                  ", ".join(f"{tau_of(counted, archs)[0]:.3f} on {g}" for g, archs in groups.items())]
        against = [kendall([scores[e][x] for x in everything], [counted[x] for x in everything])[0] for e in supernets]
        lines += ["", f"each supernet's {measure} against the zero-cost reference ({last}): Kendall tau "
                      f"{statistics.mean(against):.3f} on average (from {min(against):.3f} to {max(against):.3f})"]

        def with_reference(entry: str, archs: List[str]) -> Dict[str, float]:
            return dict(zip(archs, mean_ranks([[scores[entry][x] for x in archs], [counted[x] for x in archs]])))

        lines += ["", f"each supernet's {measure} and the zero-cost reference together (each architecture's mean rank of "
                      "the two, within the set ranked), mean over the supernets: Kendall tau " +
                  ", ".join(f"{statistics.mean(tau_of(with_reference(e, archs), archs)[0] for e in supernets):.3f} on {g}"
                            for g, archs in groups.items()) +
                  " (the supernets alone: " +
                  ", ".join(f"{statistics.mean(tau_of(scores[e], archs)[0] for e in supernets):.3f}"
                            for archs in groups.values()) + ")"]
        if capacity_weights:
            lines += ["", f"the search's Q with `search.capacity_weight` w: {measure} + w ln({reference_column}), "
                          "Kendall tau over the supernets: mean (lowest to highest)", "",
                      "| w | " + " | ".join(f"{g} ({len(a)})" for g, a in groups.items()) + " |",
                      "|---|" + "---|" * len(groups)]
            for weight in [0.0, *capacity_weights]:
                cells = []
                for archs in groups.values():
                    taus = [tau_of({x: scores[e][x] + capacity_term(weight, counted[x]) for x in archs}, archs)[0]
                            for e in supernets]
                    cells.append(f"{statistics.mean(taus):.3f} ({min(taus):.3f} to {max(taus):.3f})")
                lines.append(f"| {weight:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    write_results(NAME.value, report(RESULTS.value, SETS.value, SUPERNETS.value, MEASURE.value, REFERENCE.value,
                                     [float(w) for w in CAPACITY_WEIGHTS.value]))


if __name__ == "__main__":
    app.run(main)
