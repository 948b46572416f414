"""exact_match: the answer is the expected output."""

from __future__ import annotations

from finetune_pipeline.lib.data.json_output import parse_json_object
from finetune_pipeline.lib.evaluation.metrics.base import RowMetric


class ExactMatch(RowMetric):
    name = "exact_match"

    def passes(self, prediction: str, expected: str) -> bool:
        pred, exp = parse_json_object(prediction), parse_json_object(expected)
        if pred is not None and exp is not None:
            return pred == exp  # dict equality ignores key order and formatting
        return prediction.strip() == expected.strip()
