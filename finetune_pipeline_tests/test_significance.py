"""Bootstrap intervals and the paired test (lib/evaluation/significance.py), checked against independent maths."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from finetune_pipeline.lib.evaluation.significance import (
    MCNEMAR,
    PERMUTATION,
    better_with_confidence,
    bootstrap_ci,
    bootstrap_mean_ci,
    paired_test,
)


def _rows(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[list[int], list[int]]:
    """Per-row 0/1 results of two models with the given discordant and concordant counts."""
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    return a, b


def _binomial_upper_tail(at_least: int, trials: int) -> Fraction:
    """P(X >= at_least), X ~ Binomial(trials, 1/2), by Pascal's triangle in exact fractions (no math.comb)."""
    probabilities = [Fraction(1)]
    for _ in range(trials):  # one more fair coin: convolve with [1/2, 1/2]
        probabilities = [(left + right) / 2 for left, right in zip([Fraction(0)] + probabilities,
                                                                   probabilities + [Fraction(0)])]
    return sum(probabilities[at_least:], Fraction(0))


@pytest.mark.parametrize("a_only,b_only", [(1, 0), (3, 0), (5, 5), (7, 2), (1, 9), (20, 0), (30, 25)])
def test_mcnemar_p_value_is_the_exact_binomial_tail(a_only, b_only):
    a, b = _rows(a_only, b_only, both=4, neither=3)
    test = paired_test(a, b)
    assert test.method == MCNEMAR
    assert test.discordant == (a_only, b_only)
    assert test.p_value == pytest.approx(float(_binomial_upper_tail(a_only, a_only + b_only)), rel=1e-12)


def test_mcnemar_classic_example_and_concordant_rows_do_not_matter():
    a, b = _rows(10, 2)
    bare = paired_test(a, b)
    assert bare.p_value == pytest.approx(0.0193, abs=1e-4)  # (1 + 12 + 66) / 4096
    padded = paired_test(*_rows(10, 2, both=40, neither=17))
    assert padded.p_value == bare.p_value
    assert padded.n == 69 and padded.a_mean == pytest.approx(50 / 69) and padded.b_mean == pytest.approx(42 / 69)
    assert padded.difference == pytest.approx(8 / 69)
    # The other way round, b is not better: the tail is on the other side.
    assert paired_test(b, a).p_value == pytest.approx(float(_binomial_upper_tail(2, 12)))
    assert not better_with_confidence(paired_test(b, a), 0.95)


def test_booleans_are_rows_of_zero_and_one():
    a, b = _rows(7, 2, both=5)
    as_bools = paired_test([bool(v) for v in a], [bool(v) for v in b])
    as_ints = paired_test(a, b)
    assert as_bools.method == MCNEMAR
    assert as_bools == as_ints


def test_identical_results_are_not_a_difference():
    rng = np.random.default_rng(3)
    binary = list(rng.random(71) < 0.6)
    floats = list(rng.random(71))
    for rows in (binary, floats):
        test = paired_test(rows, list(rows))
        assert test.p_value == 1.0
        assert test.difference == 0.0
        assert test.interval.low == test.interval.high == 0.0
        assert not better_with_confidence(test, 0.95)
    assert paired_test(binary, list(binary)).discordant == (0, 0)


def test_one_row_of_71_is_not_better_but_a_large_one_sided_gain_is():
    # One row more right of 71: a margin of 0.014 that a raw comparison would promote.
    a, b = _rows(1, 0, both=35, neither=35)
    one_row = paired_test(a, b)
    assert one_row.n == 71 and one_row.difference == pytest.approx(1 / 71)
    assert one_row.p_value == 0.5
    assert one_row.interval.low <= 0.0 <= one_row.interval.high
    assert not better_with_confidence(one_row, 0.95)
    # 40 vs 20 right of 71, every discordant row favouring a.
    a, b = _rows(20, 0, both=20, neither=31)
    large = paired_test(a, b)
    assert large.a_mean == pytest.approx(40 / 71) and large.b_mean == pytest.approx(20 / 71)
    assert large.p_value == pytest.approx(2.0 ** -20)
    assert large.interval.low > 0.0
    assert better_with_confidence(large, 0.95)
    assert better_with_confidence(large, 0.999)


def test_better_with_confidence_needs_both_a_small_p_and_a_positive_difference():
    a, b = _rows(9, 1, both=30, neither=31)
    test = paired_test(a, b)
    assert 0.001 < test.p_value < 0.05  # 11/1024
    assert better_with_confidence(test, 0.95)
    assert not better_with_confidence(test, 0.999)  # not at this stricter confidence
    assert not better_with_confidence(test.model_copy(update={"difference": 0.0}), 0.95)
    with pytest.raises(ValueError, match="between 0 and 1"):
        better_with_confidence(test, 95)


def test_bootstrap_mean_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    normal_hits = bernoulli_hits = 0
    for i in range(200):
        normal = bootstrap_mean_ci(rng.normal(1.0, 2.0, size=60), seed=i)
        normal_hits += normal.low <= 1.0 <= normal.high
        correct = bootstrap_mean_ci(list(rng.random(71) < 0.7), seed=i)  # accuracy rows of a 70% model
        bernoulli_hits += correct.low <= 0.7 <= correct.high
    assert 0.90 <= normal_hits / 200 <= 0.99
    assert 0.90 <= bernoulli_hits / 200 <= 0.99


