"""valid_json: the answer is exactly one JSON object (no fences, no prose around it)."""

from __future__ import annotations

from finetune_pipeline.lib.data.json_output import parse_json_object
from finetune_pipeline.lib.evaluation.metrics.base import RowMetric


class ValidJson(RowMetric):
    name = "valid_json"

    def passes(self, prediction: str, expected: str) -> bool:
        return parse_json_object(prediction) is not None
