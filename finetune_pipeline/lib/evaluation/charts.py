"""The leaderboard's pictures: a metrics bar chart and a confusion matrix, as PNG bytes."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.evaluation.metrics import parse_json_object
from finetune_pipeline.lib.evaluation.scoring import read_predictions

NO_VALUE = "(none)"  # the prediction was not JSON or lacked the field


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


def metrics_bar_chart(board: dict[str, Any]) -> bytes:
    """Grouped bars: one group per metric, one bar per version (in rank order)."""
    plt = _pyplot()
    metrics, rows = board["metrics"], board["rows"]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(metrics) + 2), 3.5), dpi=80)
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        xs = [m + (i - (len(rows) - 1) / 2) * width for m in range(len(metrics))]
        ax.bar(xs, [row["metrics"].get(m, 0.0) for m in metrics], width, label=f"#{row['rank']} {row['version']}")
    ax.set_xticks(range(len(metrics)), metrics, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"on eval set {board['eval_set']}")
    ax.legend(fontsize=7)
    return _png(fig)


def confusion_matrix(predictions_file: Path, field: str) -> tuple[list[str], list[list[int]]]:
    """Counts of (expected value, predicted value) for one JSON field; rows are expected."""
    pairs = Counter()
    for row in read_predictions(predictions_file):
        expected = (parse_json_object(row["expected"]) or {}).get(field)
        predicted = (parse_json_object(row["prediction"]) or {}).get(field)
        pairs[(_label(expected), _label(predicted))] += 1
    expected_labels = sorted({e for e, _ in pairs})
    labels = expected_labels + sorted({p for _, p in pairs} - set(expected_labels))
    return labels, [[pairs[(e, p)] for p in labels] for e in labels]


def _label(value: Any) -> str:
    return NO_VALUE if value is None else str(value)


def confusion_png(labels: list[str], matrix: list[list[int]], title: str) -> bytes:
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
