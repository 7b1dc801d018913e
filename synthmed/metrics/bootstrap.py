"""Confidence intervals: of a figure computed from two sets (subsampling), and of a mean (percentile bootstrap)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from synthmed.errors import UserError

N_BOOTSTRAP = 100
CI_LEVEL = 0.95


def percentile_interval(replicates: np.ndarray | list[float], confidence: float) -> tuple[float, float]:
    """(low, high): the central `confidence` share of bootstrap `replicates` (the percentile method)."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def _check(n_resamples: int, confidence: float) -> None:
    if n_resamples < 2:
        raise UserError(f"bootstrap: n_resamples must be at least 2, got {n_resamples}")
    if not 0 < confidence < 1:
        raise UserError(f"bootstrap: confidence must be in (0, 1), got {confidence}")


SUBSAMPLE_METHOD = ("half-sampling without replacement (m = n/2 of each set), delete-d jackknife scaling "
                    "sqrt(m/(n-m)) (Shao & Wu 1989), percentile interval recentred at the subsample median")


def subsample_size(n: int, max_size: int | None = None) -> int:
    """m of `subsample_ci` for a set of n samples: half of it, at least 2, at most `max_size`."""
    m = max(2, (n + 1) // 2)
    return m if max_size is None else max(2, min(m, max_size))


def subsample_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    a: np.ndarray,
    b: np.ndarray,
    point: float,
    n_resamples: int = N_BOOTSTRAP,
    confidence: float = CI_LEVEL,
    seed: int = 0,
    max_size: int | None = None,
) -> tuple[float, float] | None:
    """(low, high) interval of ``statistic(a, b)`` around its estimate `point`, by subsampling.

    Each replicate takes m = n/2 samples of each set without replacement (no duplicates: with
    replacement, duplicates bias the Fréchet distance, and the percentile interval of such resamples
    could exclude the estimate itself). The spread of the replicates about their median is scaled
    by sqrt(m / (n - m)), the delete-d jackknife factor (Shao & Wu 1989; 1 at m = n/2), and laid
    around `point` as a basic (reversed) interval: ``[point - s (q_hi - med), point + s (med - q_lo)]``.
    Recentring at the subsample median removes the statistic's extra small-sample bias at size m,
    and the interval always contains `point`.

    Args:
        max_size: cap on m (the factor sqrt(m / (n - m)) holds for any m: a cheaper statistic on big sets).

    Returns:
        None when a set has fewer than 3 samples (no proper subsample exists).

    Raises:
        UserError: `n_resamples` < 2 or `confidence` outside (0, 1).
    """
    _check(n_resamples, confidence)
    if min(len(a), len(b)) < 3:
        return None
    rng = np.random.default_rng(seed)
    m_a, m_b = subsample_size(len(a), max_size), subsample_size(len(b), max_size)
    replicates = np.array([
        statistic(a[rng.choice(len(a), m_a, replace=False)], b[rng.choice(len(b), m_b, replace=False)])
        for _ in range(n_resamples)
    ])
    # one factor per set; they differ only for odd or capped sizes: the larger is the conservative one
    scale = float(max(np.sqrt(m_a / (len(a) - m_a)), np.sqrt(m_b / (len(b) - m_b))))
    low, high = percentile_interval(replicates, confidence)
    median = float(np.median(replicates))
    return point - scale * (high - median), point + scale * (median - low)


def bootstrap_mean_ci(values: np.ndarray, n_resamples: int = 2000, confidence: float = CI_LEVEL,
                      seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite `values` and its percentile bootstrap interval.

    Returns NaNs when no finite value is left.

    Raises:
        UserError: `n_resamples` < 2 or `confidence` outside (0, 1).
    """
    _check(n_resamples, confidence)
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Every resample's indices in one draw (vectorised); drawing them one resample at a time gives other numbers.
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    return float(x.mean()), *percentile_interval(means, confidence)
