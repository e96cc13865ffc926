"""Reading back the architecture table of `supernet_ranking.py`'s reports: each architecture's predicted
latency, one-shot scores and standalone AP50 per seed. Shared by `supernet_ranking.py`
(--standalone_results) and `supernet_spread.py` (no flags here, so both can import it)."""
import re
import sys
from typing import Dict, List, NamedTuple

from pinned_jobs import markdown_table

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
