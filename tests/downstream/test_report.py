"""The downstream reports on constructed scores whose answer is known: signed effects, verdicts, tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from synthmed.data.manifest import load_manifest
from synthmed.downstream.arms import ArmSpec
from synthmed.downstream.config import ArmKind, resolve_downstream_config
from synthmed.downstream.report import write_reports

N_CASES = 12


def ensemble(arm: ArmSpec, seed: int, dice: np.ndarray) -> dict:
    history = [{"step": 4, "phase": "train", "train_loss": 0.5, "val_dice": 0.7}]
    return {"arm": arm.to_json(), "seed": seed, "case_ids": [f"case{i:02d}" for i in range(N_CASES)],
            "labels": {"1": "organ"}, "dice": dice[:, None].tolist(), "hd95": np.full((N_CASES, 1), 2.0).tolist(),
            "n_real": 9, "n_synthetic": arm.n_synthetic, "steps": [4, 4], "pretrain_steps": [0, 0],
            "final_train_loss": [0.5, 0.5], "train_wall_s": 1.0, "inference_wall_s": 0.1, "history": [history] * 2}


def test_reports_give_the_known_signed_effects_and_verdicts(toy_prepared, tmp_path):
    """better = baseline + 0.04 / + 0.06 in the two seeds (+0.05 per case after averaging seeds), worse = -0.05,
    noisy = baseline + zero-mean noise: benefit, harm and no benefit, with CIs [0.05, 0.05] and [-0.05, -0.05]."""
    config = resolve_downstream_config({"manifest": str(toy_prepared), "synthetic": {"better": "a", "worse": "b", "noisy": "c"},
                                        "arms": ["real", "real+synthetic"], "n_synthetic": [10], "seeds": [0, 1],
                                        "stats": {"bootstrap": 500}})
    base = np.random.default_rng(0).uniform(0.6, 0.8, N_CASES)
    noise = np.random.default_rng(1).normal(0, 0.02, N_CASES)
    shifts = {None: (0, 0), "better": (0.04, 0.06), "worse": (-0.05, -0.05), "noisy": (noise, -noise / 3)}
    arms = [ArmSpec(ArmKind.REAL, "all", 0, None, False)] + [
        ArmSpec(ArmKind.REAL_SYNTHETIC, "all", 10, name, False) for name in ("better", "worse", "noisy")]
    ensembles = [ensemble(a, seed, base + shifts[a.synthetic_set][seed]) for a in arms for seed in (0, 1)]
    results = write_reports(tmp_path, config, load_manifest(toy_prepared), arms, ensembles, [])

    by_arm = {c["arm"]: c for c in results["comparisons"]}
    better, worse, noisy = (by_arm[f"real+synthetic-{n}-n10-rall-noaug"] for n in ("better", "worse", "noisy"))
    assert better["mean_difference"] == pytest.approx(0.05) and better["median_difference"] == pytest.approx(0.05)
    assert (better["ci_low"], better["ci_high"]) == pytest.approx((0.05, 0.05)) and better["verdict"] == "benefit"
    assert (worse["ci_low"], worse["ci_high"]) == pytest.approx((-0.05, -0.05)) and worse["verdict"] == "harm"
    assert noisy["ci_low"] < 0 < noisy["ci_high"] and noisy["verdict"] == "no benefit"
    assert better["p"] == pytest.approx(2 / 2**N_CASES) and better["p_holm"] == pytest.approx(3 * better["p"])
    assert results["verdicts"][0] == ("real + better × 10: +0.050 Dice [+0.050, +0.050] against real only: benefit "
                                      "(Holm p = 0.0015)")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("arm")
    assert summary.verdict_vs_real_only.dropna().to_dict() == {
        "real+synthetic-better-n10-rall-noaug": "benefit", "real+synthetic-worse-n10-rall-noaug": "harm",
        "real+synthetic-noisy-n10-rall-noaug": "no benefit"}
    assert summary.loc["real+synthetic-worse-n10-rall-noaug", "diff_vs_real_only"] == pytest.approx(-0.05)
    assert summary.steps.tolist() == [4] * 4 and summary.final_loss.tolist() == [0.5] * 4
    assert json.loads((tmp_path / "results.json").read_text())["format_version"] == 2
