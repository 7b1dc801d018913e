"""Statistics of the downstream benchmark: Friedman + Nemenyi; signed effects against baselines (mean and
median per-case difference, bootstrap CI), Wilcoxon + Holm, and a verdict per comparison.

Bootstrap CIs of means are `synthmed.metrics.bootstrap.bootstrap_mean_ci`.

Arms are compared on the same real test cases, so every test here is paired (blocked) by case,
following Demšar (2006), "Statistical comparisons of classifiers over multiple data sets".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scikit_posthocs as sp
from scipy import stats as sps

from synthmed.errors import UserError
from synthmed.metrics.bootstrap import bootstrap_mean_ci


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


@dataclass(frozen=True)
class Comparison:
    """One arm against one of its baselines, on the per-case scores (seeds averaged per case)."""

    arm: str
    baseline: str
    role: str  # "real_only" or "real_augmentation"


def signed_effect(arm: np.ndarray, baseline: np.ndarray, n_resamples: int, confidence: float) -> dict[str, Any]:
    """The paired difference arm - baseline per case: its mean with a bootstrap CI, its median, and the
    two-sided Wilcoxon signed-rank test (pairs with a NaN are dropped)."""
    a, b = np.asarray(arm, np.float64), np.asarray(baseline, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    mean, low, high = bootstrap_mean_ci(a[keep] - b[keep], n_resamples, confidence)
    return {**wilcoxon_paired(a[keep], b[keep]), "mean_difference": mean, "ci_low": low, "ci_high": high}


def verdict(effect: dict[str, Any], alpha: float) -> str:
    """"benefit" (Holm p < alpha and the CI above 0), "harm" (Holm p < alpha and the CI below 0), else
    "no benefit" (no difference shown, which is no reason to use the synthetic data)."""
    p = effect.get("p_holm")
    if p is None or not np.isfinite(p) or p >= alpha:
        return "no benefit"
    if effect["ci_low"] > 0:
        return "benefit"
    if effect["ci_high"] < 0:
        return "harm"
    return "no benefit"


def _signed(x: float, digits: int = 3) -> str:
    return f"{x:+.{digits}f}".replace("-", "\u2212")


def verdict_sentence(arm_label: str, baseline_label: str, effect: dict[str, Any], metric: str = "Dice",
                     note: str = "") -> str:
    """E.g. ``real + wgan × 100: −0.008 Dice [−0.020, +0.004] against real + augmentation: no benefit
    (Holm p = 0.41)``; `note` is appended (e.g. the extra-labels warning)."""
    p = effect.get("p_holm")
    p_text = "n/a" if p is None or not np.isfinite(p) else f"{p:.2g}"
    text = (f"{arm_label}: {_signed(effect['mean_difference'])} {metric} [{_signed(effect['ci_low'])}, "
            f"{_signed(effect['ci_high'])}] against {baseline_label}: {effect['verdict']} (Holm p = {p_text})")
    return text + (f"; {note}" if note else "")


def compare_with_baselines(scores: pd.DataFrame, comparisons: list[Comparison], alpha: float = 0.05,
                           n_resamples: int = 2000, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Signed effect and Wilcoxon test of every comparison, Holm-corrected over all of them, with verdicts.

    Args:
        scores: one column per arm, one row per test case (seeds already averaged per case).
        comparisons: the pairs; both arms must be columns of `scores`.

    Returns:
        One dict per comparison: arm, baseline, baseline_role, n_cases, mean_difference, median_difference,
        ci_low, ci_high, statistic, p, p_holm, verdict.
    """
    results = []
    for c in comparisons:
        effect = signed_effect(scores[c.arm].to_numpy(), scores[c.baseline].to_numpy(), n_resamples, confidence)
        effect["n_cases"] = effect.pop("n")
        results.append({"arm": c.arm, "baseline": c.baseline, "baseline_role": c.role, **effect})
    for r, p in zip(results, holm([r["p"] for r in results])):
        r["p_holm"] = float(p)
        r["verdict"] = verdict(r, alpha)
    return results
