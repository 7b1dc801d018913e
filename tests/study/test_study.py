"""`synthmed study`: resume, shared workers, sub-manifests and the label budget, bad configurations.

One tiny study (bundled hippocampus at 16^3, a few steps per stage, two seeds) is run once by one
worker and once by two worker processes on one folder; the tests compare them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from synthmed.cli import main
from synthmed.data.manifest import load_manifest
from synthmed.study.locks import UnitLock, read_record
from synthmed.study.run import open_study, run_worker

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "name": "test",
    "data": {"raw": ["bundled"], "prepare": {"intensity": "percentile", "spacing": [1.5, 1.5, 1.5],
                                             "shape": [16, 16, 16], "shape_mode": "resize", "test_fraction": 0.25,
                                             "val_fraction": 0.15, "folds": 0}},
    "real_sizes": [6],
    "seeds": [0, 1],
    "generators": {"dcgan": {"preset": str(ROOT / "configs" / "dcgan3d_32.yaml"), "steps": 6,
                             "set": ["model.params.latent_dim=16", "model.params.base_channels=4",
                                     "model.params.max_channels=16", "train.batch_size=4"]}},
    "n_samples": 6,
    "evaluation": {"features": ["radiomics"], "bootstrap": 10},
    "downstream": {"arms": ["real", "real+synthetic"], "n_synthetic": [6], "with_augmentation": [False],
                   "train": {"epochs": 1, "batch_size": 4, "model_size": "tiny"}, "stats": {"bootstrap": 100}},
}


def write_config(folder: Path, raw: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.in.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> Path:
    """The tiny study run by one worker in this process, with the one torch thread the two workers of
    the test below get (other thread counts sum floats in another order: equal only to ~1e-5)."""
    base = tmp_path_factory.mktemp("one")
    study = open_study(write_config(base, TINY), str(base / "study"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_worker(study) == len(study.units)
    finally:
        torch.set_num_threads(threads)
    return study.folder


@pytest.mark.slow
def test_two_workers_share_a_study_without_running_a_unit_twice(one_worker: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, TINY)
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "synthmed.cli", "study", "--config", str(config), "--out", str(out), "--worker"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outputs]
    started = [re.findall(r"^\[[\d:]+\] (\S+) \(pid", o, re.M) for o, _ in outputs]
    all_ids = [u["id"] for u in json.loads((out / "plan.json").read_text())["units"]]
    assert sorted(started[0] + started[1]) == sorted(all_ids)  # every unit once, by one of the two
    assert started[0] and started[1], "both workers should have claimed units"
    one, two = (json.loads((f / "results.json").read_text()) for f in (one_worker, out))
    assert two["comparisons"] == one["comparisons"]
    assert two["verdicts"] == one["verdicts"]


def test_rerun_skips_finished_units(one_worker: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (one_worker / "units").glob("*.json")}
    study = open_study(one_worker / "study.yaml", str(one_worker))
    assert run_worker(study) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (one_worker / "units").glob("*.json")} == before
    # a unit whose record is gone runs again, and only it
    (one_worker / "units" / "report.json").unlink()
    assert run_worker(study) == 1
    assert read_record(one_worker, "report")["pid"] == os.getpid()


def test_generator_and_arms_see_exactly_the_slices_real_cases(one_worker: Path) -> None:
    parent = load_manifest(one_worker / "prepared")
    for seed in (0, 1):
        sub = load_manifest(one_worker / "slices" / f"r6-s{seed}")
        train = sub.split_ids("train")
        assert len(train) == 6 and set(train) <= set(parent.split_ids("train"))
        assert sub.split_ids("val") == parent.split_ids("val") and sub.split_ids("test") == parent.split_ids("test")
        assert sub.split_ids("train", fold=0) == train  # what every downstream arm trains on
        card = json.loads((one_worker / "synthetic" / "dcgan" / f"r6-s{seed}" / "card.json").read_text())
        assert card["trained_on_case_ids"] == sorted(train)  # the generator saw these and no other case
        assert card["manifest"]["sha256"] == sub.sha256
        ensemble = json.loads(next((one_worker / "downstream" / f"r6-s{seed}" / "arms").glob("real-*/seed*/ensemble.json")).read_text())
        assert ensemble["n_real"] == 6 and ensemble["case_ids"] == parent.split_ids("test")
    seeds = [load_manifest(one_worker / "slices" / f"r6-s{s}").split_ids("train") for s in (0, 1)]
    assert seeds[0] != seeds[1]  # each seed draws its own real subset


def test_results_hold_signed_effects_and_verdicts(one_worker: Path) -> None:
    doc = json.loads((one_worker / "results.json").read_text())
    rows = doc["comparisons"]["6"]
    assert {(r["arm"], r["baseline"]) for r in rows} == {("real+synthetic-dcgan-n6-noaug", "real-noaug")}
    row = rows[0]
    assert row["mean_difference"] == pytest.approx(row["mean_dice"] - row["baseline_dice"])
    assert row["ci_low"] <= row["mean_difference"] <= row["ci_high"]
    assert row["n_cases"] == 10 and row["baseline_role"] == "real_only"
    assert row["verdict"] in {"benefit", "harm", "no benefit"}
    assert doc["verdicts"] == [row["sentence"]]
    arms = {a["arm"]: a for a in doc["arms"]["6"]}
    assert set(arms) == {"real-noaug", "real+synthetic-dcgan-n6-noaug"}
    for name, a in arms.items():
        assert a["ci_low"] <= a["dice"] <= a["ci_high"] and a["n_cases"] == 10 and a["hd95_unit"] == "mm"
        assert a["dice"] == pytest.approx(row["mean_dice"] if name == row["arm"] else row["baseline_dice"])
    assert row["sentence"].startswith("real + dcgan x 6: ") and f"against real: {row['verdict']} (Holm p = " in row["sentence"]
    assert doc["protocol"] == "fixed_validation" and (one_worker / "report.html").is_file()


def test_a_held_lock_is_not_taken_and_a_released_one_is(tmp_path: Path) -> None:
    first, second = UnitLock(tmp_path, "u"), UnitLock(tmp_path, "u")
    assert first.acquire() and not second.acquire()
    assert json.loads((tmp_path / "locks" / "u.lock").read_text())["pid"] == os.getpid()
    first.release()
    assert second.acquire()
    second.release()


def test_a_dead_workers_lock_is_free(tmp_path: Path) -> None:
    code = ("import sys, os; from pathlib import Path; from synthmed.study.locks import UnitLock; "
            f"assert UnitLock(Path({str(tmp_path)!r}), 'u').acquire(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (tmp_path / "locks" / "u.lock").is_file()  # the file stays, naming its dead owner
    lock = UnitLock(tmp_path, "u")
    assert lock.acquire()
    lock.release()


@pytest.mark.parametrize("key, value, named", [
    (("generators", "dcgan", "stepz"), 5, "generators.dcgan.stepz: unknown key"),
    (("real_sizes",), [0], "real_sizes"),
    (("protocol",), "kfold", "protocol"),
    (("n_samples",), 2, "n_samples"),  # fewer than downstream.n_synthetic asks for
])
def test_bad_config_is_refused_in_one_line_naming_the_key(tmp_path, capsys, key, value, named) -> None:
    raw = json.loads(json.dumps(TINY))
    node = raw
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    config = write_config(tmp_path, raw)
    assert main(["study", "--config", str(config), "--out", str(tmp_path / "s"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err
    assert not (tmp_path / "s").exists()


def test_dry_run_prints_the_units_and_writes_nothing(tmp_path, capsys) -> None:
    config = write_config(tmp_path, TINY)
    assert main(["study", "--config", str(config), "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train-dcgan-r6-s1" in out and "downstream-r6-s0" in out and "13 units" in out
    assert not (tmp_path / "s").exists()


def test_a_study_folder_is_not_resumed_with_another_configuration(one_worker: Path, tmp_path: Path, capsys) -> None:
    raw = {**TINY, "seeds": [0, 2]}
    assert main(["study", "--config", str(write_config(tmp_path, raw)), "--out", str(one_worker)]) == 2
    assert "another configuration" in capsys.readouterr().err


def test_a_folder_that_is_not_a_study_is_refused_and_left_as_it_was(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["study", "--config", str(write_config(tmp_path, TINY)), "--out", str(mine)]) == 2
    assert "not a study folder" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_the_demo_runs_configs_study_tiny(tmp_path: Path) -> None:
    from synthmed.demo import DEMO_GENERATOR, demo_study
    from synthmed.study.config import load_study_config
    from synthmed.study.units import generator_config

    preset = tmp_path / "gen.yaml"
    preset.write_text(yaml.safe_dump(DEMO_GENERATOR))
    demo = write_config(tmp_path, demo_study(preset, None, 0))
    tiny, mine = load_study_config(ROOT / "configs" / "study_tiny.yaml"), load_study_config(demo)
    ignore = {"generators", "out"}
    assert mine.model_dump(exclude=ignore) == tiny.model_dump(exclude=ignore)
    assert mine.generators["dcgan"].steps == tiny.generators["dcgan"].steps
    runs = [generator_config(c, "dcgan", tmp_path / "m", tmp_path / "run", 0) for c in (tiny, mine)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("study_*.yaml")), ids=lambda p: p.stem)
def test_every_study_preset_validates(preset: Path, tmp_path: Path) -> None:
    """Keys, values and generator presets (the real-data presets' datasets are not needed here)."""
    from synthmed.config import read_yaml
    from synthmed.study.config import StudyConfig
    from synthmed.study.units import generator_config

    config = StudyConfig.model_validate(read_yaml(preset))
    for name, gen in config.generators.items():
        gen.preset = str(ROOT / gen.preset)
        run = generator_config(config, name, tmp_path / "m", tmp_path / "run", 0)
        assert run.train.steps == gen.steps
    assert config.downstream.with_augmentation == [False, True]  # real + augmentation is always a baseline


def test_folds_protocol_slices_draw_from_the_folds_training_part(tmp_path: Path) -> None:
    from synthmed.data.manifest import Manifest
    from synthmed.study.config import StudyConfig
    from synthmed.study.plan import Slice, slice_cases, write_sub_manifest

    ids = [f"c{i:02d}" for i in range(20)]
    folds = [ids[0:5], ids[5:10], ids[10:15]]
    doc = {"labels": {"0": "bg", "1": "fg"}, "preprocessing": {}, "cases": [{"id": i, "cache": f"cases/{i}.npz"} for i in ids],
           "splits": {"train": ids[:15], "val": ids[15:17], "test": ids[17:], "folds": folds}}
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "manifest.json").write_text(json.dumps(doc))
    manifest = Manifest(tmp_path / "prepared" / "manifest.json", doc)
    config = StudyConfig.model_validate({**TINY, "protocol": "folds", "real_sizes": [4],
                                         "data": {"prepared": str(tmp_path / "prepared")}})
    cases = slice_cases(manifest, config, Slice(4, 0, fold=1))
    assert cases["val"] == folds[1] and cases["test"] == ids[17:]
    assert len(cases["train"]) == 4 and set(cases["train"]) <= set(folds[0] + folds[2])
    path = write_sub_manifest(manifest, cases, tmp_path / "slices" / "r4-s0-f1", Slice(4, 0, fold=1))
    sub = json.loads(path.read_text())
    assert sub["splits"]["folds"] == [folds[1]] and sub["splits"]["train"] == cases["train"]
    assert {c["cache"] for c in sub["cases"]} == {f"../../prepared/cases/{i}.npz" for i in
                                                  cases["train"] + cases["val"] + cases["test"]}
    with pytest.raises(Exception, match="exceeds the 10 cases of fold 1's training part"):
        slice_cases(manifest, config, Slice(11, 0, fold=1))


