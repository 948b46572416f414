"""The one confusion matrix: counts of (expected, predicted) values of one field of the JSON output.

model_eval draws it for the classification field (and stores it in its
report); the leaderboard reads that one, or computes it with this same
function for another field, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from finetune_pipeline.lib.data.json_output import label_of

INVALID = "<invalid>"  # with a label set: an answer that is no known label (or no answer at all)
NO_VALUE = "(none)"  # without one: the output was not JSON or lacked the field


class ConfusionMatrix(BaseModel):
    """matrix[i][j]: rows whose expected value is labels[i] and predicted value labels[j]."""

    labels: list[str]
    matrix: list[list[int]]


def gold_and_predicted(expected: Sequence[str], predicted: Sequence[str], field: str,
                       labels: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Each row's expected and predicted value of `field`.

    With `labels` (a classifier's label set) a predicted value outside it, or
    none, is INVALID, and so is a missing expected value; an expected value is
    kept as it is even when the set lacks it. Without a label set every value
    is its own class and a missing one is NO_VALUE.
    """
    if labels is None:
        def values(outputs: Sequence[str]) -> list[str]:
            return [NO_VALUE if (v := label_of(o, field)) is None else v for o in outputs]

        return values(expected), values(predicted)
    known = set(labels)
    return ([label_of(e, field) or INVALID for e in expected],
            [v if (v := label_of(p, field)) in known else INVALID for p in predicted])


def confusion_matrix(expected: Sequence[str], predicted: Sequence[str], field: str,
                     labels: Sequence[str] | None = None) -> ConfusionMatrix:
    """The counts for one field, given the expected and predicted outputs (JSON text) row by row.

    `labels`: a classifier's label set (see `gold_and_predicted`). The axis: expected
    values sorted, then values only ever predicted, sorted, then INVALID or
    NO_VALUE last when they occur.
    """
    from sklearn.metrics import confusion_matrix as counts

    gold, pred = gold_and_predicted(expected, predicted, field, labels)
    markers = {INVALID, NO_VALUE}
    seen = sorted(set(gold) - markers)
    axis = seen + sorted(set(pred) - markers - set(seen)) + sorted(markers & (set(gold) | set(pred)))
    matrix = counts(gold, pred, labels=axis).tolist() if gold else [[0] * len(axis) for _ in axis]
    return ConfusionMatrix(labels=axis, matrix=matrix)
