"""Output folders: --overwrite never deletes an input or a folder synthmed did not write, leftovers of killed
runs are cleaned, half-written sets are refused, and unwritable or damaged paths are one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from synthmed.cli import main
from synthmed.data.dataset import load_case_arrays
from synthmed.data.manifest import load_manifest
from synthmed.data.toy import write_toy_dataset
from synthmed.errors import UserError
from synthmed.fileio import OUTPUT_MARKER, OWNER_FILE, atomic_directory, read_output_marker, remove_stale_partials

TOY = ["--shape", "16", "16", "16", "--test-fraction", "0.2", "--val-fraction", "0.1", "--folds", "0"]


def cli(args: list[str], capsys) -> tuple[int, str]:
    """Run `synthmed ARGS` in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def pipeline(toy_pipeline) -> dict[str, Path]:
    """raw toy MSD folder, its prepared folder, a tiny trained run and a synthetic set (shared, see conftest)."""
    return toy_pipeline


def write(out: Path, kind: str = "prepare", inputs=(), overwrite: bool = False, text: str = "new") -> Path:
    with atomic_directory(out, kind=kind, inputs=inputs, overwrite=overwrite) as tmp:
        (tmp / "result.txt").write_text(text)
    return out


@pytest.mark.parametrize("where", ["equal", "inside", "contains"])
def test_an_out_overlapping_an_input_is_refused_and_the_input_kept(tmp_path, where):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "image.nii.gz").write_text("raw")
    out = {"equal": data, "inside": data / "prepared", "contains": tmp_path}[where]
    with pytest.raises(UserError) as err:
        write(out, inputs=[data], overwrite=True)
    assert str(out) in str(err.value) and str(data) in str(err.value)
    assert tree(data) == {"sub/image.nii.gz": b"raw"} and not (data / "prepared").exists()


def test_overwrite_replaces_only_a_folder_the_same_command_wrote_and_nothing_else(tmp_path):
    mine = write(tmp_path / "mine", text="old")
    assert read_output_marker(mine)["kind"] == "prepare" and read_output_marker(mine)["entries"] == ["result.txt"]
    write(mine, overwrite=True, text="new")
    assert (mine / "result.txt").read_text() == "new"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="not written by synthmed.*remove it yourself or choose another --out"):
        write(foreign, overwrite=True)
    assert tree(foreign) == {"thesis.tex": b"years of work"}

    with pytest.raises(UserError, match="written by `synthmed prepare`.*`synthmed sample --overwrite` will not"):
        write(mine, kind="sample", overwrite=True)

    (mine / "notes.txt").write_text("mine, not synthmed's")
    with pytest.raises(UserError, match=r"holds files synthmed did not write there \(notes.txt\)"):
        write(mine, overwrite=True)
    assert (mine / "notes.txt").exists() and (mine / "result.txt").read_text() == "new"

    (mine / "notes.txt").unlink()
    write(mine / "analysis", kind="vtt analyze")  # a marked sub-folder written later is synthmed's too
    write(mine, overwrite=True, text="newer")
    assert tree(mine) == {"result.txt": b"newer", OUTPUT_MARKER: (mine / OUTPUT_MARKER).read_bytes()}

    regular_file = tmp_path / "file.txt"
    regular_file.write_text("x")
    with pytest.raises(UserError, match="not written by synthmed"):
        write(regular_file, overwrite=True)
    assert regular_file.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "foreign", "mine"]  # no leftovers


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_finished_folders_and_files_get_the_usual_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = write(tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask  # mkdtemp alone gives 0700
    assert stat.S_IMODE((out / OUTPUT_MARKER).stat().st_mode) == 0o666 & ~umask  # mkstemp alone gives 0600


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _partial(parent: Path, name: str, owner: dict | None, age_s: float = 0.0) -> Path:
    path = parent / name
    path.mkdir()
    (path / "half.txt").write_text("half")
    if owner is not None:
        (path / OWNER_FILE).write_text(json.dumps(owner))
    when = time.time() - age_s
    os.utime(path, (when, when))
    return path


def test_leftovers_of_dead_writers_are_removed_when_the_next_run_starts(tmp_path):
    host = socket.gethostname()
    dead = _partial(tmp_path, ".out.dead0000.partial", {"pid": _dead_pid(), "host": host})
    live = _partial(tmp_path, ".out.live0000.partial", {"pid": os.getpid(), "host": host})
    reused = _partial(tmp_path, ".out.reuse000.partial", {"pid": os.getpid(), "host": host, "start": "1"})
    remote = _partial(tmp_path, ".out.remote00.partial", {"pid": _dead_pid(), "host": host + "-elsewhere"})
    orphan = _partial(tmp_path, ".out.orphan00.partial", None, age_s=3600)
    young = _partial(tmp_path, ".out.young000.partial", None)
    other = _partial(tmp_path, ".out.b.dead0000.partial", {"pid": _dead_pid(), "host": host})  # of "out.b"
    write(tmp_path / "out")
    left = {p.name for p in tmp_path.iterdir()}
    assert not {dead.name, reused.name, orphan.name} & left  # pid gone or reused, or no owner for an hour
    assert {live.name, remote.name, young.name, other.name, "out"} == left
    assert remove_stale_partials(tmp_path / "out") == []


def test_an_unwritable_out_is_a_user_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"file.txt/sub: cannot write the output folder"):
        write(blocker / "sub")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_an_out_in_a_read_only_folder_is_a_user_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(UserError, match=r"locked/out: cannot write the output folder \(Permission denied\)"):
            write(locked / "out")
    finally:
        locked.chmod(0o700)


