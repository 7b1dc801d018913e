"""A resume continues the same run: it may change budgets and logging, never what the run trains on or how.

Every run keeps a history (in each checkpoint and in ``history.jsonl``) of the manifests it trained on and
of every setting changed on resume, and sampled cards list every case of that history.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from synthmed.cli import main
from synthmed.data.manifest import load_manifest
from synthmed.data.prepare import PrepareOptions, prepare_dataset
from synthmed.train.checkpoint import list_checkpoints
from tests.conftest import TOY_OPTIONS
from tests.train.test_training import read_jsonl, tiny_config


def write_run_config(tmp_path: Path, manifest: Path | str, steps: int = 4) -> Path:
    path = tmp_path / "run.yaml"
    config = tiny_config(Path(manifest), tmp_path / "run", steps=steps)
    config["data"]["manifest"] = str(manifest)  # as given: may be relative
    path.write_text(yaml.safe_dump(config))
    return path


def cli_error(argv: list[str], capsys) -> str:
    """The one-line message of a command that must fail cleanly with exit code 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture
def run4(toy_prepared, tmp_path, capsys) -> Path:
    """A dcgan3d run of 4 steps (checkpoint at step 4) on `toy_prepared`."""
    assert main(["train", "--config", str(write_run_config(tmp_path, toy_prepared))]) == 0
    capsys.readouterr()
    return tmp_path / "run"


def test_resume_on_another_split_of_the_same_cases_is_refused(run4, toy_msd, toy_prepared, tmp_path, capsys):
    """The leak: the same cases prepared with another split seed put training cases of the first run in the test split."""
    other = prepare_dataset([toy_msd], tmp_path / "prepared_seed1", PrepareOptions(**TOY_OPTIONS, seed=1), progress=False)
    first, second = load_manifest(toy_prepared), load_manifest(other)
    assert set(first.split_ids("train")) & set(second.split_ids("test")), "the two splits must overlap for a leak"
    before = {p: p.read_bytes() for p in [run4 / "config.yaml", run4 / "history.jsonl", *list_checkpoints(run4)]}

    err = cli_error(["train", "--resume", str(run4), "--set", f"data.manifest={other}", "--set", "train.steps=8"], capsys)
    assert f"data.manifest: {first.path} (sha256 {first.sha256[:12]}) -> {second.path} (sha256 {second.sha256[:12]})" in err
    assert f"--config {run4 / 'config.yaml'} --set data.manifest={second.path} --out NEW_RUN_DIR" in err
    assert "train.steps" in err  # named among what may change
    after = {p: p.read_bytes() for p in [run4 / "config.yaml", run4 / "history.jsonl", *list_checkpoints(run4)]}
    assert after == before  # nothing rewritten, nothing deleted
    assert [p.name for p in list_checkpoints(run4)] == ["step_00000004.pt"]


@pytest.mark.parametrize("override,expected", [
    ("model.params.latent_dim=32", "model.params.latent_dim: 16 -> 32"),
    ("model.name=wgan3d", "model.name: dcgan3d -> wgan3d; model.params.clip_value: (absent) -> 0.01"),
    ("optim.G.lr=0.001", "optim.G.lr: 0.0002 -> 0.001"),
    ("train.batch_size=2", "train.batch_size: 4 -> 2"),
    ("train.seed=3", "train.seed: 0 -> 3"),
    ("data.split=trainval", "data.split: train -> trainval"),
])
def test_resume_refuses_changes_of_model_optimiser_batch_seed_and_data(run4, tmp_path, capsys, override, expected):
    config_before = (run4 / "config.yaml").read_text()
    err = cli_error(["train", "--resume", str(run4), "--set", override, "--set", "train.steps=8"], capsys)
    assert err.startswith(f"synthmed train: error: {run4}: --resume continues a run exactly"), err
    assert f"({expected}" in err and "train.steps: 4 -> 8" not in err, err  # only refused keys are listed
    assert f"--set {override} --out NEW_RUN_DIR" in err
    assert (run4 / "config.yaml").read_text() == config_before


