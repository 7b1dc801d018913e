"""The study's comparisons on per-case tables whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthmed.study.aggregate import compare_size
from synthmed.study.config import load_study_config

ROOT = Path(__file__).resolve().parents[2]


def table(**arms: np.ndarray) -> pd.DataFrame:
    rows = [{"real_size": 20, "arm": arm, "case_id": f"c{i:02d}", "dice": float(v)}
            for arm, values in arms.items() for i, v in enumerate(values)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def config():
    return load_study_config(ROOT / "configs" / "study_tiny.yaml")


def test_a_constant_gain_is_a_benefit_and_a_constant_loss_harm(config) -> None:
    real = np.linspace(0.5, 0.8, 20)
    rows = compare_size(table(**{"real-noaug": real, "real-aug": real + 0.02,
                                 "real+synthetic-wgan-n40-noaug": real + 0.05,
                                 "real+synthetic-ddpm-n40-noaug": real - 0.05}), config)
    by = {(r["arm"], r["baseline"]): r for r in rows}
    assert ("real-noaug", "real-aug") not in by and len(rows) == 5  # 3 arms vs real, 2 synthetic vs real+aug
    gain = by[("real+synthetic-wgan-n40-noaug", "real-noaug")]
    assert gain["mean_difference"] == pytest.approx(0.05) and gain["ci_low"] == pytest.approx(0.05)
    assert gain["verdict"] == "benefit" and gain["baseline_role"] == "real_only" and gain["n_cases"] == 20
    assert gain["sentence"] == ("real + wgan x 40: +0.050 Dice [+0.050, +0.050] against real: benefit "
                                f"(Holm p = {gain['p_holm']:.2g})")
    assert by[("real+synthetic-ddpm-n40-noaug", "real-aug")]["verdict"] == "harm"
    assert by[("real+synthetic-ddpm-n40-noaug", "real-aug")]["mean_difference"] == pytest.approx(-0.07)
    assert by[("real+synthetic-wgan-n40-noaug", "real-aug")]["baseline_role"] == "real_augmentation"


def test_noise_around_the_baseline_is_no_benefit(config) -> None:
    real = np.linspace(0.5, 0.8, 30)
    noise = np.random.default_rng(0).normal(0, 0.02, 30)
    rows = compare_size(table(**{"real-noaug": real, "real+synthetic-wgan-n40-noaug": real + noise}), config)
    (row,) = rows
    assert row["verdict"] == "no benefit" and row["ci_low"] < 0 < row["ci_high"]
