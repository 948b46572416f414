"""constrained/accuracy, macro_f1, valid_label: the same scores for answers generated under the label constraint."""

from __future__ import annotations

from finetune_pipeline.lib.evaluation.metrics.base import Answers, Metric
from finetune_pipeline.lib.evaluation.metrics.classification import NAMES, classification_metrics


class ConstrainedClassification(Metric):
    """Only when eval.classification.constrained ran (transformers backend)."""

    names = tuple(f"constrained/{n}" for n in NAMES)

    def scores(self, answers: Answers) -> dict[str, float]:
        c = answers.classification
        if c is None or c.constrained is None:
            return {}
        return {f"constrained/{k}": v for k, v in
                classification_metrics(c.constrained, answers.expected, c.field, c.labels).items()}
