"""Statistics of the downstream benchmark: Friedman + Nemenyi, Wilcoxon + Holm.

Bootstrap CIs of means are `synthmed.metrics.bootstrap.bootstrap_mean_ci`.

Arms are compared on the same real test cases, so every test here is paired (blocked) by case,
following Demšar (2006), "Statistical comparisons of classifiers over multiple data sets".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats as sps

from synthmed.errors import UserError


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (same order as given; NaN stays NaN).

    The i-th smallest of m p-values is multiplied by (m - i + 1); adjusted values are made
    non-decreasing in that order and capped at 1 (Holm 1979).
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    if valid.size == 0:
        return out
    m = valid.size
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def wilcoxon_paired(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired samples `a` vs `b` (pairs with a NaN are dropped).

    Returns ``{"n", "statistic", "p", "median_difference"}``; ``p`` is NaN when fewer than 2 pairs
    remain or every difference is zero (no evidence either way).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    result = {"n": int(d.size), "statistic": float("nan"), "p": float("nan"),
              "median_difference": float(np.median(d)) if d.size else float("nan")}
    if d.size >= 2 and np.any(d != 0):
        res = sps.wilcoxon(d)
        result.update(statistic=float(res.statistic), p=float(res.pvalue))
    return result


def friedman_nemenyi(table: pd.DataFrame) -> dict[str, Any]:
    """Friedman test across arms (columns) blocked by case (rows), with the Nemenyi post-hoc test.

    Rows with a NaN are dropped. Mean ranks are 1 = best (highest score), as in Demšar (2006).

    Returns:
        ``{"n_cases", "n_arms", "statistic", "p", "mean_ranks": {arm: rank},
        "nemenyi_p": {arm: {arm: p}}}``.

    Raises:
        UserError: fewer than 3 arms or fewer than 2 complete cases (the test is undefined).
    """
    complete = table.dropna()
    if table.shape[1] < 3:
        raise UserError(f"Friedman test needs at least 3 arms, got {table.shape[1]}")
    if len(complete) < 2:
        raise UserError(f"Friedman test needs at least 2 test cases scored by every arm, got {len(complete)}")
    res = sps.friedmanchisquare(*[complete[c].to_numpy() for c in complete.columns])
    ranks = complete.rank(axis=1, ascending=False).mean()
    nemenyi = sp.posthoc_nemenyi_friedman(complete.to_numpy())
    nemenyi.index = nemenyi.columns = list(complete.columns)
    return {
        "n_cases": int(len(complete)),
        "n_arms": int(complete.shape[1]),
        "statistic": float(res.statistic),
        "p": float(res.pvalue),
        "mean_ranks": {str(k): float(v) for k, v in ranks.items()},
        "nemenyi_p": {str(r): {str(c): float(nemenyi.loc[r, c]) for c in nemenyi.columns} for r in nemenyi.index},
    }


def nemenyi_critical_difference(n_arms: int, n_cases: int, alpha: float = 0.05) -> float:
    """Critical difference of mean ranks (Demšar 2006, eq. after Table 5): q_alpha * sqrt(k(k+1)/(6N)).

    q_alpha is the studentized range quantile divided by sqrt(2).
    """
    q = sps.studentized_range.ppf(1 - alpha, n_arms, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(n_arms * (n_arms + 1) / (6.0 * n_cases)))


def compare_with_baselines(scores: pd.DataFrame, pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """Wilcoxon signed-rank of each (arm, baseline) pair, Holm-corrected over all pairs.

    Args:
        scores: one column per arm, one row per test case.
        pairs: (arm, baseline arm) names; both must be columns of `scores`.

    Returns:
        {arm: {"baseline", "n", "statistic", "p", "p_holm", "median_difference"}}.
    """
    results = {arm: dict(baseline=base, **wilcoxon_paired(scores[arm].to_numpy(), scores[base].to_numpy()))
               for arm, base in pairs}
    adjusted = holm([r["p"] for r in results.values()])
    for r, p in zip(results.values(), adjusted):
        r["p_holm"] = float(p)
    return results
