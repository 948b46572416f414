"""classification/accuracy, macro_f1, valid_label: one field of the output as a classifier's answer.

scikit-learn computes the scores. An answer that is not a known label counts
as wrong; for F1 it is its own INVALID class, which no gold row has, so macro-F1
averages over the classes of the test set only.
"""

from __future__ import annotations

from collections.abc import Sequence

from finetune_pipeline.lib.evaluation.confusion import INVALID, gold_and_predicted
from finetune_pipeline.lib.evaluation.metrics.base import Answers, Metric

NAMES = ("accuracy", "macro_f1", "valid_label")


def classification_metrics(predictions: Sequence[str], expected: Sequence[str], field: str,
                           labels: Sequence[str]) -> dict[str, float]:
    """{accuracy, macro_f1, valid_label} of `predictions` against `expected` on `field`."""
    from sklearn.metrics import accuracy_score, f1_score

    gold, pred = gold_and_predicted(expected, predictions, field, labels)
    classes = sorted(set(gold) - {INVALID})
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=classes, average="macro", zero_division=0)),
        "valid_label": sum(p != INVALID for p in pred) / len(pred) if pred else 0.0,
    }


class ClassificationMetrics(Metric):
    """The free answers, scored as labels (only with eval.classification.field)."""

    names = tuple(f"classification/{n}" for n in NAMES)

    def scores(self, answers: Answers) -> dict[str, float]:
        c = answers.classification
        if c is None:
            return {}
        return {f"classification/{k}": v for k, v in
                classification_metrics(answers.predictions, answers.expected, c.field, c.labels).items()}
