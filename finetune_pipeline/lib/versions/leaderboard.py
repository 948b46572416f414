"""The leaderboard: every model version x metric on one eval set, with cost and time, ranked.

Only evals on the *current* eval set and eval settings count (the stage that
builds it looks each version's eval up by the key the current config gives
it), so a stale report (old test split, other backend) is never ranked next to
a fresh one; such versions are listed as missing instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from finetune_pipeline.lib.reporting.markdown import fmt, markdown_table
from finetune_pipeline.lib.versions.costs import VersionCost

FILE = "leaderboard.json"


class LeaderboardRow(VersionCost):
    """One evaluated version: its metrics on the eval set, where the eval is, and what the version cost."""

    version: str
    kind: str
    metrics: dict[str, float | int]
    fields: list[str] = Field(default_factory=list)  # the JSON answer's fields, for the confusion matrix
    eval_key: str
    eval_path: str
    backend: str | None = None
    # Inference: the device that evaluated, the eval's seconds per request and USD per 1,000 requests on it.
    inference_device: str | None = None
    seconds_per_request: float | None = None
    usd_per_1k_requests: float | None = None
    inference_note: str | None = None  # why usd_per_1k_requests is unknown
    rank: int = 0


class Leaderboard(BaseModel):
    eval_set: str
    eval_set_rows: int | None = None
    primary_metric: str
    metrics: list[str] = Field(default_factory=list)  # columns: the primary metric first
    rows: list[LeaderboardRow] = Field(default_factory=list)  # best first
    missing: dict[str, str] = Field(default_factory=dict)  # version -> why it is not ranked

    @classmethod
    def ranked(cls, eval_set: str, eval_set_rows: int | None, primary_metric: str, rows: list[LeaderboardRow],
               missing: dict[str, str]) -> "Leaderboard":
        """Rows sorted by the primary metric, best first (ties by version key); a missing score ranks last."""
        rows = sorted(rows, key=lambda r: (-_value(r.metrics.get(primary_metric)), r.version))
        for i, row in enumerate(rows, 1):
            row.rank = i
        metric_names = sorted({m for r in rows for m in r.metrics if m != "n"},
                              key=lambda m: (m != primary_metric, m))
        return cls(eval_set=eval_set, eval_set_rows=eval_set_rows, primary_metric=primary_metric,
                   metrics=metric_names, rows=rows, missing=missing)

    def best(self) -> LeaderboardRow | None:
        return self.rows[0] if self.rows else None

    def scores(self) -> dict[str, float | None]:
        return {r.version: r.metrics.get(self.primary_metric) for r in self.rows}

    def confusion_field(self, configured: str) -> str | None:
        """The field whose confusion matrix to draw for the best version."""
        top = self.best()
        if top is None or not top.fields:
            return None
        if configured:
            return configured
        if self.primary_metric.startswith("accuracy/") and self.primary_metric.split("/", 1)[1] in top.fields:
            return self.primary_metric.split("/", 1)[1]
        return top.fields[0]

    def markdown(self) -> str:
        head = ["rank", "version", "kind", *self.metrics, "n", "eval set", "train s", "tokens trained",
                "train device", "device-h", "est. $", "eval device", "s/request", "$/1k requests"]
        lines = [markdown_table(head, ([r.rank, r.version, r.kind, *(r.metrics.get(m) for m in self.metrics),
                                        r.metrics.get("n", ""), self.eval_set, fmt(r.train_seconds, 1),
                                        r.tokens_trained, r.device, fmt(r.device_hours, 4), fmt(r.cost_usd, 4),
                                        r.inference_device, fmt(r.seconds_per_request, 3),
                                        fmt(r.usd_per_1k_requests, 4)]
                                       for r in self.rows))]
        for key, why in self.missing.items():
            lines.append(f"\n*{key}: {why}*")
        for r in self.rows:  # why a cost is unknown, under the table
            lines += [f"\n*{r.version}: {note}*" for note in (r.cost_note, r.inference_note) if note]
        return "\n".join(lines)

    def save(self, folder: Path) -> None:
        (Path(folder) / FILE).write_text(self.model_dump_json(indent=2) + "\n")
        (Path(folder) / "leaderboard.md").write_text(self.markdown() + "\n")

    @classmethod
    def load(cls, folder: Path) -> "Leaderboard":
        return cls.model_validate_json((Path(folder) / FILE).read_text())


def _value(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(v) else -math.inf
