"""Work units of the downstream benchmark: equal step budgets, baselines, the label-budget guard, run_unit/aggregate."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from synthmed.data.manifest import load_manifest
from synthmed.downstream import benchmark as bench
from synthmed.downstream.arms import expand_arms
from synthmed.downstream.benchmark import Benchmark, aggregate, plan_units, run_unit, unit_done
from synthmed.downstream.config import resolve_downstream_config
from synthmed.errors import UserError

from .conftest import write_sphere_set


def config_of(manifest, out, synthetic=None, **extra):
    raw = {"manifest": str(manifest), "synthetic": synthetic or {}, "arms": ["real", "real+synthetic"],
           "n_synthetic": [2], "folds": 2, "seeds": [0],
           "train": {"steps": 1, "batch_size": 4, "model_size": "tiny", "progress": False, "device": "cpu"},
           "stats": {"bootstrap": 200}, "out": str(out)}
    raw.update(extra)
    return resolve_downstream_config(raw)


def test_epochs_convert_to_equal_steps_from_the_real_only_arm(toy_prepared, tmp_path):
    train = {"epochs": 3, "batch_size": 2, "model_size": "tiny", "progress": False}
    config = config_of(toy_prepared, tmp_path / "out", {"toy": "unused"}, n_synthetic=[2, 40], real_sizes=[3, "all"],
                       arms=["real", "synthetic", "real+synthetic", "pretrain_finetune"], train=train)
    manifest = load_manifest(toy_prepared)
    units = plan_units(config)
    for unit in units:
        n_real = 3 if unit.arm.real_size == 3 else len(manifest.split_ids("train", fold=unit.fold))
        assert unit.steps == 3 * math.ceil(n_real / 2), unit.id  # whatever the arm adds in synthetic cases
        assert unit.val_every == math.ceil(n_real / 2)
        assert unit.pretrain_steps == (unit.steps if unit.arm.kind.value == "pretrain_finetune" else 0)
    assert len({u.id for u in units}) == len(units) == len(expand_arms(config)) * 2
    unequal = plan_units(config_of(toy_prepared, tmp_path / "out", {"toy": "unused"}, n_synthetic=[40],
                                   train=dict(train, budget="per_arm_epochs")))
    steps = {u.arm.name: (u.steps, u.pretrain_steps) for u in unequal if u.fold == 0}
    n_real = len(manifest.split_ids("train", fold=0))
    assert steps["real-rall-noaug"] == (3 * math.ceil(n_real / 2), 0)  # the old, unfair budget, on request:
    assert steps["real+synthetic-toy-n40-rall-noaug"] == (3 * math.ceil((n_real + 40) / 2), 0)  # epochs over each arm's cases
    with pytest.raises(UserError, match="train: Value error, give train.steps .* or train.epochs"):
        config_of(toy_prepared, tmp_path / "out", train={"steps": 5, "epochs": 2})


def test_baselines_are_always_there(toy_prepared, tmp_path):
    config = config_of(toy_prepared, tmp_path / "out", {"toy": "x"}, arms=["synthetic", "real+synthetic"],
                       real_sizes=[3], with_augmentation=[True])
    arms = {a.name: a for a in expand_arms(config)}
    assert {"real-r3-noaug", "real-r3-aug", "real-rall-noaug", "real-rall-aug"} <= set(arms)
    assert "real-r3-noaug" in arms and arms["real-r3-aug"].label == "real (3) + augmentation"
    assert {r: b.name for r, b in arms["real+synthetic-toy-n2-r3-aug"].baselines().items()} == {
        "real_only": "real-r3-noaug", "real_augmentation": "real-r3-aug"}
    assert {r: b.name for r, b in arms["real-r3-aug"].baselines().items()} == {"real_only": "real-r3-noaug"}
    assert arms["real-r3-noaug"].baselines() == {}
    assert arms["synthetic-toy-n2-aug"].baselines()["real_only"].name == "real-rall-noaug"


def sets_on_each_units_cases(manifest, out, config, extra_case: str | None = None) -> None:
    """One generator per fold (placeholder {fold}) whose card lists exactly the unit's labelled cases."""
    for unit in plan_units(config):
        if unit.synthetic_path and not (tmp := out / f"f{unit.fold}").exists():
            seen = list(unit.budget_ids) + ([extra_case] if extra_case and unit.fold == 0 else [])
            write_sphere_set(tmp, manifest, 4, trained_on=seen)


