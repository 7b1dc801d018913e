"""Percentile bootstrap confidence intervals for a figure computed from two sets."""

from __future__ import annotations

from typing import Callable

import numpy as np

from synthmed.errors import UserError

N_BOOTSTRAP = 100
CI_LEVEL = 0.95


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    a: np.ndarray,
    b: np.ndarray,
    n_bootstrap: int = N_BOOTSTRAP,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) percentile interval of ``statistic(a*, b*)`` over resamples with replacement of both sets.

    Raises:
        UserError: `n_bootstrap` < 2 or `level` outside (0, 1).
    """
    if n_bootstrap < 2:
        raise UserError(f"bootstrap: n_bootstrap must be at least 2, got {n_bootstrap}")
    if not 0 < level < 1:
        raise UserError(f"bootstrap: level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    values = [
        statistic(a[rng.integers(0, len(a), len(a))], b[rng.integers(0, len(b), len(b))]) for _ in range(n_bootstrap)
    ]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
