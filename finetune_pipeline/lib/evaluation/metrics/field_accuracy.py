"""accuracy/<field>: the answer is JSON and has the expected value for each key of the expected outputs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from finetune_pipeline.lib.data.json_output import parse_json_object
from finetune_pipeline.lib.evaluation.metrics.base import Answers, Metric, share


def expected_fields(expected_outputs: Iterable[str]) -> list[str]:
    """Sorted union of keys over the expected outputs that are JSON objects."""
    keys: set[str] = set()
    for text in expected_outputs:
        obj = parse_json_object(text)
        if obj is not None:
            keys.update(obj)
    return sorted(keys)


def field_hits(prediction: str, expected: str, fields: Sequence[str]) -> dict[str, bool]:
    """Per field: right value; unparseable output gets no credit, even for a field the expected output lacks."""
    pred, exp = parse_json_object(prediction), parse_json_object(expected) or {}
    return {f: pred is not None and pred.get(f) == exp.get(f) for f in fields}


class FieldAccuracy(Metric):
    prefix = "accuracy/"

    def row_scores(self, prediction: str, expected: str, answers: Answers) -> dict[str, Any]:
        return {"fields": field_hits(prediction, expected, answers.fields)}

    def scores(self, answers: Answers) -> dict[str, float]:
        hits = [field_hits(p, e, answers.fields) for p, e in answers.pairs()]
        return {f"accuracy/{f}": share(h[f] for h in hits) for f in answers.fields}
