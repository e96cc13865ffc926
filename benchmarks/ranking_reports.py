"""Reading back the tables of the search benchmarks' reports: the architecture table of
`supernet_ranking.py` (each architecture's predicted latency, one-shot scores and standalone AP50 per
seed) and the table of searched and random architectures of `reward_comparison.py`. Shared by those
two, `supernet_spread.py` and `selection_power.py` (no flags here, so all of them can import it)."""
import re
import sys
from typing import Dict, List, NamedTuple

from pinned_jobs import RECIPE, markdown_table

ARCHITECTURE_HEADER = "| architecture | predicted ms |"
SEED_COLUMN = re.compile(r"standalone AP50 seed (\S+)")


class RankingRow(NamedTuple):
    predicted_ms: float
    scores: Dict[str, float]   # one-shot measure -> score (none in a --ground_truth_only report)
    ap50: List[float]          # standalone AP50 of each seed


class RankingTable(NamedTuple):
    seeds: List[str]
    rows: Dict[str, RankingRow]   # architecture name -> its row
    preamble: str                 # the report's text above the table


def read_ranking_table(path: str) -> RankingTable:
    """The architecture table of a report of `supernet_ranking.py`; exits when `path` has none."""
    with open(path) as f:
        lines = f.read().splitlines()
    header, columns, table = markdown_table(lines, ARCHITECTURE_HEADER)
    seed_columns = {k: match.group(1) for k, match in enumerate(map(SEED_COLUMN.fullmatch, columns)) if match}
    if not seed_columns:
        sys.exit(f"{path}: no architecture table with standalone AP50 columns (not a report of supernet_ranking.py)")
    measures = range(2, min(seed_columns))
    rows = {row[0]: RankingRow(float(row[1]), {columns[k]: float(row[k]) for k in measures},
                               [float(row[k]) for k in seed_columns]) for row in table}
    return RankingTable(list(seed_columns.values()), rows, "\n".join(lines[:header]))


RESULTS_HEADER = "| reward | seed | predicted ms |"
RANDOM = "random"   # the group of random architectures in `reward_comparison.py`'s table


class ResultsTable(NamedTuple):
    seeds: List[str]              # train.seed of the standalone trainings, in the order of "per seed"
    recipe: str                   # the standalone overrides, as the report names them ("" when it does not)
    rows: List[List[str]]         # the cells of each row: reward or RANDOM, seed or number, ...
    preamble: str                 # the report's text above the table

    def ap50_per_seed(self, group: str) -> Dict[str, List[float]]:
        """{GROUP_SEED: standalone AP50 per seed} of the rows of one reward, or of RANDOM."""
        return {f"{row[0]}_{row[1]}": [float(v) for v in row[-1].split(" / ")] for row in self.rows if row[0] == group}


def read_results_table(path: str) -> ResultsTable:
    """The table of searched and random architectures of a report of `reward_comparison.py`; exits
    when `path` has none."""
    with open(path) as f:
        lines = f.read().splitlines()
    header, columns, table = markdown_table(lines, RESULTS_HEADER)
    if header < 0:
        sys.exit(f"{path}: no table of searched and random architectures (not a report of reward_comparison.py)")
    preamble = "\n".join(lines[:header])
    recipe = RECIPE.search(preamble)
    return ResultsTable(columns[-1][len("per seed ("):-1].split(", "), recipe.group(1) if recipe else "", table,
                        preamble)
