"""Percentile bootstrap confidence intervals: of a figure computed from two sets, and of a mean."""

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


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = N_BOOTSTRAP,
    confidence: float = CI_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) percentile interval of ``statistic(a*, b*)`` over resamples with replacement of both sets.

    Raises:
        UserError: `n_resamples` < 2 or `confidence` outside (0, 1).
    """
    _check(n_resamples, confidence)
    rng = np.random.default_rng(seed)
    replicates = [
        statistic(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]) for _ in range(n_resamples)
    ]
    return percentile_interval(replicates, confidence)


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
