"""`kill -9` in the middle of prepare, train, sample and evaluate, then a rerun.

Nothing half-written is trusted (no final folder appears, a half set is refused), the rerun succeeds
(train continues from its last complete checkpoint, or starts afresh when none was written), and the
leftovers of the killed run are removed. The killed run is a real `python -m synthmed.cli` process;
the rerun runs in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from synthmed.cli import main
from synthmed.data.toy import write_toy_dataset
from synthmed.fileio import OUTPUT_MARKER, OWNER_FILE
from synthmed.train.checkpoint import list_checkpoints
from synthmed.vtt.study import StudyOptions, create_study
from synthmed.errors import UserError
from tests.train.test_training import tiny_config

pytestmark = pytest.mark.slow  # each starts a Python process that imports torch (5-20 s on a busy machine)

REPO = Path(__file__).resolve().parents[1]
TOY = ["--shape", "16", "16", "16", "--test-fraction", "0.2", "--val-fraction", "0.1", "--folds", "0"]


def start(args: list, log: Path) -> subprocess.Popen:
    """`synthmed ARGS` in a new process, with this checkout first on PYTHONPATH."""
    path = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "synthmed.cli", *map(str, args)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout_s: float = 300) -> None:
    """SIGKILL `proc` as soon as `ready()`; fail when it ends first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before it could be killed:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"nothing to kill it at within {timeout_s} s:\n{log.read_text()}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*.partial"))


def has_files(folder_glob: Callable[[], list[Path]], sub: str) -> Callable[[], bool]:
    """ready(): some partial folder holds a file under `sub`."""
    return lambda: any(p.is_dir() and any((p / sub).glob("*")) for p in folder_glob())


def assert_left_by(partial: Path, proc: subprocess.Popen) -> None:
    assert json.loads((partial / OWNER_FILE).read_text())["pid"] == proc.pid and not (partial / OUTPUT_MARKER).exists()


@pytest.fixture
def toy(toy_pipeline) -> dict[str, Path]:
    """A prepared toy set, a tiny run trained on it and a set sampled from it (shared, see conftest)."""
    return toy_pipeline


def test_prepare_killed_leaves_no_output_and_a_rerun_cleans_up(tmp_path):
    raw = write_toy_dataset(tmp_path / "raw", n_cases=24, layout="msd")
    out, log = tmp_path / "prepared", tmp_path / "log.txt"
    proc = start(["prepare", raw, "--out", out, *TOY], log)
    kill_when(proc, has_files(lambda: partials(out), "cases"), log)
    assert not out.exists()
    [left] = partials(out)
    assert_left_by(left, proc)
    assert main(["prepare", str(raw), "--out", str(out), *TOY]) == 0
    assert partials(out) == [] and (out / OUTPUT_MARKER).is_file()
    assert len(list((out / "cases").glob("*.npz"))) == 24


def test_sample_killed_leaves_no_set_a_half_set_is_refused_and_a_rerun_cleans_up(toy, tmp_path):
    out, log = tmp_path / "synthetic", tmp_path / "log.txt"
    proc = start(["sample", "--checkpoint", toy["run"], "-n", "300", "--out", out], log)
    kill_when(proc, has_files(lambda: partials(out), "imagesTr"), log)
    assert not out.exists()
    [left] = partials(out)
    assert_left_by(left, proc)
    with pytest.raises(UserError, match="half-written output folder"):
        create_study(str(toy["manifest"]), [left], tmp_path / "study", StudyOptions(n=4))
    assert main(["sample", "--checkpoint", str(toy["run"]), "-n", "4", "--out", str(out)]) == 0
    assert partials(out) == [] and (out / "card.json").is_file()
    assert len(list((out / "labelsTr").glob("*.nii.gz"))) == 4


def test_evaluate_killed_leaves_no_output_and_the_card_untouched(toy, tmp_path):
    out, log = tmp_path / "eval", tmp_path / "log.txt"
    card = (toy["synthetic"] / "card.json").read_text()
    fast = ["--features", "radiomics", "--bootstrap", "10", "--kid-subsets", "10", "--offline"]
    proc = start(["evaluate", "--real", toy["prepared"], "--synthetic", toy["synthetic"], "--out", out, *fast], log)
    kill_when(proc, lambda: any((p / OWNER_FILE).is_file() for p in partials(out)), log)  # at once, mid-evaluation
    assert not out.exists() and (toy["synthetic"] / "card.json").read_text() == card
    assert len(partials(out)) == 1
    assert main(["evaluate", "--real", str(toy["prepared"]), "--synthetic", str(toy["synthetic"]), "--out", str(out),
                 "--no-card", *fast]) == 0
    assert partials(out) == [] and (out / "metrics.json").is_file()


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _config(tmp_path: Path, manifest: Path, run: Path, **train_options) -> Path:
    config = tiny_config(manifest, run, steps=100_000)
    config["train"].update(train_options)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_killed_resumes_from_its_last_complete_checkpoint(toy, tmp_path):
    run, log = tmp_path / "run", tmp_path / "log.txt"
    proc = start(["train", "--config", _config(tmp_path, toy["manifest"], run, checkpoint_every=4)], log)
    kill_when(proc, lambda: bool(list_checkpoints(run)), log)
    last = list_checkpoints(run)[-1]
    step = torch.load(last, weights_only=True)["step"]  # complete: written under a temporary name, then renamed
    assert main(["train", "--resume", str(run), "--set", f"train.steps={step + 4}"]) == 0
    newest = torch.load(list_checkpoints(run)[-1], weights_only=True)
    assert newest["step"] == step + 4
    assert logged_steps(run) == list(range(2, step + 5, 2))  # what the killed run logged after `step` is gone


def test_train_killed_before_its_first_checkpoint_starts_afresh(toy, tmp_path):
    run, log = tmp_path / "run", tmp_path / "log.txt"
    config = _config(tmp_path, toy["manifest"], run, checkpoint_every=100_000)
    proc = start(["train", "--config", config], log)
    kill_when(proc, lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size > 0, log)
    assert list_checkpoints(run) == []
    assert main(["train", "--resume", str(run)]) == 2  # nothing to resume: said so, no traceback
    assert main(["train", "--config", str(config), "--set", "train.steps=4", "--set", "train.checkpoint_every=4"]) == 0
    assert [torch.load(p, weights_only=True)["step"] for p in list_checkpoints(run)] == [4]
    assert logged_steps(run) == [2, 4]  # none of the killed run's lines
