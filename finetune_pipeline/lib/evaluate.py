"""Evaluate one model version on the test split: generate, score, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune_pipeline.lib.base_models import load_model, load_tokenizer
from finetune_pipeline.lib.cleaning import read_split
from finetune_pipeline.lib.generate import generate_batched, strip_assistant
from finetune_pipeline.lib.metrics import aggregate, expected_fields, score_example


def evaluate_model_dir(model_dir: Path, test_file: Path, *, max_new_tokens: int, batch_size: int,
                       limit: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records = read_split(test_file)
    if limit:
        records = records[:limit]
    if not records:
        raise ValueError(f"{test_file}: the test split is empty; nothing to evaluate")
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    predictions = generate_batched(model, tokenizer, [r["messages"] for r in records],
                                   max_new_tokens=max_new_tokens, batch_size=batch_size)
    return score(records, predictions)


def score(records: list[dict[str, Any]], predictions: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
