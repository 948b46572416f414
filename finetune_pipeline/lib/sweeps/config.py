"""The `sweep:` section of the run config: train settings to try, and how the winner is chosen."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from finetune_pipeline.lib.evaluation import metrics
from finetune_pipeline.lib.section import Section

EVAL_LOSS = "eval_loss"
VAL_PREFIX = "val/"
MAX_POINTS = 64  # a sweep is a handful of trainings; a typo in a grid must not queue a thousand
EXTRA_PASSES = ("constrained", "likelihood")
POINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SweepConfig(Section):
    """Several trainings of the same base model on the same data, each a model version; the best on the val split
    wins, and only the winner is evaluated on the test split (unless evaluate_on_test says all)."""

    grid: dict[str, list[Any]] = Field(
        {}, description="Train settings by name (learning_rate, epochs, lora.r, lora.alpha, lora.target_modules, "
                        "general_mix_ratio, any train field but runner and pod) -> the values to try; every "
                        "combination is a point.")
    points: list[dict[str, Any]] = Field(
        [], description="Points given one by one, each a partial train section (e.g. {learning_rate: 1e-3, lora: "
                        "{r: 16}}) with an optional name; added to the grid's points.")
    select_by: str = Field(
        EVAL_LOSS, description="What chooses the winner, on the val split only: eval_loss (the adapter's best eval "
                               "loss, recorded by training; lower wins) or val/<metric> (a metric of the eval report "
                               "computed on the val split, e.g. val/exact_match, val/accuracy/intent; higher wins).")
    val_rows: int = Field(0, ge=0, description="With select_by val/<metric>: score only the first this many val rows "
                                               "(0 = all).")
    evaluate_on_test: Literal["winner", "all"] = Field(
        "winner", description="Which points' model versions are added for evaluation on the test split: the winner "
                              "alone (the others stay registered, evaluated on demand) or all of them.")

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = sorted(k for k, values in grid.items() if not values)
        if empty:
            raise ValueError(f"has no values to try for {empty}; list at least one value per setting")
        return grid

    @field_validator("select_by")
    @classmethod
    def _select_by(cls, value: str) -> str:
        metric = value[len(VAL_PREFIX):] if value.startswith(VAL_PREFIX) else ""
        # The val eval generates freely (greedy); the extra scoring passes are not run on val.
        if value == EVAL_LOSS or (metrics.known_metric(metric) and metric.split("/")[0] not in EXTRA_PASSES):
            return value
        raise ValueError("must be eval_loss or val/<metric> with a metric of free generation the eval reports "
                         "(val/exact_match, val/valid_json, val/accuracy/<field>, val/classification/<metric>) "
                         "(got another string)")

    @property
    def enabled(self) -> bool:
        return bool(self.grid or self.points)

    @property
    def lower_is_better(self) -> bool:
        return self.select_by == EVAL_LOSS

    @property
    def val_metric(self) -> str | None:
        """The eval metric scored on the val split (select_by val/<metric>), or None for eval_loss."""
        return self.select_by[len(VAL_PREFIX):] if self.select_by.startswith(VAL_PREFIX) else None
