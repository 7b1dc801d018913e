"""Analysis on known answers: the thesis's table, a rater who always knows, random raters, Krippendorff's alpha."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from synthmed.errors import UserError
from synthmed.vtt import db
from synthmed.vtt.analyze import (
    analyze_ratings, analyze_study, krippendorff_alpha, pairwise_agreement, quadratic_weighted_kappa, score_summary,
)
from synthmed.vtt.invite import invite
from synthmed.vtt.study import ANALYSIS_DIR, load_key, load_study

# Thesis section 5.6 (Tables 5.17 and 5.18): items 3, 4, 6, 7, 8 real; 1, 2, 5, 9, 10 synthetic
THESIS_REAL = {"MD 1": [2, 4, 3, 4, 5], "Radiologist": [4, 5, 5, 3, 4], "MD 2": [7, 4, 7, 4, 5]}
THESIS_SYNTHETIC = {"MD 1": [3, 5, 2, 3, 4], "Radiologist": [5, 6, 3, 6, 4], "MD 2": [8, 6, 2, 7, 8]}


def _pairwise_auc(real: list[int], synthetic: list[int]) -> float:
    """P(synthetic score > real score) + half the ties, counted pair by pair."""
    wins = sum((s > r) + 0.5 * (s == r) for s in synthetic for r in real)
    return wins / (len(real) * len(synthetic))


def _thesis_rows() -> list[dict]:
    rows = []
    for name in THESIS_REAL:
        for origin, scores in (("real", THESIS_REAL[name]), ("synthetic", THESIS_SYNTHETIC[name])):
            rows += [{"rater": name, "item_id": f"{origin}{i}", "score": s, "origin": origin, "set": "hagan"}
                     for i, s in enumerate(scores)]
    return rows


def test_the_thesis_table_gives_its_means_and_hand_computed_auc():
    items = [f"{o}{i}" for o in ("real", "synthetic") for i in range(5)]
    doc = analyze_ratings(_thesis_rows(), items)
    thesis_means = {"MD 1": (3.6, 3.4), "Radiologist": (4.2, 4.8), "MD 2": (5.4, 6.2)}
    for name, (mean_real, mean_synthetic) in thesis_means.items():
        assert doc["raters"][name]["mean_real"] == pytest.approx(mean_real)
        assert doc["raters"][name]["mean_synthetic"] == pytest.approx(mean_synthetic)
    for name in THESIS_REAL:
        assert doc["raters"][name]["auc"] == pytest.approx(_pairwise_auc(THESIS_REAL[name], THESIS_SYNTHETIC[name]))
    md1 = doc["raters"]["MD 1"]
    # by hand: 11 of 25 pairs won (ties half); the two 5s are undecided; 4 real below 5 right, 4 synthetic below 5 wrong
    assert md1["auc"] == pytest.approx(0.44)
    assert (md1["n_decided"], md1["n_undecided"], md1["n_correct"], md1["accuracy"]) == (8, 2, 4, 0.5)
    assert md1["binomial_p_value"] == pytest.approx(1.0) and (md1["sensitivity"], md1["specificity"]) == (0.0, 1.0)
    pooled_real = sum(THESIS_REAL.values(), [])
    pooled_synthetic = sum(THESIS_SYNTHETIC.values(), [])
    assert doc["pooled"]["n"] == 30 and doc["pooled"]["auc"] == pytest.approx(_pairwise_auc(pooled_real, pooled_synthetic))
    assert doc["pooled"]["mean_real"] == pytest.approx(np.mean(pooled_real))
    assert doc["by_synthetic_set"]["hagan"]["auc"] == pytest.approx(doc["pooled"]["auc"])
    assert doc["agreement"]["n_items_rated_by_two_or_more"] == 10 and len(doc["agreement"]["pairwise"]) == 3


def test_a_rater_who_always_knows_gets_auc_and_accuracy_one():
    rng = np.random.default_rng(0)
    is_synthetic = rng.permutation(np.arange(40) % 2 == 0)
    scores = np.where(is_synthetic, rng.integers(6, 11, 40), rng.integers(0, 5, 40))
    summary = score_summary(is_synthetic, scores)
    assert summary["auc"] == 1.0 and summary["accuracy"] == 1.0 and summary["n_undecided"] == 0
    assert summary["binomial_p_value"] == pytest.approx(2 * 0.5 ** 40)
    assert summary["auc_p_value"] < 1e-6 and summary["accuracy_ci95"][0] > 0.9
    inverted = score_summary(is_synthetic, 10 - scores)  # always wrong: as far from chance as always right
    assert inverted["auc"] == 0.0 and inverted["accuracy"] == 0.0 and inverted["binomial_p_value"] == summary["binomial_p_value"]


def test_a_random_rater_is_at_chance():
    rng = np.random.default_rng(1)
    is_synthetic = rng.uniform(size=4000) < 0.5
    summary = score_summary(is_synthetic, rng.integers(0, 11, 4000))
    assert summary["auc"] == pytest.approx(0.5, abs=0.03)
    assert summary["accuracy"] == pytest.approx(0.5, abs=0.03)
    assert summary["binomial_p_value"] > 0.01 and summary["auc_p_value"] > 0.01
    assert summary["n_undecided"] == pytest.approx(4000 / 11, rel=0.15)


def test_undecided_only_and_one_origin_only_give_none_not_numbers():
    all_fives = score_summary(np.array([True, False, True]), np.array([5, 5, 5]))
    assert all_fives["accuracy"] is None and all_fives["binomial_p_value"] is None and all_fives["n_undecided"] == 3
    one_origin = score_summary(np.array([False, False]), np.array([1, 2]))
    assert one_origin["auc"] is None and one_origin["mean_synthetic"] is None and one_origin["accuracy"] == 1.0


def test_krippendorff_alpha_matches_krippendorffs_worked_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing values
    n = np.nan
    data = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
                     [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]])
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(data, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=5e-4)
    assert krippendorff_alpha(np.array([[1, 5, 9], [1, 5, 9]])) == 1.0
    assert krippendorff_alpha(np.array([[3, 3], [3, 3]])) is None  # no variation: undefined
    assert krippendorff_alpha(np.array([[1, n], [n, 2]])) is None  # nothing pairable


def test_weighted_kappa_matches_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    a = rng.integers(0, 11, 50)
    b = np.clip(a + rng.integers(-2, 3, 50), 0, 10)
    reference = cohen_kappa_score(a, b, weights="quadratic", labels=np.arange(11))
    assert quadratic_weighted_kappa(a, b) == pytest.approx(reference, abs=1e-12)
    assert quadratic_weighted_kappa(a, a) == 1.0 and quadratic_weighted_kappa([4, 4], [4, 4]) is None
    pair = pairwise_agreement(np.array([a, b], dtype=float), ["a", "b"])[0]
    assert pair["n_common"] == 50 and pair["spearman_rho"] == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    is_synthetic = rng.uniform(size=60) < 0.4
    scores = np.clip(rng.integers(0, 8, 60) + 3 * is_synthetic, 0, 10)
    assert score_summary(is_synthetic, scores)["auc"] == pytest.approx(roc_auc_score(is_synthetic, scores), abs=1e-12)


def _rate_directly(study, name: str, scores_for) -> None:
    """Rate every item of `name` in their order with scores_for(origin, position)."""
    key = load_key(load_study(study))
    with db.opened(study / "vtt.sqlite3") as conn:
        rater_id = conn.execute("SELECT rater_id FROM raters WHERE name = ?", (name,)).fetchone()[0]
        while (item := db.next_item(conn, rater_id)) is not None:
            db.insert_rating(conn, rater_id, item.item_id, scores_for(key[item.item_id]["origin"], item.position), "")


def test_analyze_a_study_with_an_oracle_and_random_raters(study, tmp_path):
    names = ["oracle"] + [f"random{i:02d}" for i in range(20)]
    invite(study, names)
    with pytest.raises(UserError, match="no ratings yet"):
        analyze_study(study)
    _rate_directly(study, "oracle", lambda origin, _: 9 if origin == "synthetic" else 1)
    rng = np.random.default_rng(5)
    for name in names[1:]:
        _rate_directly(study, name, lambda *_: int(rng.integers(0, 11)))
    doc = analyze_study(study)
    assert doc["raters"]["oracle"]["auc"] == 1.0 and doc["raters"]["oracle"]["accuracy"] == 1.0
    random_aucs = [doc["raters"][n]["auc"] for n in names[1:]]
    assert np.mean(random_aucs) == pytest.approx(0.5, abs=0.1)
    assert doc["progress"]["oracle"] == {"rated": 8, "assigned": 8} and doc["pooled"]["n"] == 8 * len(names)
    assert -0.2 < doc["agreement"]["krippendorff_alpha"]["interval"] < 0.2  # random raters do not agree

    out = study / ANALYSIS_DIR
    assert sorted(p.name for p in out.iterdir()) == [".synthmed-output", "analysis.json", "items.csv", "raters.csv", "roc.png", "scores.png", "summary.md"]
    assert json.loads((out / "analysis.json").read_text())["raters"]["oracle"]["auc"] == 1.0
    assert Image.open(out / "roc.png").size[0] > 100 and Image.open(out / "scores.png").size[0] > 100
    assert "| oracle | 8 | 1.000 | 9.000 | 1.000 | 1.000 | 0 |" in (out / "summary.md").read_text()
    assert len((out / "items.csv").read_text().splitlines()) == 1 + 8
    analyze_study(study)  # the default folder is derived data: replaced on every run
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UserError, match="already exists"):
        analyze_study(study, out=tmp_path / "elsewhere")