# --- the commands -------------------------------------------------------------------------------------


def test_prepare_refuses_to_overwrite_its_inputs_or_foreign_folders(pipeline, tmp_path, capsys):
    raw = pipeline["raw"]
    before = tree(raw)
    code, err = cli(["prepare", raw, "--out", raw, "--overwrite", *TOY], capsys)
    assert code == 2 and f"--out {raw} is the input {raw}" in err and "Traceback" not in err
    code, err = cli(["prepare", raw, "--out", raw / "prepared", *TOY], capsys)
    assert code == 2 and "lies inside the input" in err and not (raw / "prepared").exists()
    code, err = cli(["prepare", raw, "--out", raw / "imagesTr", "--overwrite", *TOY], capsys)
    assert code == 2 and "lies inside the input" in err
    assert tree(raw) == before
    datalist = write_toy_dataset(tmp_path / "listed", layout="datalist")  # the images lie beside the JSON
    images = {p.parent for p in (tmp_path / "listed").rglob("*.nii.gz")}
    listed_before = tree(tmp_path / "listed")
    for folder in images:
        code, err = cli(["prepare", datalist, "--out", folder, "--overwrite", *TOY], capsys)
        assert code == 2 and f"{folder}: not written by synthmed" in err
    assert tree(tmp_path / "listed") == listed_before

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("x")
    code, err = cli(["prepare", raw, "--out", notes, "--overwrite", *TOY], capsys)
    assert code == 2 and "not written by synthmed" in err and (notes / "todo.txt").exists()
    code, err = cli(["analyze", raw, "--out", raw, "--overwrite"], capsys)
    assert code == 2 and "is the input" in err and tree(raw) == before

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, err = cli(["prepare", raw, "--out", blocker / "sub", *TOY], capsys)
    assert code == 2 and "file.txt/sub: cannot write the output folder" in err and "Traceback" not in err


def test_sample_refuses_to_overwrite_the_run_it_reads(pipeline, tmp_path, capsys):
    run, prepared = pipeline["run"], pipeline["prepared"]
    before = tree(run)
    code, err = cli(["sample", "--checkpoint", run, "-n", "2", "--out", run, "--overwrite"], capsys)
    assert code == 2 and f"--out {run} is the input {run}" in err
    code, err = cli(["sample", "--checkpoint", run, "-n", "2", "--out", run.parent, "--overwrite"], capsys)
    assert code == 2 and "contains the input" in err
    assert tree(run) == before
    prepared_before = tree(prepared)
    code, err = cli(["sample", "--checkpoint", run, "-n", "2", "--out", prepared, "--overwrite"], capsys)
    assert code == 2 and "written by `synthmed prepare`" in err and tree(prepared) == prepared_before
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, err = cli(["sample", "--checkpoint", run, "-n", "2", "--out", blocker / "sub"], capsys)
    assert code == 2 and "cannot write the output folder" in err and "Traceback" not in err


def test_evaluate_and_vtt_refuse_bad_outs(pipeline, tmp_path, capsys):
    prepared, synthetic = pipeline["prepared"], pipeline["synthetic"]
    before = tree(synthetic)
    fast = ["--features", "radiomics", "--bootstrap", "10", "--kid-subsets", "10", "--offline"]
    code, err = cli(["evaluate", "--real", prepared, "--synthetic", synthetic, "--out", synthetic, "--overwrite", *fast],
                    capsys)
    assert code == 2 and "is the input" in err and tree(synthetic) == before
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, err = cli(["evaluate", "--real", prepared, "--synthetic", synthetic, "--out", blocker / "sub", *fast], capsys)
    assert code == 2 and "cannot write the output folder" in err and "Traceback" not in err
    code, err = cli(["vtt", "create", "--real", f"{prepared}:train", "--synthetic", synthetic, "--n", "4",
                     "--out", blocker / "sub"], capsys)
    assert code == 2 and "cannot write the output folder" in err and "Traceback" not in err
    code, err = cli(["vtt", "create", "--real", f"{prepared}:train", "--synthetic", synthetic, "--n", "4",
                     "--out", prepared, "--overwrite"], capsys)
    assert code == 2 and "is the input" in err
    code, err = cli(["demo", "--out", prepared], capsys)
    assert code == 2 and "written by `synthmed prepare`" in err and (prepared / "manifest.json").is_file()


