"""Is a difference real? Bootstrap confidence intervals and a paired test on per-row eval results.

A raw margin says little on a small test split (on 71 rows one row is 0.014),
so the leaderboard and promotion use these, all seeded so a rerun gives the
same numbers:

- `bootstrap_mean_ci`: percentile bootstrap of a mean of per-row values
  (accuracy is the mean of 0/1 rows): resample the rows with replacement,
  take the mean each time, report the (1-c)/2 and (1+c)/2 quantiles.
- `bootstrap_ci`: the same for any statistic of a resample of row indices,
  for metrics that are not a mean of rows (macro-F1).
- `paired_test`: challenger `a` vs champion `b` on the same rows, one-sided
  (H1: a is better). With 0/1 rows it is the exact McNemar test: only the
  discordant rows (one right, the other wrong) carry information, and under
  H0 each is equally likely to favour either model, so the p-value is a
  binomial tail with p=0.5, computed exactly (no chi-square approximation,
  which is poor with the few discordant rows a small split has); it is the
  standard paired test for two classifiers scored on the same rows. For
  other per-row values (per-row F1, NLL) it is a paired sign-flip
  permutation test of the mean difference: under H0 each row's difference is
  as likely to have either sign, which assumes no distribution shape.
  Either way `interval` is a paired bootstrap CI of the mean difference.

Cites: McNemar 1947; Dietterich 1998, "Approximate statistical tests for comparing supervised classification learning algorithms".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

MCNEMAR = "mcnemar-exact"
PERMUTATION = "paired-permutation"
BOOTSTRAP = "percentile-bootstrap"

# Resamples are drawn in blocks of at most this many indices, so a large
# eval set times many resamples does not hold one huge array in memory.
_BLOCK_ELEMENTS = 2_000_000


class ConfidenceInterval(BaseModel):
    """[low, high] holds the statistic with probability `confidence` (as estimated by `method`)."""

    model_config = ConfigDict(frozen=True)

    low: float
    high: float
    confidence: float
    method: str


class PairedTest(BaseModel):
    """a (challenger) vs b (champion) on the same rows; p_value is one-sided for "a is better"."""

    model_config = ConfigDict(frozen=True)

    a_mean: float
    b_mean: float
    difference: float  # a_mean - b_mean
    p_value: float
    method: str  # MCNEMAR or PERMUTATION
    n: int
    discordant: tuple[int, int] | None  # McNemar: (rows only a got right, rows only b got right)
    interval: ConfidenceInterval  # paired bootstrap CI of the difference


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def _as_rows(values: Sequence[float], name: str = "values") -> np.ndarray:
    rows = np.asarray(values, dtype=float)
    if rows.ndim != 1:
        raise ValueError(f"{name} must be one value per row, got shape {rows.shape}")
    if rows.size == 0:
        raise ValueError(f"{name} is empty: no rows to resample")
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"{name} holds NaN or infinite values")  # they would poison every resample silently
    return rows


def _index_blocks(rng: np.random.Generator, n: int, resamples: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples of row indices, `resamples` rows of n in total, a block at a time."""
    per_block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, resamples, per_block):
        yield rng.integers(0, n, size=(min(per_block, resamples - start), n))


def _percentile_interval(statistics: np.ndarray, confidence: float, method: str) -> ConfidenceInterval:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(statistics, [tail, 1.0 - tail])
    return ConfidenceInterval(low=float(low), high=float(high), confidence=confidence, method=method)


def _bootstrap_mean(rows: np.ndarray, rng: np.random.Generator, confidence: float, resamples: int,
                    method: str) -> ConfidenceInterval:
    means = np.concatenate([rows[idx].mean(axis=1) for idx in _index_blocks(rng, rows.size, resamples)])
    return _percentile_interval(means, confidence, method)