def test_label_budget_guard_refuses_a_generator_that_saw_more_real_cases(toy_prepared, tmp_path):
    config = config_of(toy_prepared, tmp_path / "out", {"toy": str(tmp_path / "sets" / "f{fold}")}, real_sizes=[3])
    manifest = load_manifest(toy_prepared)
    sets_on_each_units_cases(toy_prepared, tmp_path / "sets", config)
    Benchmark(config)  # each generator saw only its unit's 3 real + validation cases: accepted
    units = [u for u in plan_units(config) if u.fold == 0 and u.synthetic_path]
    outside = sorted(set(manifest.split_ids("train")) - set(units[0].budget_ids))[0]
    card_path = tmp_path / "sets" / "f0" / "card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "trained_on_case_ids": sorted(card["trained_on_case_ids"] + [outside])}))
    with pytest.raises(UserError, match=rf"(?s)label-budget guard refuses.*f0 was trained on 1 real labelled case\(s\) "
                                        rf"that arm real\+synthetic-toy-n2-r3-noaug \(seed 0 fold 0\).*\({outside}\)"):
        Benchmark(config)
    assert not (tmp_path / "out").exists()
    allowed = Benchmark(config, allow_extra_labels=True)
    assert allowed.extra_labels == {units[0].id: [outside]} and "EXTRA LABELS" in allowed.warnings[0]


@pytest.mark.slow
def test_units_run_once_aggregate_reads_finished_ones_and_extra_labels_are_labelled(toy_prepared, tmp_path, monkeypatch):
    config = config_of(toy_prepared, tmp_path / "out", {"toy": str(tmp_path / "sets" / "f{fold}")}, real_sizes=[3],
                       allow_extra_labels=True)
    manifest = load_manifest(toy_prepared)
    sets_on_each_units_cases(toy_prepared, tmp_path / "sets", config, extra_case=manifest.split_ids("val")[0])
    units = plan_units(config)
    real_units = [u for u in units if u.arm.name == "real-r3-noaug"]
    trained = []
    original = bench.Benchmark.train_unit
    monkeypatch.setattr(bench.Benchmark, "train_unit", lambda self, unit: trained.append(unit.id) or original(self, unit))
    paths = [run_unit(config, u) for u in real_units]
    assert run_unit(config, real_units[0]) == paths[0] and trained == [u.id for u in real_units]  # idempotent
    assert [unit_done(config, u) for u in units] == [u in real_units for u in units]

    partial = json.loads(aggregate(config).read_text())  # only the finished (real-only) arm
    assert [a["name"] for a in partial["arms"]] == ["real-r3-noaug"] and partial["comparisons"] == []
    assert partial["units"] == {"planned": 4, "finished": 2, "complete": False}

    for u in units:
        run_unit(config, u)
    results = json.loads(aggregate(config).read_text())
    assert results["units"]["complete"] and results["extra_labels_warning"] and results["extra_labels_allowed"]
    arms = {a["name"]: a for a in results["arms"]}
    assert arms["real+synthetic-toy-n2-r3-noaug"]["extra_labels"]["n_cases"] == 1
    assert arms["real-r3-noaug"]["extra_labels"] is None
    [verdict] = results["verdicts"]
    assert verdict.startswith("real (3) + toy × 2: ") and "against real (3) only" in verdict and "EXTRA LABELS" in verdict
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("arm")
    assert summary.extra_labels.to_dict() == {"real-r3-noaug": False, "real+synthetic-toy-n2-r3-noaug": True}
    assert set(summary.steps) == {1} and "verdict_vs_real_only" in summary.columns
