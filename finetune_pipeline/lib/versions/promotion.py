"""Champion/challenger promotion by rule, with a kept history.

A challenger replaces the champion only if it beats the champion's primary
metric by more than the configured margin, on the same eval set; a paired test
on the eval rows says it is better with the configured confidence (the p-value
is in the history); it has not forgotten more than `max_forgetting` on the
general suite; and every blocking check of the asset that produced it passed. The current champion is
`<artifacts_root>/promotion/champion.json`; every decision is appended to
`<artifacts_root>/promotion/history.jsonl`.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_pipeline.lib.evaluation.significance import PairedTest, better_with_confidence
from finetune_pipeline.lib.storage.state_files import StateFiles
from finetune_pipeline.lib.versions.leaderboard import Leaderboard
from finetune_pipeline.lib.versions.version import ModelVersion

if TYPE_CHECKING:
    from finetune_pipeline.lib.storage.object_store import RemoteArtifacts

PROMOTION_DIR = "promotion"

# version -> {check name: True (passed) | False (failed) | None (never ran)}
Checks = dict[str, dict[str, bool | None]]


@dataclass
class Decision:
    champion: str | None  # after this decision
    previous: str | None
    promoted: bool
    primary_metric: str
    margin: float
    eval_set: str
    scores: dict[str, float | None] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    decided_at: str = ""
    run_id: str | None = None
    confidence: float = 0.0
    # The promoted challenger's paired test against the champion it replaced (p-value, method, rows).
    test: dict[str, Any] | None = None


@dataclass(frozen=True)
class Guards:
    """What a challenger must also pass: the paired test at `confidence`, and the forgetting limit."""

    confidence: float = 0.0  # 0: no test, the margin alone
    max_forgetting: float | None = None
    forgetting_metric: str = "general/drift"


def decide(board: Leaderboard, current: str | None, checks: Checks, margin: float,
           tests: Mapping[str, PairedTest] | None = None, guards: Guards = Guards()) -> Decision:
    """Pick the champion from a ranked leaderboard (pure: no files, no Dagster).

    `tests`: each challenger's paired test against the current champion on the primary metric (a challenger
    without one is not promoted while guards.confidence is set).
    """
    metric = board.primary_metric
    scores = board.scores()
    tests = tests or {}
    decision = Decision(champion=current, previous=current, promoted=False, primary_metric=metric, margin=margin,
                        eval_set=board.eval_set, scores=scores, confidence=guards.confidence)
    reasons = decision.reasons
    champion_score = scores.get(current) if current else None
    if current and champion_score is None:
        reasons.append(f"champion {current} has no {metric} on eval set {board.eval_set}; "
                       "no promotion until it is evaluated there (finetune-pipeline backfill-evals)")
        return decision
    for row in board.rows:  # best first
        version, score = row.version, scores[row.version]
        if version == current:
            continue
        if score is None:
            reasons.append(f"{version}: its eval has no {metric}")
            continue
        if current is not None and not score > champion_score + margin:
            reasons.append(f"{version}: {metric} {score:.4f} does not beat champion {current} "
                           f"({champion_score:.4f}) by more than {margin}")
            break  # ranked: nobody below beats it either
        test = tests.get(version)
        if current is not None and guards.confidence > 0:
            if test is None:
                reasons.append(f"{version}: no paired test against champion {current} on {metric}, so it is not "
                               f"shown better with {guards.confidence:.0%} confidence")
                continue
            if not better_with_confidence(test, guards.confidence):
                reasons.append(f"{version}: {metric} {score:.4f} vs champion {current} ({champion_score:.4f}) is "
                               f"not better with {guards.confidence:.0%} confidence: one-sided p = "
                               f"{test.p_value:.3g} >= {1 - guards.confidence:.3g} ({test.method}, {test.n} rows)")
                continue
        if guards.max_forgetting is not None:
            forgot = row.metrics.get(guards.forgetting_metric)
            if forgot is None:
                reasons.append(f"{version}: promotion.max_forgetting is set and it has no {guards.forgetting_metric} "
                               "(general_eval missing or not measurable)")
                continue
            if forgot > guards.max_forgetting:
                reasons.append(f"{version}: forgets too much: {guards.forgetting_metric} {forgot:.4f} > "
                               f"max_forgetting {guards.max_forgetting} (nats/token on the general suite)")
                continue
        not_passed = {name: ok for name, ok in checks.get(version, {}).items() if ok is not True}
        if not_passed:
            reasons.append(f"{version}: blocking check(s) " + ", ".join(
                f"{name} {'failed' if ok is False else 'never ran'}" for name, ok in sorted(not_passed.items())))
            continue
        decision.champion, decision.promoted = version, True
        significance = ""
        if current is not None and test is not None:
            decision.test = test.model_dump(mode="json")
            significance = f", one-sided p = {test.p_value:.3g} ({test.method}, {test.n} rows)"
        reasons.append(f"{version} promoted: {metric} {score:.4f}" + (
            f" beats {current} ({champion_score:.4f}) by {score - champion_score:.4f} > {margin}{significance}"
            if current else " (first champion)"))
        break
    if not decision.promoted and not reasons:
        reasons.append("no challenger: the champion is the only evaluated version" if current
                       else "no evaluated version to promote")
    return decision


class PromotionStore:
    """champion.json and history.jsonl; with `remote`, the bucket's copies are the record."""

    CHAMPION, HISTORY = f"{PROMOTION_DIR}/champion.json", f"{PROMOTION_DIR}/history.jsonl"

    def __init__(self, artifacts_root: Path, remote: "RemoteArtifacts | None" = None):
        self.files = StateFiles(artifacts_root, remote)
        self.history_file = Path(artifacts_root) / self.HISTORY  # the local copy, shown in the UI

    def champion(self) -> dict[str, Any] | None:
        text = self.files.read(self.CHAMPION)
        return json.loads(text) if text is not None else None

    def history(self) -> list[dict[str, Any]]:
        text = self.files.read(self.HISTORY) or ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def record(self, decision: Decision, version: ModelVersion | None) -> None:
        """Append the decision (unless it repeats the last one) and move the champion on promotion."""
        decision.decided_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        entry = asdict(decision)
        history = self.history()
        if history and _same(history[-1], entry) and not decision.promoted:
            return  # the automation re-ran with nothing new: don't grow the log
        if decision.promoted:
            state = {"version": decision.champion, "since": decision.decided_at,
                     "manifest": version.model_dump(mode="json") if version else None,
                     "score": decision.scores.get(decision.champion), "primary_metric": decision.primary_metric,
                     "eval_set": decision.eval_set, "previous": decision.previous, "run_id": decision.run_id}
            self.files.write(self.CHAMPION, json.dumps(state, indent=2) + "\n")  # readers see old or new
        self.files.append(self.HISTORY, json.dumps(entry) + "\n")


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    ignore = {"decided_at", "run_id"}
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}