def test_budget_and_logging_changes_are_recorded_in_the_history(run4, capsys):
    argv = ["train", "--resume", str(run4), "--set", "train.steps=8", "--set", "train.log_every=4",
            "--set", "train.keep_checkpoints=3"]
    assert main(argv) == 0
    history = read_jsonl(run4 / "history.jsonl")
    assert [(e["event"], e["step"]) for e in history] == [("start", 0), ("resume", 4)]
    assert history[0]["config"]["train"]["steps"] == 4 and history[0]["config"]["train"]["log_every"] == 2
    assert history[1]["changes"] == {"train.keep_checkpoints": [2, 3], "train.log_every": [2, 4], "train.steps": [4, 8]}
    manifest = load_manifest(history[0]["manifest"]["path"])
    assert all(e["manifest"] == {"path": str(manifest.path), "sha256": manifest.sha256} for e in history)
    assert all(e["trained_on"] == sorted(manifest.split_ids("train")) for e in history)
    state = torch.load(list_checkpoints(run4)[-1], weights_only=True)
    assert state["step"] == 8 and state["history"] == history
    assert yaml.safe_load((run4 / "config.yaml").read_text())["train"]["steps"] == 8  # the configuration now in force


def test_a_moved_manifest_with_the_same_content_may_be_named_on_resume(run4, toy_prepared, tmp_path):
    moved = Path(shutil.copytree(toy_prepared.parent, tmp_path / "moved"))
    assert main(["train", "--resume", str(run4), "--set", f"data.manifest={moved}", "--set", "train.steps=6"]) == 0
    change = read_jsonl(run4 / "history.jsonl")[-1]["changes"]
    assert change == {"data.manifest": [str(toy_prepared.resolve()), str(moved / "manifest.json")], "train.steps": [4, 6]}


def test_the_manifest_path_is_stored_absolute_so_resume_works_from_any_folder(toy_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(toy_prepared.parent.parent)
    relative = os.path.relpath(toy_prepared.parent)  # "prepared"
    assert main(["train", "--config", str(write_run_config(tmp_path, relative))]) == 0
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["manifest"]
    assert stored == str(toy_prepared.parent.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--resume", str(tmp_path / "run"), "--set", "train.steps=6"]) == 0
    assert [p.name for p in list_checkpoints(tmp_path / "run")][-1] == "step_00000006.pt"


def test_a_checkpoint_written_without_a_history_still_resumes(run4):
    path = list_checkpoints(run4)[-1]
    state = torch.load(path, weights_only=True)
    del state["history"]
    torch.save(state, path)
    assert main(["train", "--resume", str(run4), "--set", "train.steps=6"]) == 0
    history = read_jsonl(run4 / "history.jsonl")
    assert [(e["event"], e["step"]) for e in history] == [("start", 0), ("resume", 4)]
    assert "rebuilt" in history[0]["note"] and history[0]["config"]["train"]["steps"] == 4


def test_unreadable_newest_checkpoint_names_the_readable_older_one(toy_prepared, tmp_path, capsys):
    config = write_run_config(tmp_path, toy_prepared, steps=8)
    assert main(["train", "--config", str(config)]) == 0
    run = tmp_path / "run"
    older, newest = list_checkpoints(run)
    newest.write_bytes(newest.read_bytes()[:5000])  # an interrupted copy
    capsys.readouterr()
    err = cli_error(["train", "--resume", str(run), "--set", "train.steps=12"], capsys)
    assert f"{newest}: not a readable synthmed checkpoint (truncated or corrupted" in err
    assert f"the previous checkpoint {older} (step 4) is readable: to resume from it, delete {newest}" in err
    assert "weights_only" not in err
    assert list_checkpoints(run) == [older, newest]  # nothing deleted, no silent fall-back


def test_a_run_folder_under_a_file_is_a_clean_error(toy_prepared, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    err = cli_error(["train", "--config", str(write_run_config(tmp_path, toy_prepared)), "--out", str(blocker / "run")], capsys)
    assert err.startswith(f"synthmed train: error: {blocker / 'run'}: cannot write the run folder"), err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_is_a_clean_error(toy_prepared, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        err = cli_error(["train", "--config", str(write_run_config(tmp_path, toy_prepared)), "--out", str(locked / "run")], capsys)
    finally:
        locked.chmod(0o700)
    assert err == f"synthmed train: error: {locked / 'run'}: cannot write the run folder (Permission denied)"


def test_keep_checkpoints_is_announced_once(toy_prepared, tmp_path, caplog):
    with caplog.at_level("INFO", logger="synthmed.train.loop"):
        assert main(["train", "--config", str(write_run_config(tmp_path, toy_prepared))]) == 0
    lines = [r.getMessage() for r in caplog.records if "train.keep_checkpoints" in r.getMessage()]
    assert lines == [f"{tmp_path / 'run'}: a checkpoint every 4 steps; keeping the newest 2 (train.keep_checkpoints), "
                     "older ones are deleted"]


def test_history_entries_are_json_lines(run4):
    lines = (run4 / "history.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["event"] == "start"
