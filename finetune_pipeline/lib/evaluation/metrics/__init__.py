"""The eval metrics: one module per metric (or family), all registered in METRICS below.

A metric is a small class on `base.Metric`: `scores(answers)` gives its values
for the eval set by name, `row_scores(...)` (optional) its verdict on one row,
written into predictions.jsonl, and `known(name)` says which names it reports,
so promotion.primary_metric is checked against the same list. A per-row
pass/fail metric needs only `RowMetric.passes`. Adding one is a file and a line:

    # lib/evaluation/metrics/short_answer.py
    from finetune_pipeline.lib.evaluation.metrics.base import RowMetric

    class ShortAnswer(RowMetric):
        name = "short_answer"  # the share of answers of at most 200 characters

        def passes(self, prediction: str, expected: str) -> bool:
            return len(prediction) <= 200

    # here, in METRICS:  ShortAnswer(),

It is then in every new report.json and predictions.jsonl row, on the
leaderboard, and allowed as promotion.primary_metric. Bump
CODE_VERSIONS["model_eval"] (lib/stages/code_versions.py) so cached evals are redone.
"""

from __future__ import annotations

from typing import Any

from finetune_pipeline.lib.evaluation.metrics.base import Answers, Classification, Metric, RowMetric
from finetune_pipeline.lib.evaluation.metrics.classification import ClassificationMetrics
from finetune_pipeline.lib.evaluation.metrics.constrained import ConstrainedClassification
from finetune_pipeline.lib.evaluation.metrics.exact_match import ExactMatch
from finetune_pipeline.lib.evaluation.metrics.field_accuracy import FieldAccuracy, expected_fields
from finetune_pipeline.lib.evaluation.metrics.likelihood import LikelihoodClassification
from finetune_pipeline.lib.evaluation.metrics.valid_json import ValidJson

# Report order: report.json lists the metrics in this order, after `n`.
METRICS: list[Metric] = [
    ExactMatch(),
    ValidJson(),
    FieldAccuracy(),
    ClassificationMetrics(),
    ConstrainedClassification(),
    LikelihoodClassification(),
]

__all__ = ["METRICS", "Answers", "Classification", "Metric", "RowMetric", "expected_fields", "known_metric",
           "row_scores", "scores"]


def known_metric(name: str) -> bool:
    """True if some registered metric reports `name` (e.g. exact_match, accuracy/<field>, constrained/macro_f1)."""
    return any(m.known(name) for m in METRICS)


def scores(answers: Answers) -> dict[str, float]:
    """`n` (rows scored), then every registered metric's values."""
    out: dict[str, Any] = {"n": len(answers.predictions)}
    for metric in METRICS:
        values = metric.scores(answers)
        if clash := out.keys() & values.keys():
            raise ValueError(f"{type(metric).__name__} reports {sorted(clash)}, which another metric reports too")
        out.update(values)
    return out


def row_scores(answers: Answers) -> list[dict[str, Any]]:
    """Each row's per-row scores from every metric that has them (exact_match, valid_json, fields, ...)."""
    rows = []
    for prediction, expected in answers.pairs():
        row: dict[str, Any] = {}
        for metric in METRICS:
            row.update(metric.row_scores(prediction, expected, answers))
        rows.append(row)
    return rows
