"""Promotion's guards: a challenger must be better with the configured confidence (a paired test on the eval
rows, its p-value in the history) and must not forget more than promotion.max_forgetting on the general suite."""

from __future__ import annotations

from finetune_pipeline.lib.evaluation.metrics import Answers
from finetune_pipeline.lib.evaluation.resampling import compare
from finetune_pipeline.lib.versions.leaderboard import Leaderboard, LeaderboardRow
from finetune_pipeline.lib.versions.promotion import Guards, PromotionStore, decide

N = 71  # the demo's test split
RIGHT, WRONG = '{"category": "billing"}', '{"category": "shipping"}'


def _answers(right: int) -> Answers:
    """71 rows of which the first `right` are answered correctly."""
    return Answers([RIGHT] * right + [WRONG] * (N - right), [RIGHT] * N, ["category"])


def _board(scores: dict[str, int], drift: dict[str, float] | None = None) -> Leaderboard:
    rows = [LeaderboardRow(version=v, kind="lora_merged", metrics={"exact_match": right / N, "n": N,
                                                                   **({"general/drift": drift[v]} if drift else {})},
                           eval_key=v, eval_path=v) for v, right in scores.items()]
    return Leaderboard.ranked("es", N, "exact_match", rows, {})


def _tests(scores: dict[str, int], champion: str) -> dict:
    return {v: compare(_answers(right), _answers(scores[champion]), "exact_match")
            for v, right in scores.items() if v != champion}


def test_a_difference_inside_the_noise_is_not_promoted_however_it_beats_the_margin(tmp_path):
    scores = {"champ": 30, "lucky": 31}  # one row of 71: +0.014, more than the 0.01 margin
    board = _board(scores)
    tests = _tests(scores, "champ")
    assert tests["lucky"].p_value == 0.5 and tests["lucky"].method == "mcnemar-exact"
    # The margin alone would promote it ...
    assert decide(board, "champ", {}, 0.01).champion == "lucky"
    # ... the paired test at 95% does not.
    d = decide(board, "champ", {}, 0.01, tests, Guards(confidence=0.95))
    assert not d.promoted and d.champion == "champ"
    assert any("lucky" in r and "not better with 95% confidence" in r and "p = 0.5" in r for r in d.reasons)
    store = PromotionStore(tmp_path)
    store.record(d, None)
    assert store.history()[-1]["confidence"] == 0.95 and "p = 0.5" in " ".join(store.history()[-1]["reasons"])


def test_a_clearly_better_challenger_is_promoted_and_the_history_has_its_p_value(tmp_path):
    scores = {"champ": 30, "better": 50}
    d = decide(_board(scores), "champ", {}, 0.01, _tests(scores, "champ"), Guards(confidence=0.95))
    assert d.promoted and d.champion == "better"
    assert d.test["p_value"] < 1e-5 and d.test["discordant"] == [20, 0]
    store = PromotionStore(tmp_path)
    store.record(d, None)
    entry = store.history()[-1]
    assert entry["test"]["p_value"] == d.test["p_value"] and "one-sided p = " in entry["reasons"][-1]


def test_a_better_challenger_that_forgets_beyond_max_forgetting_is_not_promoted(tmp_path):
    scores = {"champ": 30, "forgetful": 60, "steady": 50}
    drift = {"champ": 0.1, "forgetful": 0.9, "steady": 0.2}
    guards = Guards(confidence=0.95, max_forgetting=0.5)
    d = decide(_board(scores, drift), "champ", {}, 0.01, _tests(scores, "champ"), guards)
    # The best on the task forgets too much; the next one, also clearly better and steady, is promoted.
    assert d.champion == "steady"
    assert any("forgetful: forgets too much: general/drift 0.9000 > max_forgetting 0.5" in r for r in d.reasons)
    alone = {"champ": 30, "forgetful": 60}
    d = decide(_board(alone, drift), "champ", {}, 0.01, _tests(alone, "champ"), guards)
    assert not d.promoted and d.champion == "champ"
    # Without a general-suite measure it is not promoted either while the guard is on.
    d = decide(_board(alone), "champ", {}, 0.01, _tests(alone, "champ"), guards)
    assert not d.promoted and any("has no general/drift" in r for r in d.reasons)
    # The first champion is guarded too.
    d = decide(_board({"forgetful": 60}, drift), None, {}, 0.01, {}, guards)
    assert not d.promoted


def test_without_a_paired_test_a_challenger_is_not_promoted_while_confidence_is_set():
    d = decide(_board({"champ": 30, "better": 50}), "champ", {}, 0.01, {}, Guards(confidence=0.95))
    assert not d.promoted and any("no paired test" in r for r in d.reasons)


def test_fast_bootstrap_gives_what_recomputing_every_metric_on_each_resample_gives():
    import json
    import random

    import numpy as np

    from finetune_pipeline.lib.evaluation.metrics import Classification, scores
    from finetune_pipeline.lib.evaluation.resampling import intervals, subset

    labels = [f"intent_{i}" for i in range(12)]
    rng = random.Random(3)
    expected = [json.dumps({"category": labels[i % 12]}) for i in range(120)]
    predicted = [json.dumps({"category": labels[i % 12] if rng.random() < 0.6 else rng.choice(labels)})
                 if rng.random() < 0.9 else "not json" for i in range(120)]
    answers = Answers(predicted, expected, ["category"], Classification("category", labels, None))
    fast = intervals(answers, resamples=200, seed=5)
    # The slow definition: every metric recomputed (sklearn) on the same resampled rows.
    draws = np.random.default_rng(5).integers(0, 120, (200, 120))
    slow = {}
    for idx in draws:
        for name, value in scores(subset(answers, idx.tolist())).items():
            slow.setdefault(name, []).append(value)
    for name, ci in fast.items():
        assert ci.low == round(float(np.percentile(slow[name], 2.5)), 4), name
        assert ci.high == round(float(np.percentile(slow[name], 97.5)), 4), name
    assert "classification/macro_f1" in fast and "exact_match" in fast
