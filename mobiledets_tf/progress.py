"""Progress bars for long loops over items: live in a terminal, a line every 30 s in log files."""
import sys

from tqdm import tqdm

LOG_INTERVAL_SECONDS = 30.0


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)` that redraws at most every 30 s when stderr is not a terminal."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", LOG_INTERVAL_SECONDS)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
