"""Latency-vs-accuracy Pareto plot (PNG) of benchmark rows: one colour per backend/target/device, one
marker per precision, points named by architecture.

The y axis is COCO AP when rows have it; a table without any AP is plotted against multiply-adds
instead, and the axis says so. The frontier joins the points no other point beats on both latency
and accuracy.
"""
from typing import List, Sequence, Tuple

from mobiledets_tf.benchmark.results import BenchmarkRow
from mobiledets_tf.fileio import write_atomically


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """The points with no other point both faster and at least as accurate (sorted by latency)."""
    front, best = [], float("-inf")
    for latency, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((latency, accuracy))
            best = accuracy
    return front


def _y(row: BenchmarkRow, use_ap: bool) -> float:
    return row.ap if use_ap else (row.multiply_adds or 0) / 1e9


def plot_pareto(rows: Sequence[BenchmarkRow], path: str, title: str = "") -> str:
    """Writes the plot to `path`; returns the quantity on the y axis ("AP" or "multiply-adds")."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.latency_ms is not None]
    use_ap = any(r.ap is not None for r in measured)
    if use_ap:
        measured = [r for r in measured if r.ap is not None]
    y_name = "AP" if use_ap else "multiply-adds"
    figure, axes = plt.subplots(figsize=(8, 5.5))
    series = sorted({(r.backend, r.target, r.device) for r in measured})
    precisions = sorted({r.precision for r in measured})
    markers = dict(zip(precisions, "osD^v<>p*"))
    for backend, target, device in series:
        points = [r for r in measured if (r.backend, r.target, r.device) == (backend, target, device)]
        color = None
        for precision in precisions:
            chosen = [r for r in points if r.precision == precision]
            if not chosen:
                continue
            xs = [r.latency_ms for r in chosen]
            ys = [_y(r, use_ap) for r in chosen]
            where = f"{backend} {target} ({device}), " if len(series) > 1 else ""
            scatter = axes.scatter(xs, ys, marker=markers[precision], color=color, label=where + precision)
            color = scatter.get_facecolor()[0]
            for r, x, y in zip(chosen, xs, ys):
                axes.annotate(r.architecture, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if use_ap:
            front = pareto_front([(r.latency_ms, r.ap) for r in points])
            axes.plot(*zip(*front), linestyle="--", color=color)
    axes.set_xlabel("latency (ms, median)")
    axes.set_ylabel("COCO AP" if use_ap else "multiply-adds (B) — no AP given")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    axes.set_title(title or f"Latency vs {y_name}")
    figure.tight_layout()
    write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=120))
    plt.close(figure)
    return y_name
