"""Statistics helpers against published answers and hand calculations."""

import numpy as np
import pandas as pd
import pytest

from synthmed.downstream.stats import (Comparison, compare_with_baselines, friedman_nemenyi, holm,
                                       nemenyi_critical_difference, verdict, verdict_sentence, wilcoxon_paired)
from synthmed.errors import UserError
from synthmed.metrics.bootstrap import bootstrap_mean_ci


def test_wilcoxon_reproduces_darwins_maize_example():
    # Fisher (1935), The Design of Experiments: Darwin's cross- vs self-fertilised Zea mays, height
    # differences in eighths of an inch. Exact two-sided test: W = 24, p = 0.0413 (scipy docs).
    d = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75])
    res = wilcoxon_paired(d, np.zeros_like(d))
    assert res["n"] == 15 and res["statistic"] == 24.0
    assert res["p"] == pytest.approx(0.041259765625, abs=1e-9)


def test_wilcoxon_without_differences_gives_no_p_value():
    res = wilcoxon_paired(np.ones(5), np.ones(5))
    assert np.isnan(res["p"]) and res["median_difference"] == 0


def test_friedman_reproduces_sprent_smeeton_pulse_example():
    # Sprent & Smeeton, Applied Nonparametric Statistical Methods: pulse rate of 7 people before,
    # immediately after and 5 minutes after exercise. Friedman chi2 = 10.571, p = 0.00506.
    table = pd.DataFrame({
        "before": [72, 96, 88, 92, 74, 76, 82],
        "after": [120, 120, 132, 120, 101, 96, 112],
        "after5": [76, 95, 104, 96, 84, 72, 76],
    })
    res = friedman_nemenyi(table)
    assert res["statistic"] == pytest.approx(10.571428571, abs=1e-6)
    assert res["p"] == pytest.approx(0.0050634142, abs=1e-8)
    # by hand: ranks (1 = highest) of "after" are all 1; "before" ranks 3,2,3,3,3,2,2 -> 18/7
    assert res["mean_ranks"]["after"] == 1.0
    assert res["mean_ranks"]["before"] == pytest.approx(18 / 7)
    assert res["nemenyi_p"]["after"]["after"] == 1.0


def test_nemenyi_agrees_with_demsar_critical_difference():
    # Demšar (2006): k = 4 classifiers, N = 14 data sets, alpha = 0.05 -> q = 2.569, CD = 1.25.
    assert nemenyi_critical_difference(4, 14) == pytest.approx(2.569 * np.sqrt(20 / 84), abs=2e-3)
    # A pair whose mean ranks differ by more than the CD is significant, one below it is not.
    rng = np.random.default_rng(0)
    n = 14
    table = pd.DataFrame({"a": rng.normal(3, 0.1, n), "b": rng.normal(2, 0.1, n),
                          "c": rng.normal(1, 0.1, n), "d": rng.normal(0.9, 0.1, n)})
    res = friedman_nemenyi(table)
    cd = nemenyi_critical_difference(4, n)
    for x, y in [("a", "d"), ("c", "d")]:
        diff = abs(res["mean_ranks"][x] - res["mean_ranks"][y])
        assert (res["nemenyi_p"][x][y] < 0.05) == (diff > cd)


def test_friedman_needs_three_arms():
    with pytest.raises(UserError, match="at least 3 arms"):
        friedman_nemenyi(pd.DataFrame({"a": [1, 2], "b": [2, 3]}))


def test_holm_on_known_p_values():
    # by hand: sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm([0.6, 0.9]), [1.0, 1.0])  # 0.6*2 capped at 1; 0.9 raised to stay monotone
    out = holm([0.02, np.nan, 0.01])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.02])


def test_holm_matches_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    p = np.random.default_rng(1).uniform(0, 0.2, 12)
    assert np.allclose(holm(p), multipletests(p, method="holm")[1])