def test_vtt_refuses_a_set_without_a_card_and_a_half_written_set(pipeline, tmp_path, capsys):
    prepared, synthetic = pipeline["prepared"], pipeline["synthetic"]
    no_card = Path(shutil.copytree(synthetic, tmp_path / "no_card"))
    (no_card / "card.json").unlink()
    half = Path(shutil.copytree(synthetic, tmp_path / ".synthetic.abcd1234.partial"))
    for folder, message in [(no_card, "no card.json, so where its pairs come from is unknown"),
                            (half, "a half-written output folder (.partial)")]:
        code, err = cli(["vtt", "create", "--real", f"{prepared}:train", "--synthetic", folder, "--n", "4",
                         "--out", tmp_path / "study"], capsys)
        assert code == 2 and str(folder) in err and message in err and "Traceback" not in err
    assert not (tmp_path / "study").exists()


def test_a_truncated_case_file_is_a_user_error_naming_it(pipeline, tmp_path, capsys):
    prepared = Path(shutil.copytree(pipeline["prepared"], tmp_path / "prepared"))
    manifest = load_manifest(prepared)
    case = manifest.split_ids("train")[0]
    path = manifest.cache_path(case)
    data = path.read_bytes()
    for cut in (0, len(data) // 2):
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match="run `synthmed prepare` again") as err:
            load_case_arrays(manifest, case)
        assert str(path) in str(err.value)
    damaged = bytearray(data)
    damaged[len(data) // 3: len(data) // 3 + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match="run `synthmed prepare` again"):
        load_case_arrays(manifest, case)
    path.write_bytes(data[: len(data) // 2])
    code, err = cli(["evaluate", "--real", f"{prepared}:train", "--synthetic", pipeline["synthetic"],
                     "--out", tmp_path / "eval", "--features", "radiomics", "--offline"], capsys)
    assert code == 2 and str(path) in err and "Traceback" not in err


def test_demo_replaces_only_an_earlier_demo_folder(tmp_path):
    from synthmed.demo import replace_demo_folder

    out = tmp_path / "demo_output"
    replace_demo_folder(out, ["prepared", "run"])
    (out / "run").mkdir()  # an interrupted demo: the marker was written first
    replace_demo_folder(out, ["prepared", "run"])
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER]
    (out / "mine.txt").write_text("x")
    with pytest.raises(UserError, match=r"holds files synthmed did not write there \(mine.txt\)"):
        replace_demo_folder(out, ["prepared", "run"])
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not written by synthmed"):
        replace_demo_folder(home, ["prepared"])
    assert (home / "thesis.tex").read_text() == "x" and (out / "mine.txt").exists()


def test_downstream_resumes_and_overwrites_only_its_own_folder(toy_prepared, tmp_path, capsys):
    """downstream writes its folder in place: a rerun resumes it, --overwrite empties it, and both only for a
    folder an earlier `synthmed downstream` wrote (its marker) that holds nothing else."""
    config = tmp_path / "downstream.yaml"
    out = tmp_path / "bench"
    config.write_text(json.dumps({"manifest": str(toy_prepared), "arms": ["real"], "folds": 2, "out": str(out),
                                  "stats": {"bootstrap": 200},
                                  "train": {"epochs": 1, "model_size": "tiny", "progress": False}}))
    assert main(["downstream", "--config", str(config)]) == 0
    marker = read_output_marker(out)
    assert marker["kind"] == "downstream" and {"arms", "results.json", "plots"} <= set(marker["entries"])
    folds = sorted((out / "arms").rglob("fold*.pt"))
    assert len(folds) == 2
    first = {p: p.stat().st_mtime_ns for p in folds}

    capsys.readouterr()
    assert main(["downstream", "--config", str(config)]) == 0  # resume: every fold reused
    assert "reusing 2 finished fold(s)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in folds} == first
    assert main(["downstream", "--config", str(config), "--overwrite"]) == 0  # every fold trained again
    assert all(p.stat().st_mtime_ns != first[p] for p in folds) and read_output_marker(out)["kind"] == "downstream"

    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        code, err = cli(["downstream", "--config", config, *extra], capsys)
        assert code == 2 and f"{out}: holds files `synthmed downstream` did not write there (notes.txt)" in err
    assert (out / "notes.txt").read_text() == "mine" and len(list((out / "arms").rglob("fold*.pt"))) == 2

    # a folder written before markers existed (only downstream's entries) resumes, but --overwrite refuses it
    (out / "notes.txt").unlink()
    (out / OUTPUT_MARKER).unlink()
    code, err = cli(["downstream", "--config", config, "--overwrite"], capsys)
    assert code == 2 and f"{out}: not written by synthmed" in err and (out / "results.json").exists()
    assert main(["downstream", "--config", str(config)]) == 0
    assert read_output_marker(out)["kind"] == "downstream"  # adopted: marked now
