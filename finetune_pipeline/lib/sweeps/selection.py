"""Choosing a sweep's winner from its points' validation results; the test split is never an input.

`PointResult.validation` holds what was measured on the val split only (the
adapter's best eval loss, or a metric of an eval on val.jsonl); there is no field
for a test-split number, so a test score cannot leak into the choice.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PointResult(BaseModel):
    """One trained point as the selection sees it."""

    name: str
    settings: dict[str, Any] = Field(description="the point's overrides of the train section (dotted names)")
    version: str = Field(description="its model version key")
    adapter: str = Field(description="its lora_adapter artifact key")
    train_seconds: float | None = None
    validation: dict[str, float | None] = Field(description="measured on the val split: eval_loss, val/<metric>")


class SweepSelection(BaseModel):
    """The outcome: every point's validation value, best first, and the winner."""

    select_by: str
    lower_is_better: bool
    winner: str
    winner_version: str
    ranking: list[str]  # point names, best first
    points: list[PointResult]

    def value(self, name: str) -> float | None:
        return next(p.validation.get(self.select_by) for p in self.points if p.name == name)


class SelectionError(ValueError):
    """A point has no value for select_by: nothing honest can be chosen."""


def select(results: list[PointResult], select_by: str, lower_is_better: bool) -> SweepSelection:
    """The best point by `select_by`; a tie goes to the point declared first, so the choice is reproducible."""
    if not results:
        raise SelectionError("the sweep has no points")
    missing = [r.name for r in results if r.validation.get(select_by) is None]
    if missing:
        hint = (" (training records it only when the dataset has a val split: set data.val_fraction > 0)"
                if select_by == "eval_loss" else "")
        raise SelectionError(f"sweep.select_by {select_by}: no value for point(s) {missing}{hint}")
    order = {r.name: i for i, r in enumerate(results)}
    sign = 1.0 if lower_is_better else -1.0
    ranked = sorted(results, key=lambda r: (sign * float(r.validation[select_by]), order[r.name]))
    return SweepSelection(select_by=select_by, lower_is_better=lower_is_better, winner=ranked[0].name,
                          winner_version=ranked[0].version, ranking=[r.name for r in ranked], points=results)
