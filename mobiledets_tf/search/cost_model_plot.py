"""Predicted against measured latency of a cost model, as a PNG scatter plot with the +-10% band."""
from typing import Sequence

from mobiledets_tf.fileio import write_atomically


def plot_predictions(groups: Sequence[tuple], path: str, title: str) -> None:
    """`groups`: (label, predicted ms, measured ms) triples, one colour each (e.g. train, held out)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 6))
    values = [v for _, predicted, measured in groups for v in list(predicted) + list(measured)]
    low, high = min(values) * 0.95, max(values) * 1.05
    axes.plot([low, high], [low, high], color="black", linewidth=1)
    axes.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="grey",
                      alpha=0.2, label="+-10%")
    for label, predicted, measured in groups:
        axes.scatter(measured, predicted, s=12, label=f"{label} ({len(measured)})")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_xlabel("measured latency (ms)")
    axes.set_ylabel("predicted latency (ms)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=110))
    plt.close(figure)
