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

from finetune_pipeline.lib.evaluation.significance import ConfidenceInterval, PairedTest
from finetune_pipeline.lib.reporting.markdown import fmt, markdown_table, with_interval
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
    # Measured per request: a single request's latency (p50, p95) and the tokens sent and generated.
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    prompt_tokens: float | None = None
    completion_tokens: float | None = None
    intervals: dict[str, ConfidenceInterval] = Field(default_factory=dict)  # 95% bootstrap, by metric
    fine_tuned: bool = False  # trained on the task (the verdict weighs it against the prompting baselines)
    chosen_by: str | None = None  # how a sweep chose it on the val split (stages/sweep.py::chosen_by), if one did
    general_key: str | None = None  # its general_eval artifact, whose metrics are the general/... columns
    general_note: str | None = None  # why it has no general/... metrics
    rank: int = 0


class Leaderboard(BaseModel):
    eval_set: str
    eval_set_rows: int | None = None
    primary_metric: str
    metrics: list[str] = Field(default_factory=list)  # columns: the primary metric first
    rows: list[LeaderboardRow] = Field(default_factory=list)  # best first
    missing: dict[str, str] = Field(default_factory=dict)  # version -> why it is not ranked
    suites: dict[str, str] = Field(default_factory=dict)  # suite -> its artifact key (task: the eval set)
    # The best fine-tuned version against the best prompting baseline on the primary metric, and the verdict.
    comparison: PairedTest | None = None
    verdict: list[str] = Field(default_factory=list)

    @classmethod
    def ranked(cls, eval_set: str, eval_set_rows: int | None, primary_metric: str, rows: list[LeaderboardRow],
               missing: dict[str, str], suites: dict[str, str] | None = None) -> "Leaderboard":
        """Rows sorted by the primary metric, best first (ties by version key); a missing score ranks last."""
        rows = sorted(rows, key=lambda r: (-_value(r.metrics.get(primary_metric)), r.version))
        for i, row in enumerate(rows, 1):
            row.rank = i
        # The primary metric first, the task suite's other metrics, then the general suite's.
        metric_names = sorted({m for r in rows for m in r.metrics if m != "n"},
                              key=lambda m: (m != primary_metric, m.startswith("general/"), m))
        return cls(eval_set=eval_set, eval_set_rows=eval_set_rows, primary_metric=primary_metric,
                   metrics=metric_names, rows=rows, missing=missing, suites=suites or {})

    def best_of(self, fine_tuned: bool) -> LeaderboardRow | None:
        """The best-ranked fine-tuned version, or the best prompting baseline (base or prompted)."""
        return next((r for r in self.rows if r.fine_tuned == fine_tuned), None)

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
        head = ["rank", "version", "kind", *self.metrics, "n", "latency p50 s", "p95 s", "tokens in/out",
                "s/request", "$/1k requests", "eval device", "train s", "tokens trained", "train device",
                "device-h", "est. $"]
        lines = [markdown_table(head, ([r.rank, r.version, f"{r.kind} ({r.chosen_by})" if r.chosen_by else r.kind,
                                        *(with_interval(r.metrics.get(m), r.intervals.get(m)) for m in self.metrics),
                                        r.metrics.get("n", ""), fmt(r.latency_p50_s, 3), fmt(r.latency_p95_s, 3),
                                        f"{fmt(r.prompt_tokens, 0)}/{fmt(r.completion_tokens, 0)}",
                                        fmt(r.seconds_per_request, 3), fmt(r.usd_per_1k_requests, 4),
                                        r.inference_device, fmt(r.train_seconds, 1), r.tokens_trained, r.device,
                                        fmt(r.device_hours, 4), fmt(r.cost_usd, 4)]
                                       for r in self.rows))]
        lines.append(f"\n*suites: {', '.join(f'{k} {v}' for k, v in self.suites.items()) or self.eval_set}; "
                     "[low, high]: 95% bootstrap interval; general/...: nats per token on the general suite "
                     "(drift, nll_delta: the change from the version's base model); latency: one request alone; "
                     "s/request and $/1k requests: batched throughput on the eval device, or tokens x the API "
                     "price*")
        for key, why in self.missing.items():
            lines.append(f"\n*{key}: {why}*")
        for r in self.rows:  # why a cost or a suite is missing, under the table
            lines += [f"\n*{r.version}: {note}*" for note in (r.cost_note, r.inference_note, r.general_note) if note]
        if self.verdict:
            lines.append("\n**Verdict**\n")
            lines += [f"- {line}" for line in self.verdict]
        return "\n".join(lines)

    def save(self, folder: Path) -> None:
        (Path(folder) / FILE).write_text(self.model_dump_json(indent=2) + "\n")
        (Path(folder) / "leaderboard.md").write_text(self.markdown() + "\n")

    @classmethod
    def load(cls, folder: Path) -> "Leaderboard":
        return cls.model_validate_json((Path(folder) / FILE).read_text())


def _value(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(v) else -math.inf
