"""likelihood/accuracy, macro_f1, top3_accuracy: the label set ranked by the model's likelihood of each label.

Every answer is a known label here, so there is no valid_label; top-3 accuracy
is the share of rows whose gold label is among the three most likely.
"""

from __future__ import annotations

from finetune_pipeline.lib.evaluation.confusion import gold_and_predicted
from finetune_pipeline.lib.evaluation.metrics.base import Answers, Metric, share
from finetune_pipeline.lib.evaluation.metrics.classification import classification_metrics

TOP_K = 3


class LikelihoodClassification(Metric):
    """Only when eval.classification.scoring includes likelihood (transformers backend)."""

    names = ("likelihood/accuracy", "likelihood/macro_f1", f"likelihood/top{TOP_K}_accuracy")

    def scores(self, answers: Answers) -> dict[str, float]:
        c = answers.classification
        if c is None or c.ranked is None:
            return {}
        values = classification_metrics(c.likelihood, answers.expected, c.field, c.labels)
        gold, _ = gold_and_predicted(answers.expected, c.likelihood, c.field, c.labels)
        return {"likelihood/accuracy": values["accuracy"], "likelihood/macro_f1": values["macro_f1"],
                f"likelihood/top{TOP_K}_accuracy": share(g in top[:TOP_K] for g, top in zip(gold, c.ranked))}
