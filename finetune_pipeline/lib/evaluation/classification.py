"""A classifier's label set: where it comes from, and the exact answers it allows.

The scores are metrics (lib/evaluation/metrics/classification.py and
constrained.py); the confusion matrix is lib/evaluation/confusion.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from finetune_pipeline.lib.data.json_output import label_of


def load_labels(labels_file: Path | None, train_records: Sequence[dict[str, Any]], field: str) -> list[str]:
    """The label set: a JSON list from `labels_file`, else the labels seen in the training split."""
    if labels_file is not None:
        try:
            labels = json.loads(Path(labels_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"eval.classification.labels_file {labels_file}: cannot read a JSON list of labels: {e}") from e
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"eval.classification.labels_file {labels_file}: expected a non-empty JSON list of strings")
        return sorted(set(labels))
    seen = {label_of(r["messages"][-1]["content"], field) for r in train_records}
    seen.discard(None)
    if not seen:
        raise ValueError(f"eval.classification.field {field!r}: no training output has that field; set labels_file")
    return sorted(seen)


def allowed_outputs(field: str, labels: Sequence[str]) -> list[str]:
    """The exact answers a classifier may give: rendered as the table mapping renders training outputs."""
    return [json.dumps({field: label}, ensure_ascii=False) for label in labels]