def test_bootstrap_mean_ci_width_shrinks_as_one_over_root_n():
    rng = np.random.default_rng(7)
    ratios = []
    for i in range(5):
        sample = rng.normal(0.0, 1.0, size=400)
        small, large = bootstrap_mean_ci(sample[:100], seed=i), bootstrap_mean_ci(sample, seed=i)
        assert small.low < sample[:100].mean() < small.high and large.low < sample.mean() < large.high
        ratios.append((small.high - small.low) / (large.high - large.low))
        # On 400 rows the mean is close to normal: a 95% interval is about +-1.96 standard errors.
        normal_width = 2 * 1.96 * sample.std(ddof=1) / np.sqrt(len(sample))
        assert 0.9 <= (large.high - large.low) / normal_width <= 1.1
    assert 1.6 <= float(np.mean(ratios)) <= 2.4


def test_bootstrap_mean_ci_edge_cases_and_reproducibility():
    single = bootstrap_mean_ci([0.42])
    assert single.low == single.high == 0.42 and single.confidence == 0.95
    values = np.random.default_rng(0).random(50)
    assert bootstrap_mean_ci(values, seed=5) == bootstrap_mean_ci(values, seed=5)
    assert bootstrap_mean_ci(values, seed=5) != bootstrap_mean_ci(values, seed=6)
    narrow, wide = bootstrap_mean_ci(values, confidence=0.8), bootstrap_mean_ci(values, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean_ci([0.1, float("nan")])
    with pytest.raises(ValueError, match="between 0 and 1"):
        bootstrap_mean_ci([0.1, 0.2], confidence=95)


def test_bootstrap_ci_of_a_statistic_matches_the_mean_interval_and_handles_macro_f1_like_statistics():
    values = np.random.default_rng(1).random(40)
    by_index = bootstrap_ci(len(values), lambda idx: float(values[idx].mean()), resamples=500, seed=9)
    by_mean = bootstrap_mean_ci(values, resamples=500, seed=9)
    assert by_index.low == pytest.approx(by_mean.low, abs=1e-12)
    assert by_index.high == pytest.approx(by_mean.high, abs=1e-12)

    # A statistic that is not a mean of rows: macro recall over two classes.
    gold = np.array([0] * 30 + [1] * 10)
    predicted = np.array([0] * 27 + [1] * 3 + [1] * 6 + [0] * 4)

    def macro_recall(idx: np.ndarray) -> float:
        g, p = gold[idx], predicted[idx]
        return float(np.mean([np.mean(p[g == c] == c) if np.any(g == c) else 0.0 for c in (0, 1)]))

    interval = bootstrap_ci(len(gold), macro_recall, resamples=300)
    point = macro_recall(np.arange(len(gold)))  # (0.9 + 0.6) / 2
    assert interval.low < point < interval.high
    assert 0.0 <= interval.low and interval.high <= 1.0
    with pytest.raises(ValueError, match="at least 1"):
        bootstrap_ci(0, macro_recall)


def _exact_sign_flip_p_value(differences: np.ndarray) -> float:
    """All 2**n sign patterns enumerated: the fraction whose mean is at least the observed one."""
    observed = differences.sum()
    patterns = list(itertools.product((-1, 1), repeat=len(differences)))
    return sum(np.dot(signs, differences) >= observed - 1e-12 for signs in patterns) / len(patterns)


def test_permutation_test_on_per_row_floats():
    rng = np.random.default_rng(11)
    champion = rng.random(71)
    shifted = champion + 0.15 + rng.normal(0.0, 0.2, size=71)
    clear = paired_test(list(shifted), list(champion))
    assert clear.method == PERMUTATION and clear.discordant is None
    assert clear.p_value < 0.001
    assert clear.difference == pytest.approx(float(np.mean(shifted - champion)))
    assert clear.interval.low > 0.0
    assert better_with_confidence(clear, 0.95)
    assert paired_test(list(champion), list(shifted)).p_value > 0.99  # the other way round

    # Pure noise, symmetric about no change: nothing to find.
    noise = rng.normal(0.0, 0.2, size=35)
    differences = np.concatenate([noise, -noise, [0.0]])
    noisy = paired_test(list(champion + differences), list(champion))
    assert noisy.p_value > 0.3
    assert noisy.interval.low < 0.0 < noisy.interval.high
    assert not better_with_confidence(noisy, 0.95)


def test_permutation_p_value_agrees_with_full_enumeration_and_is_reproducible():
    rng = np.random.default_rng(4)
    b = rng.random(12)
    a = b + rng.normal(0.1, 0.25, size=12)
    test = paired_test(list(a), list(b), resamples=20000, seed=3)
    assert test.p_value == pytest.approx(_exact_sign_flip_p_value(a - b), abs=0.01)
    assert paired_test(list(a), list(b), resamples=20000, seed=3) == test
    other_seed = paired_test(list(a), list(b), resamples=20000, seed=4)
    assert other_seed.p_value != test.p_value and other_seed.difference == test.difference


def test_bad_input_names_the_lengths():
    with pytest.raises(ValueError, match=r"len\(a\)=3 and len\(b\)=2"):
        paired_test([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match=r"len\(a\)=0 and len\(b\)=0"):
        paired_test([], [])
    with pytest.raises(ValueError, match=r"len\(a\)=0 and len\(b\)=4"):
        paired_test([], [0.1, 0.2, 0.3, 0.4])
