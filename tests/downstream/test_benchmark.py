"""End-to-end downstream benchmark on 16³ toy data: outputs, leakage guard, resume, bad configs."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest
import yaml

from synthmed.data.manifest import load_manifest
from synthmed.downstream import benchmark as bench
from synthmed.downstream.benchmark import run_downstream
from synthmed.downstream.cli import add_downstream_parser
from synthmed.downstream.config import resolve_downstream_config
from synthmed.errors import UserError

from .conftest import write_sphere_set

TINY_TRAIN = {"steps": 4, "batch_size": 4, "model_size": "tiny", "progress": False}


def tiny_config(manifest, synthetic, out, **extra):
    raw = {"manifest": str(manifest), "synthetic": {"toy": str(synthetic)} if synthetic else {},
           "arms": ["real", "synthetic", "real+synthetic"], "n_synthetic": [2], "folds": 2, "seeds": [0],
           "train": dict(TINY_TRAIN), "stats": {"bootstrap": 200}, "out": str(out)}
    raw.update(extra)
    return resolve_downstream_config(raw)


@pytest.mark.slow
def test_tiny_end_to_end_run_writes_results_and_resumes(toy_prepared, sphere_set, tmp_path, monkeypatch):
    config = tiny_config(toy_prepared, sphere_set, tmp_path / "out")
    out = run_downstream(config)
    manifest = load_manifest(toy_prepared)
    test_ids = manifest.split_ids("test")

    results = json.loads((out / "results.json").read_text())
    arms = {a["name"]: a for a in results["arms"]}
    assert set(arms) == {"real-rall-noaug", "synthetic-toy-n2-noaug", "real+synthetic-toy-n2-rall-noaug"}
    assert {a["category"] for a in arms.values()} == {"trained_on_real", "trained_on_fake", "trained_on_real_and_fake"}
    assert arms["synthetic-toy-n2-noaug"]["n_real_per_fold"] == 0
    assert arms["real+synthetic-toy-n2-rall-noaug"]["n_synthetic_used"] == 2
    for a in arms.values():
        d = a["dice_mean"]
        assert 0 <= d["ci_low"] <= d["mean"] <= d["ci_high"] <= 1
        assert set(a["labels"]) == {"sphere", "core"} and a["wall_s"]["train"] > 0
    assert results["leakage_warning"] is False and results["manifest"]["test_cases"] == test_ids
    comparisons = results["comparisons"]
    assert {c["arm"] for c in comparisons} == {"synthetic-toy-n2-noaug", "real+synthetic-toy-n2-rall-noaug"}
    assert all(c["baseline"] == "real-rall-noaug" and c["baseline_role"] == "real_only" for c in comparisons)
    assert all(c["ci_low"] <= c["mean_difference"] <= c["ci_high"] and c["verdict"] in ("benefit", "harm", "no benefit")
               for c in comparisons)
    assert [c["sentence"] for c in comparisons] == results["verdicts"]
    assert any(v.startswith("real + toy × 2: ") and " Dice [" in v and "against real only: " in v for v in results["verdicts"])
    # equal budgets: every arm took the same optimiser steps with the same batch size
    assert {a["steps"]["train"] for a in arms.values()} == {4} and results["budget"]["mode"] == "equal_steps"
    assert all(a["final_train_loss"] > 0 and a["wall_s"]["train"] > 0 for a in arms.values())
    assert results["units"] == {"planned": 6, "finished": 6, "complete": True}

    per_case = pd.read_csv(out / "per_case.csv")
    assert len(per_case) == 3 * len(test_ids) * 2  # arms x cases x foreground labels
    assert per_case.dice.between(0, 1).all() and (per_case.hd95_mm >= 0).all()
    assert "hd95_mm" in pd.read_csv(out / "summary.csv").columns and results["hd95_unit"] == "mm"
    json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"results.json holds {c}"))
    assert sorted(per_case.case_id.unique()) == sorted(test_ids)
    for name in ("dice_vs_n_synthetic", "dice_vs_real_size", "learning_curves"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    fold_files = sorted((out / "arms").glob("*/seed0/fold*.pt"))
    assert len(fold_files) == 3 * 2

    # resume: nothing is retrained; a new arm (augmentation on) trains only its own folds
    calls = []
    original = bench.Benchmark.train_unit
    monkeypatch.setattr(bench.Benchmark, "train_unit", lambda self, unit: calls.append(unit.arm.name) or original(self, unit))
    run_downstream(config)
    assert calls == []
    run_downstream(tiny_config(toy_prepared, sphere_set, tmp_path / "out", arms=["real"], with_augmentation=[False, True]))
    assert calls == ["real-rall-aug", "real-rall-aug"]

    # a changed setting for a finished arm is refused rather than mixed in
    with pytest.raises(UserError, match="another configuration"):
        run_downstream(tiny_config(toy_prepared, sphere_set, tmp_path / "out", train=dict(TINY_TRAIN, steps=3)))


def test_leakage_guard_refuses_a_set_trained_on_test_cases(toy_prepared, tmp_path):
    manifest = load_manifest(toy_prepared)
    leaking = write_sphere_set(tmp_path / "leak", toy_prepared, 2, trained_on=manifest.split_ids("trainval") + manifest.split_ids("test")[:1])
    with pytest.raises(UserError, match="LEAKAGE") as err:
        run_downstream(tiny_config(toy_prepared, leaking, tmp_path / "out"))
    assert manifest.split_ids("test")[0] in str(err.value) and "--allow-leakage" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_leakage_guard_names_a_different_manifest(toy_prepared, tmp_path):
    other = write_sphere_set(tmp_path / "other", toy_prepared, 2, manifest_sha="f" * 64)
    with pytest.raises(UserError, match="not this manifest"):
        run_downstream(tiny_config(toy_prepared, other, tmp_path / "out"))


def test_allow_leakage_runs_and_carries_the_warning(toy_prepared, tmp_path):
    manifest = load_manifest(toy_prepared)
    leaking = write_sphere_set(tmp_path / "leak", toy_prepared, 2, trained_on=manifest.split_ids("test"))
    config = tiny_config(toy_prepared, leaking, tmp_path / "out", arms=["real", "synthetic"],
                         train=dict(TINY_TRAIN, steps=1))
    results = json.loads((run_downstream(config, allow_leakage=True) / "results.json").read_text())
    assert results["leakage_warning"] is True and "LEAKAGE" in results["warnings"][0]


def test_unknown_arm_is_named_with_a_suggestion(toy_prepared):
    with pytest.raises(UserError, match=r"arms.*unknown arm 'rael'.*did you mean 'real'"):
        resolve_downstream_config({"manifest": str(toy_prepared), "arms": ["rael"]})


def test_unknown_key_and_synthetic_arm_without_sets(toy_prepared):
    with pytest.raises(UserError, match="train.epoch: unknown key"):
        resolve_downstream_config({"manifest": str(toy_prepared), "arms": ["real"], "train": {"epoch": 3}})
    with pytest.raises(UserError, match="need synthetic sets"):
        resolve_downstream_config({"manifest": str(toy_prepared), "arms": ["real", "synthetic"]})


def test_augmentation_takes_parameters_and_with_augmentation_the_arm_switches(toy_prepared):
    config = resolve_downstream_config({"manifest": str(toy_prepared), "arms": ["real"], "with_augmentation": [False, True],
                                        "augmentation": {"affine_prob": 1.0}})
    assert config.with_augmentation == [False, True] and config.augmentation.affine_prob == 1.0
    with pytest.raises(UserError, match="augmentation: .*list whether arms run without/with augmentation in with_augmentation"):
        resolve_downstream_config({"manifest": str(toy_prepared), "arms": ["real"], "augmentation": [False, True]})


def test_missing_synthetic_set_is_named(toy_prepared, tmp_path):
    with pytest.raises(UserError, match=r"nowhere.*not found"):
        run_downstream(tiny_config(toy_prepared, tmp_path / "nowhere", tmp_path / "out"))


def test_too_many_synthetic_or_real_cases_are_refused(toy_prepared, sphere_set, tmp_path):
    with pytest.raises(UserError, match="has 4 cases, n_synthetic asks for 9"):
        run_downstream(tiny_config(toy_prepared, sphere_set, tmp_path / "out", n_synthetic=[9]))
    with pytest.raises(UserError, match="real_sizes: \\[50\\] exceed"):
        run_downstream(tiny_config(toy_prepared, sphere_set, tmp_path / "out", real_sizes=[50]))


def test_empty_test_split_is_refused(toy_prepared, tmp_path):
    data = json.loads(toy_prepared.read_text())
    data["splits"]["train"] += data["splits"]["test"]
    data["splits"]["test"] = []
    toy_prepared.write_text(json.dumps(data))
    with pytest.raises(UserError, match="test split is empty"):
        run_downstream(tiny_config(toy_prepared, None, tmp_path / "out", arms=["real"]))


def test_parser_dry_run_lists_arms(toy_prepared, sphere_set, tmp_path, capsys):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({"manifest": str(toy_prepared), "synthetic": {"toy": str(sphere_set)},
                                      "arms": ["real", "pretrain_finetune"], "n_synthetic": [2, 4]}))
    parser = argparse.ArgumentParser()
    add_downstream_parser(parser.add_subparsers())
    args = parser.parse_args(["downstream", "--config", str(preset), "--set", "real_sizes=[3, all]", "--dry-run"])
    # the generator saw the whole train split; the 3-case arms see 3 of it (plus the fold's validation cases)
    with pytest.raises(UserError, match=r"(?s)label-budget guard refuses.*arm pretrain_finetune-toy-n2-r3-noaug \(seed 0 fold 0"):
        args.func(args)
    args = parser.parse_args(["downstream", "--config", str(preset), "--set", "real_sizes=[3, all]", "--dry-run",
                              "--allow-extra-labels"])
    args.func(args)
    printed = capsys.readouterr().out
    for name in ["real-r3-noaug", "real-rall-noaug", "pretrain_finetune-toy-n4-r3-noaug"]:
        assert f"  {name} (" in printed
    assert "pretrain_finetune-toy-n4-r3-noaug (trained_on_real_and_fake): toy × 4 → real (3)" in printed
    assert "warning(s)), label budget" in printed
    with pytest.raises(UserError, match="seeds: Value error, needs at least one value"):
        args = parser.parse_args(["downstream", "--config", str(preset), "--set", "seeds=[]", "--dry-run"])
        args.func(args)


def _dry_run(preset_dict, tmp_path, *extra):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(preset_dict))
    parser = argparse.ArgumentParser()
    add_downstream_parser(parser.add_subparsers())
    args = parser.parse_args(["downstream", "--config", str(preset), "--dry-run", *extra])
    return args.func(args)


def test_dry_run_checks_synthetic_sets_leakage_and_out(toy_prepared, sphere_set, tmp_path, capsys):
    manifest = load_manifest(toy_prepared)
    base = {"manifest": str(toy_prepared), "arms": ["real", "synthetic"], "n_synthetic": [2], "out": str(tmp_path / "out")}
    _dry_run({**base, "synthetic": {"toy": str(sphere_set)}}, tmp_path)
    assert "checked: manifest, 1 synthetic set(s) (toy: 4 cases), leakage guard, label budget, counts, --out" in capsys.readouterr().out
    leaking = write_sphere_set(tmp_path / "leak", toy_prepared, 2, trained_on=manifest.split_ids("test"))
    with pytest.raises(UserError, match="LEAKAGE"):
        _dry_run({**base, "synthetic": {"toy": str(leaking)}}, tmp_path)
    (leaking / "card.json").unlink()
    with pytest.raises(UserError, match=r"synthetic set 'toy' \(.*leak\): no card.json; downstream needs the set's provenance"):
        _dry_run({**base, "synthetic": {"toy": str(leaking)}}, tmp_path, "--allow-leakage")
    with pytest.raises(UserError, match=r"\.partial.*unfinished output folder"):
        _dry_run({**base, "synthetic": {"toy": str(sphere_set.rename(tmp_path / ".syn.x.partial"))}}, tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"out .*a_file/results: .*a_file is not a folder"):
        _dry_run({**base, "arms": ["real"], "out": str(blocker / "results")}, tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_2d_run_names_hd95_in_pixels_prints_verdicts_and_says_it_reuses_folds(toy_prepared_2d, tmp_path, capsys):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({"manifest": str(toy_prepared_2d), "arms": ["real"], "with_augmentation": [True],
                                      "folds": 2, "seeds": [0], "train": dict(TINY_TRAIN, steps=1),
                                      "stats": {"bootstrap": 200}, "out": str(tmp_path / "out")}))
    parser = argparse.ArgumentParser()
    add_downstream_parser(parser.add_subparsers())
    args = parser.parse_args(["downstream", "--config", str(preset)])
    args.func(args)
    printed = capsys.readouterr().out
    out = tmp_path / "out"
    text = (out / "results.json").read_text()
    results = json.loads(text, parse_constant=lambda c: pytest.fail(f"results.json holds {c}"))
    assert results["hd95_unit"] == "px" and results["arms"][0]["hd95_unit"] == "px"
    assert "hd95_px" in pd.read_csv(out / "summary.csv").columns and "hd95_px" in pd.read_csv(out / "per_case.csv").columns
    # the real-only baseline is added to an augmentation-only config, and the verdict is printed
    assert [a["name"] for a in results["arms"]] == ["real-rall-noaug", "real-rall-aug"]
    [verdict] = results["verdicts"]
    assert verdict.startswith("real + augmentation: ") and "against real only: " in verdict and f"  {verdict}\n" in printed
    args.func(args)
    assert f"reusing 4 finished fold(s) from {out}" in capsys.readouterr().out


def test_hd95_is_in_mm_for_2d_slices_with_mm_spacing(toy_prepared_2d, tmp_path):
    data = json.loads(toy_prepared_2d.read_text())
    config = resolve_downstream_config({"manifest": str(toy_prepared_2d), "arms": ["real"], "out": str(tmp_path / "out")})
    assert bench.Benchmark(config).hd95_unit == "px"
    data["preprocessing"]["spacing_unit"] = "mm"  # what prepare writes for 2D slices of volumes
    toy_prepared_2d.write_text(json.dumps(data))
    assert bench.Benchmark(config).hd95_unit == "mm"