def bootstrap_mean_ci(values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap CI of the mean of per-row values (booleans count as 0/1)."""
    _check_confidence(confidence)
    _check_resamples(resamples)
    rows = _as_rows(values)
    return _bootstrap_mean(rows, np.random.default_rng(seed), confidence, resamples, BOOTSTRAP)


def bootstrap_ci(n: int, statistic: Callable[[np.ndarray], float], *, confidence: float = 0.95,
                 resamples: int = 1000, seed: int = 0) -> ConfidenceInterval:
    """Percentile bootstrap CI of `statistic(indices)`, indices being a resample of range(n).

    Same draws as bootstrap_mean_ci for the same n, seed and resamples, so a
    mean statistic gives the same interval either way.
    """
    _check_confidence(confidence)
    _check_resamples(resamples)
    if n < 1:
        raise ValueError(f"n must be at least 1 row, got {n}")
    rng = np.random.default_rng(seed)
    statistics = np.array([float(statistic(idx)) for block in _index_blocks(rng, n, resamples) for idx in block])
    if not np.all(np.isfinite(statistics)):
        raise ValueError("statistic returned NaN or an infinite value on a resample")
    return _percentile_interval(statistics, confidence, BOOTSTRAP)


def mcnemar_p_value(a_only: int, b_only: int) -> float:
    """Exact one-sided McNemar: P(X >= a_only), X ~ Binomial(a_only + b_only, 1/2); 1.0 with no discordant rows."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(a_only, discordant + 1))
    return tail / 2**discordant  # int / int is correctly rounded however large the numbers


def _permutation_p_value(differences: np.ndarray, rng: np.random.Generator, resamples: int) -> float:
    observed = differences.mean()
    # Summation order differs between the observed mean and a permuted one,
    # so "as large as observed" allows for rounding (the identity flip must count).
    tolerance = 1e-12 * max(1.0, float(np.abs(differences).max()))
    per_block = max(1, _BLOCK_ELEMENTS // differences.size)
    as_large = 0
    for start in range(0, resamples, per_block):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(per_block, resamples - start), differences.size))
        as_large += int(np.count_nonzero((signs * differences).mean(axis=1) >= observed - tolerance))
    return (1 + as_large) / (1 + resamples)


def _is_binary(rows: np.ndarray) -> bool:
    return bool(np.all((rows == 0.0) | (rows == 1.0)))


def paired_test(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, resamples: int = 10000,
                seed: int = 0) -> PairedTest:
    """One-sided paired test of "a is better than b" on rows paired by position (the same eval row).

    0/1 rows (booleans included): exact McNemar. Other values: sign-flip
    permutation test of the mean difference. `interval` is always a paired
    bootstrap CI of the difference a - b at `confidence`.
    """
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"paired_test needs two equally long, non-empty lists of per-row results, "
                         f"got len(a)={len(a)} and len(b)={len(b)}")
    _check_confidence(confidence)
    _check_resamples(resamples)
    rows_a, rows_b = _as_rows(a, "a"), _as_rows(b, "b")
    differences = rows_a - rows_b
    # Separate streams: the test's draws do not depend on the interval's, and vice versa.
    test_seed, interval_seed = np.random.SeedSequence(seed).spawn(2)
    interval = _bootstrap_mean(differences, np.random.default_rng(interval_seed), confidence, resamples,
                               f"paired-{BOOTSTRAP}")
    a_mean, b_mean = float(rows_a.mean()), float(rows_b.mean())
    if _is_binary(rows_a) and _is_binary(rows_b):
        a_only = int(np.count_nonzero((rows_a == 1.0) & (rows_b == 0.0)))
        b_only = int(np.count_nonzero((rows_a == 0.0) & (rows_b == 1.0)))
        p_value, method, discordant = mcnemar_p_value(a_only, b_only), MCNEMAR, (a_only, b_only)
        difference = (a_only - b_only) / rows_a.size  # exact: the concordant rows cancel
    else:
        p_value = _permutation_p_value(differences, np.random.default_rng(test_seed), resamples)
        method, discordant, difference = PERMUTATION, None, float(differences.mean())
    return PairedTest(a_mean=a_mean, b_mean=b_mean, difference=difference, p_value=p_value, method=method,
                      n=int(rows_a.size), discordant=discordant, interval=interval)


def better_with_confidence(test: PairedTest, confidence: float) -> bool:
    """a is better than b at `confidence`: the one-sided p-value is below 1 - confidence and a's mean is higher."""
    _check_confidence(confidence)
    return test.p_value < 1.0 - confidence and test.difference > 0.0
