"""Confidence intervals of every eval metric, and the paired comparison of two versions on the same eval rows.

Both work from the per-row answers (`Answers`), so they hold for every registered metric alike: a metric's
value on a bootstrap resample is the metric recomputed on the resampled rows (macro-F1 included, which is not
a mean of rows). Where a metric is a mean of per-row values (exact match, valid JSON, a field's or a label's
accuracy) two versions are compared row by row with the exact tests of `significance.py` (McNemar for 0/1
rows); otherwise by a paired bootstrap of the metric's difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finetune_pipeline.lib.evaluation.confusion import INVALID, gold_and_predicted
from finetune_pipeline.lib.evaluation.metrics import Answers, Classification, scores
from finetune_pipeline.lib.evaluation.report import EvalReport
from finetune_pipeline.lib.evaluation.significance import ConfidenceInterval, PairedTest, paired_test

# Metrics that are the mean of one value per row: compared row by row (McNemar / permutation).
_MEAN_OF_ROWS = ("exact_match", "valid_json")
_MEAN_OF_ROWS_SUFFIX = ("/accuracy", "/valid_label", "/top3_accuracy")


def subset(answers: Answers, rows: Sequence[int]) -> Answers:
    """The same answers restricted to `rows` (indices, repeats allowed: a bootstrap resample)."""
    def pick(values):
        return [values[i] for i in rows]

    c = answers.classification
    c = None if c is None else c.subset(rows)
    return Answers(pick(answers.predictions), pick(answers.expected), answers.fields, c)


def intervals(answers: Answers, *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
              ) -> dict[str, ConfidenceInterval]:
    """A percentile-bootstrap interval for every metric `scores` reports (not `n`).

    Recomputing every metric on every resample cost 4 s a resample on 3,080 rows, so: a mean of rows is
    resampled from its per-row values, macro-F1 from the per-row (gold, predicted) labels; any other
    metric is recomputed on each resample.
    """
    n = len(answers.predictions)
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    draws_idx = rng.integers(0, n, (resamples, n))
    names = [name for name in scores(answers) if name != "n"]
    singles = [scores(subset(answers, [i])) for i in range(n)] if any(_mean_of_rows(m) for m in names) else []
    draws: dict[str, list[float]] = {}
    slow = []
    for name in names:
        if _mean_of_rows(name):
            values = np.array([float(s[name]) for s in singles])
            draws[name] = values[draws_idx].mean(axis=1).tolist()
        elif name.endswith("/macro_f1") and answers.classification is not None:
            draws[name] = _macro_f1_draws(answers, name.split("/", 1)[0], draws_idx)
        else:
            slow.append(name)
    for idx in draws_idx if slow else []:
        values = scores(subset(answers, idx.tolist()))
        for name in slow:
            draws.setdefault(name, []).append(float(values[name]))
    tail = (1 - confidence) / 2 * 100
    return {name: ConfidenceInterval(low=round(float(np.percentile(v, tail)), 4),
                                     high=round(float(np.percentile(v, 100 - tail)), 4),
                                     confidence=confidence, method=f"percentile bootstrap, {resamples} resamples")
            for name, v in draws.items()}


def _mean_of_rows(metric: str) -> bool:
    return metric in _MEAN_OF_ROWS or metric.startswith("accuracy/") or metric.endswith(_MEAN_OF_ROWS_SUFFIX)


def _macro_f1_draws(answers: Answers, family: str, draws_idx: np.ndarray) -> list[float]:
    """Macro-F1 on each resample from per-row label ids, as classification_metrics computes it (sklearn's macro
    F1 over the classes of the resample's gold labels, an answer outside the label set its own class)."""
    c = answers.classification
    predicted = c.answers_of(family, answers.predictions)
    gold, pred = gold_and_predicted(answers.expected, predicted, c.field, c.labels)
    ids = {label: i for i, label in enumerate(sorted(set(gold) | set(pred)))}
    g, p = np.array([ids[x] for x in gold]), np.array([ids[x] for x in pred])
    k, invalid = len(ids), ids.get(INVALID, -1)
    out = []
    for idx in draws_idx:
        gi, pi = g[idx], p[idx]
        tp = np.bincount(gi[gi == pi], minlength=k)
        gold_n, pred_n = np.bincount(gi, minlength=k), np.bincount(pi, minlength=k)
        present = gold_n > 0
        if invalid >= 0:
            present[invalid] = False
        f1 = 2 * tp[present] / (gold_n[present] + pred_n[present])
        out.append(float(f1.mean()) if f1.size else 0.0)
    return out


def row_values(answers: Answers, metric: str) -> list[float] | None:
    """Each row's value of `metric` where the metric is their mean; None for one that is not (macro-F1)."""
    if not _mean_of_rows(metric):
        return None
    values = [scores(subset(answers, [i])).get(metric) for i in range(len(answers.predictions))]
    return None if any(v is None for v in values) else [float(v) for v in values]


def compare(a: Answers, b: Answers, metric: str, *, confidence: float = 0.95, resamples: int = 2000,
            seed: int = 0) -> PairedTest:
    """Is `a` better than `b` on `metric`, over the same eval rows? One-sided (H1: a is better)."""
    if list(a.expected) != list(b.expected):
        raise ValueError("the two evals are not on the same rows (their expected outputs differ)")
    rows_a, rows_b = row_values(a, metric), row_values(b, metric)
    if rows_a is not None and rows_b is not None:
        return paired_test(rows_a, rows_b, confidence=confidence, seed=seed)
    return _paired_bootstrap(a, b, metric, confidence, resamples, seed)


def _paired_bootstrap(a: Answers, b: Answers, metric: str, confidence: float, resamples: int, seed: int
                      ) -> PairedTest:
    # The same resampled rows for both: the difference's spread, and how often it is not positive.
    n = len(a.predictions)
    value_a, value_b = float(scores(a)[metric]), float(scores(b)[metric])
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n).tolist()
        diffs.append(float(scores(subset(a, idx))[metric]) - float(scores(subset(b, idx))[metric]))
    diffs_arr = np.array(diffs)
    tail = (1 - confidence) / 2 * 100
    p = (1 + int(np.sum(diffs_arr <= 0))) / (1 + resamples)
    interval = ConfidenceInterval(low=float(np.percentile(diffs_arr, tail)),
                                  high=float(np.percentile(diffs_arr, 100 - tail)),
                                  confidence=confidence, method=f"paired bootstrap, {resamples} resamples")
    return PairedTest(a_mean=value_a, b_mean=value_b, difference=value_a - value_b, p_value=min(p, 1.0),
                      method="paired-bootstrap", n=n, discordant=None, interval=interval)


def load_answers(folder: Path) -> Answers:
    """A model_eval folder's answers, as the eval scored them (its label set and constrained answers too)."""
    report = EvalReport.load(folder, with_predictions=True)
    rows = report.predictions
    c = report.classification
    classification = None
    if c is not None and c.label_set:
        forced = [a.prediction for a in report.constrained_predictions] or None
        classification = Classification(c.field, c.label_set, forced, [a.top for a in report.ranked] or None)
    return Answers([r.prediction for r in rows], [r.expected for r in rows], report.fields, classification)