def test_bootstrap_mean_ci_matches_normal_theory_and_constants():
    x = np.random.default_rng(2).normal(0.8, 0.1, 400)
    mean, lo, hi = bootstrap_mean_ci(x, n_resamples=4000)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert mean == pytest.approx(x.mean())
    assert lo == pytest.approx(mean - half, abs=0.15 * half) and hi == pytest.approx(mean + half, abs=0.15 * half)
    assert bootstrap_mean_ci(np.full(5, 0.7)) == pytest.approx((0.7, 0.7, 0.7))
    assert all(np.isnan(bootstrap_mean_ci(np.array([np.nan]))))


def test_baseline_comparison_corrects_over_all_pairs():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.5, 0.7, 20)
    scores = pd.DataFrame({"real": base, "better": base + 0.1 + rng.uniform(0, 0.01, 20),
                           "same": base + rng.normal(0, 0.01, 20)})
    res = compare_with_baselines(scores, [Comparison("better", "real", "real_only"), Comparison("same", "real", "real_only")])
    assert res[0]["p"] < 1e-4 and res[0]["median_difference"] > 0.09
    assert [r["p_holm"] for r in res] == pytest.approx(list(holm([r["p"] for r in res])))


@pytest.mark.parametrize("shift, expected", [(0.05, "benefit"), (-0.05, "harm")])
def test_signed_effect_and_verdict_of_a_constant_shift(shift, expected):
    """arm = baseline + shift on every case: the mean and median difference are the shift, the CI is the
    shift itself (every resample has the same mean), the Wilcoxon p is the exact 2 / 2^n, and the verdict
    follows the sign."""
    base = np.random.default_rng(0).uniform(0.5, 0.8, 12)
    scores = pd.DataFrame({"real": base, "arm": base + shift})
    [r] = compare_with_baselines(scores, [Comparison("arm", "real", "real_only")], n_resamples=500)
    assert r["mean_difference"] == pytest.approx(shift) and r["median_difference"] == pytest.approx(shift)
    assert r["ci_low"] == pytest.approx(shift) and r["ci_high"] == pytest.approx(shift)
    assert r["p"] == pytest.approx(2 / 2**12) and r["n_cases"] == 12 and r["verdict"] == expected
    sentence = verdict_sentence("real + wgan × 100", "real only", r)
    sign = "+" if shift > 0 else "\u2212"
    assert sentence == (f"real + wgan × 100: {sign}0.050 Dice [{sign}0.050, {sign}0.050] against real only: "
                        f"{expected} (Holm p = 0.00049)")


def test_noise_gives_no_benefit_and_p_holm_is_over_all_comparisons():
    rng = np.random.default_rng(5)
    base = rng.uniform(0.5, 0.8, 30)
    scores = pd.DataFrame({"real": base, "noise": base + rng.normal(0, 0.02, 30), "small": base + 0.004 + rng.normal(0, 0.01, 30)})
    noise, small = compare_with_baselines(scores, [Comparison("noise", "real", "real_only"),
                                                   Comparison("small", "real", "real_only")], n_resamples=1000)
    assert noise["ci_low"] < 0 < noise["ci_high"] and noise["p"] > 0.05 and noise["verdict"] == "no benefit"
    assert [noise["p_holm"], small["p_holm"]] == pytest.approx(list(holm([noise["p"], small["p"]])))
    assert small["p_holm"] > small["p"]


def test_verdict_needs_both_holm_p_and_a_ci_clear_of_zero():
    assert verdict({"p_holm": 0.01, "ci_low": 0.001, "ci_high": 0.02}, 0.05) == "benefit"
    assert verdict({"p_holm": 0.01, "ci_low": -0.001, "ci_high": 0.02}, 0.05) == "no benefit"
    assert verdict({"p_holm": 0.2, "ci_low": 0.001, "ci_high": 0.02}, 0.05) == "no benefit"
    assert verdict({"p_holm": float("nan"), "ci_low": -0.1, "ci_high": -0.05}, 0.05) == "no benefit"
    assert verdict({"p_holm": 0.001, "ci_low": -0.1, "ci_high": -0.05}, 0.05) == "harm"
