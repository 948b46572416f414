"""The pipeline's pictures as PNG bytes: metrics by version, a confusion matrix, a loss curve."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence


def confusion_file(field: str, suffix: str = "") -> str:
    """The file name of a field's confusion matrix PNG (the field made safe as part of a file name)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in field)
    return f"confusion_{safe}{suffix}.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in the daemon and in tests
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return buf.getvalue()


def metrics_bar_chart(metrics: Sequence[str], bars: Mapping[str, Mapping[str, float]], ylabel: str) -> bytes:
    """Grouped bars: one group per metric, one bar per entry of `bars` ({legend: {metric: value}}), in order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(metrics) + 2), 3.5), dpi=80)
    width = 0.8 / max(len(bars), 1)
    for i, (legend, values) in enumerate(bars.items()):
        xs = [m + (i - (len(bars) - 1) / 2) * width for m in range(len(metrics))]
        ax.bar(xs, [values.get(m, 0.0) for m in metrics], width, label=legend)
    ax.set_xticks(range(len(metrics)), metrics, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return _png(fig)


def confusion_png(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str) -> bytes:
    """A heat map of counts; rows are expected, columns predicted."""
    plt = _pyplot()
    # Up to 30 labels: a cell per label with its count; more (BANKING77 has 77): a
    # denser heat map without counts, capped at 20 inches so the PNG stays small.
    many = len(labels) > 30
    size = min(20.0, max(3.5, (0.22 if many else 0.5) * len(labels) + 2))
    fontsize = 5 if many else 7
    fig, ax = plt.subplots(figsize=(size, size), dpi=80)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90 if many else 45, ha="center" if many else "right",
                  fontsize=fontsize)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("expected")
    ax.set_title(title, fontsize=8)
    for i, row in enumerate([] if many else matrix):
        for j, n in enumerate(row):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7)
    return _png(fig)


def loss_curve_png(curve: Sequence[Mapping[str, float]]) -> bytes:
    """Train loss (and eval loss, with markers) by step, from points like {"step", "loss"} / {"step", "eval_loss"}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        points = [(p["step"], p[key]) for p in curve if key in p]
        if points:
            ax.plot(*zip(*points), marker="o" if key == "eval_loss" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    return _png(fig)
