"""Scoring of structured (JSON) model outputs against expected outputs.

Pure Python on purpose: the same functions score baseline, fine-tuned and
remote-model outputs, and the tests need no model to exercise them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence


def parse_json_object(text: str) -> dict | None:
    """Return the JSON object in `text`, or None if it is not exactly one.

    No fence stripping or repair: we measure what the model actually emits.
    """
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def score_example(prediction: str, expected: str, fields: Sequence[str]) -> dict:
    """Score one prediction: validity, exact match and per-field correctness."""
    pred = parse_json_object(prediction)
    exp = parse_json_object(expected)
    if pred is not None and exp is not None:
        # Dict equality ignores key order and formatting.
        exact = pred == exp
    else:
        exact = prediction.strip() == expected.strip()
    exp_obj = exp or {}
    return {
        "valid_json": pred is not None,
        "exact_match": exact,
        "fields": {f: pred is not None and pred.get(f) == exp_obj.get(f) for f in fields},
    }


def expected_fields(expected_outputs: Iterable[str]) -> list[str]:
    """Sorted union of keys over the expected outputs that are JSON objects."""
    keys: set[str] = set()
    for text in expected_outputs:
        obj = parse_json_object(text)
        if obj is not None:
            keys.update(obj)
    return sorted(keys)


def aggregate(scores: Sequence[dict], fields: Iterable[str]) -> dict[str, float]:
    """Average `score_example` results into fractions in [0, 1]."""
    n = len(scores)

    def frac(count: int) -> float:
        return count / n if n else 0.0

    result: dict[str, float] = {
        "n": n,
        "exact_match": frac(sum(s["exact_match"] for s in scores)),
        "valid_json": frac(sum(s["valid_json"] for s in scores)),
    }
    for f in fields:
        result[f"accuracy/{f}"] = frac(sum(s["fields"].get(f, False) for s in scores))
    return result


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(
    rows: Mapping[str, Mapping[str, float]], metrics: Sequence[str] | None = None
) -> str:
    """Render {version: {metric: value}} as a GitHub markdown table."""
    if metrics is None:
        first = next(iter(rows.values()), {})
        metrics = [k for k in first if k != "n"]
        if "n" in first:
            metrics.append("n")
    header = ["version", *metrics]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for version, values in rows.items():
        cells = [version, *(_fmt(values.get(m, "")) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
