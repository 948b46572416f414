"""Score one model version's predictions on the eval set and write the report.

Generation itself is the eval backend's job (`finetune_pipeline.lib.evaluation.backends`);
the same scoring covers every backend and every kind of version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.evaluation.generate import strip_assistant
from finetune_pipeline.lib.evaluation.metrics import (
    aggregate,
    expected_fields,
    score_example,
)


def score(records: list[dict[str, Any]], predictions: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if len(records) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} eval records")
    expected = [r["messages"][-1]["content"] for r in records]
    fields = expected_fields(expected)
    scores = [score_example(p, e, fields) for p, e in zip(predictions, expected)]
    rows = [
        {"line": i + 1, "input": strip_assistant(r["messages"])[-1]["content"], "expected": e,
         "prediction": p, **s}
        for i, (r, e, p, s) in enumerate(zip(records, expected, predictions, scores))
    ]
    return {"metrics": aggregate(scores, fields), "fields": fields}, rows


def write_predictions(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_predictions(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