def test_jobs_split_threads_and_gpus_between_workers(monkeypatch) -> None:
    from synthmed.study.run import worker_environment

    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    envs = [worker_environment(i, 4) for i in range(4)]
    assert [e["OMP_NUM_THREADS"] for e in envs] == ["2"] * 4
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]


def test_a_failed_unit_blocks_what_needs_it_and_a_rerun_retries_it(one_worker: Path, tmp_path: Path, monkeypatch) -> None:
    from synthmed.errors import UserError
    from synthmed.study import units as work

    calls = []

    def failing_train(config, study, unit):
        calls.append(unit.id)
        raise UserError(f"{unit.id}: constructed failure")

    monkeypatch.setattr(work, "run_train", failing_train)
    raw = {**TINY, "data": {"prepared": str(one_worker / "prepared")}}
    study = open_study(write_config(tmp_path, raw), str(tmp_path / "s"))
    with pytest.raises(UserError, match="unit\\(s\\) failed: train-dcgan-r6-s0, train-dcgan-r6-s1"):
        run_worker(study)
    assert sorted(calls) == ["train-dcgan-r6-s0", "train-dcgan-r6-s1"]  # each tried once in a session
    record = json.loads((tmp_path / "s" / "units" / "train-dcgan-r6-s0.failed.json").read_text())
    assert "constructed failure" in record["error"]
    assert not list((tmp_path / "s" / "units").glob("sample-*")) and not (tmp_path / "s" / "results.json").exists()
    with pytest.raises(UserError):
        run_worker(study)  # a new session retries the failed units
    assert len(calls) == 4
