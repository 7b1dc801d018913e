"""Open a study folder, plan it, check it (``--dry-run``) and run its units with one or more workers."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from synthmed.config import config_to_yaml
from synthmed.data.discover import discover_sources
from synthmed.data.manifest import load_manifest
from synthmed.downstream.config import resolve_downstream_config
from synthmed.errors import UserError
from synthmed.fileio import atomic_write_text
from synthmed.study import aggregate as agg
from synthmed.study import units as work
from synthmed.study.config import StudyConfig, load_study_config
from synthmed.study.locks import UnitLock, failed_since, has_failed, is_finished, write_record
from synthmed.study.plan import (AGGREGATE, DOWNSTREAM, EVALUATE, PREPARE, REPORT, SAMPLE, SLICE, STAGE_ORDER, TRAIN,
                                 Unit, build_plan, plan_document, slices)

log = logging.getLogger(__name__)
STUDY_LOCK = ".study.lock"
POLL_S = 1.0  # how often an idle worker looks for a unit whose dependencies another worker finished


@dataclass
class Study:
    config: StudyConfig
    folder: Path
    units: list[Unit]
    plan: dict

    def unit(self, unit_id: str) -> Unit:
        return next(u for u in self.units if u.id == unit_id)


def manifest_folds(config: StudyConfig) -> int:
    if config.data.prepared is not None:
        return len(load_manifest(config.data.prepared).splits.get("folds") or [])
    return config.data.prepare.folds


def open_study(config_path: str | Path, out: str | None = None, overrides: Sequence[str] = (),
               write: bool = True) -> Study:
    """Load the YAML, plan the units and write ``study.yaml`` and ``plan.json`` (first run) or check them.

    With `write` False (``--dry-run``) nothing is written.

    Raises:
        UserError: a bad configuration, or a study folder started with another configuration.
    """
    config = load_study_config(config_path, overrides)
    if out is not None:
        config.out = out
    folder = Path(config.out).expanduser().resolve()
    config.out = str(folder)
    units = build_plan(config, manifest_folds(config))
    plan = plan_document(config, units, Path(config.data.prepared) if config.data.prepared else None)
    if write:
        with study_folder_lock(folder):  # workers starting together: one writes, the others compare
            write_study_files(folder, config_to_yaml(config), plan)
    elif (folder / "study.yaml").is_file():
        check_same_study(folder, config_to_yaml(config))
    elif folder.exists() and any(folder.iterdir()):
        raise UserError(f"{folder}: exists and is not a study folder (no study.yaml); choose another --out")
    return Study(config, folder, units, plan)


@contextmanager
def study_folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on ``STUDY/.study.lock`` (created with the folder) while the plan is written."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / STUDY_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_same_study(folder: Path, text: str) -> None:
    if (folder / "study.yaml").read_text() != text:
        raise UserError(f"{folder}: holds a study started with another configuration ({folder / 'study.yaml'}); "
                        "use a new --out, or the same configuration to resume it")


def write_study_files(folder: Path, text: str, plan: dict) -> None:
    """study.yaml and plan.json on the first run; a later run (or worker) checks it has the same study.

    Raises:
        UserError: the folder holds another study, or files that are not a study's.
    """
    if (folder / "study.yaml").is_file():
        check_same_study(folder, text)
        return
    if any(p.name != STUDY_LOCK for p in folder.iterdir()):
        (folder / STUDY_LOCK).unlink(missing_ok=True)  # leave a folder that is not ours as it was
        raise UserError(f"{folder}: exists and is not a study folder (no study.yaml); choose another --out")
    atomic_write_text(folder / "plan.json", json.dumps(plan, indent=2))
    atomic_write_text(folder / "study.yaml", text)  # last: its presence says the folder is a study


def check_inputs(study: Study) -> list[str]:
    """Every check a run makes before its first unit: presets, overrides, sizes, downstream settings.

    Raises:
        UserError: naming the key or file at fault.
    """
    config, notes = study.config, []
    placeholder = study.folder / "slices" / "CHECK" / "manifest.json"
    for name in config.generators:
        run = work.generator_config(config, name, placeholder, study.folder / "generators" / name, 0)
        notes.append(f"generator {name}: {run.model.name}, {run.train.steps} steps, batch {run.train.batch_size}")
    if config.data.raw is not None:
        notes.append(raw_data_note(config))
    else:
        manifest = load_manifest(config.data.prepared)
        for sl in slices(config, manifest_folds(config)):
            cases = work.slice_cases(manifest, config, sl)
            notes.append(f"slice {sl.name}: {len(cases['train'])} train, {len(cases['val'])} val, "
                         f"{len(cases['test'])} test real cases")
    resolve_downstream_config(work.downstream_raw(config, study.folder, "r1-s0"), source="downstream")
    return notes


def raw_data_note(config: StudyConfig) -> str:
    """How many cases the raw data holds and roughly how many the train split will get (before prepare).

    Raises:
        UserError: the data cannot be read, or the largest real-set size cannot fit.
    """
    sources = discover_sources(work.raw_inputs(config))
    n = sum(len(s.cases) for s in sources)
    opts = config.data.prepare
    test, val = max(1, round(opts.test_fraction * n)), max(int(opts.val_fraction > 0), round(opts.val_fraction * n))
    pool = (n - test - val) * (1 - 1 / opts.folds if config.protocol == "folds" else 1)
    if max(config.real_sizes) > pool:
        raise UserError(f"real_sizes: {max(config.real_sizes)} exceeds the about {int(pool)} training cases that "
                        f"{n} cases leave after the test and validation fractions")
    return f"data: {n} cases; about {n - test - val} train, {val} val, {test} test after prepare (groups may shift these)"


def print_plan(study: Study, notes: list[str]) -> None:
    done = sum(is_finished(study.folder, u.id) for u in study.units)
    print(f"study {study.config.name} ({study.config.protocol}) in {study.folder}: {len(study.units)} units, "
          f"{done} finished")
    for note in notes:
        print(f"  {note}")
    for u in study.units:
        state = "done" if is_finished(study.folder, u.id) else ("failed" if has_failed(study.folder, u.id) else "todo")
        print(f"  [{state:6s}] {u.id:40s} needs {', '.join(u.needs) or '-'}")


def execute(study: Study, unit: Unit) -> None:
    config, folder = study.config, study.folder
    runners = {PREPARE: lambda: work.run_prepare(config, folder, unit),
               SLICE: lambda: work.run_slice(config, folder, unit, work.prepared_manifest(folder, study.plan)),
               TRAIN: lambda: work.run_train(config, folder, unit),
               SAMPLE: lambda: work.run_sample(config, folder, unit),
               EVALUATE: lambda: work.run_evaluate(config, folder, unit),
               DOWNSTREAM: lambda: work.run_downstream_slice(config, folder, unit),
               AGGREGATE: lambda: agg.aggregate(config, folder, study.plan),
               REPORT: lambda: write_html_report(folder)}
    runners[unit.kind]()


def run_one(study: Study, unit: Unit) -> bool:
    """Run `unit` and record it; False (with a failure record) when it raised a UserError."""
    started = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {unit.id} (pid {os.getpid()})", flush=True)
    try:
        execute(study, unit)
    except UserError as err:
        write_record(study.folder, unit.id, unit.kind, started, error=str(err))
        print(f"  {unit.id} failed: {err}", file=sys.stderr)
        return False
    except Exception:
        write_record(study.folder, unit.id, unit.kind, started, error=traceback.format_exc(limit=5))
        raise
    write_record(study.folder, unit.id, unit.kind, started)
    return True


def blocked_units(study: Study, since: float, failed_here: set[str]) -> set[str]:
    """Units that failed in this session (here, or in any worker since `since`), and every unit that needs one."""
    blocked = set()
    for u in study.units:  # in dependency order
        if u.id in failed_here or failed_since(study.folder, u.id, since) or blocked.intersection(u.needs):
            blocked.add(u.id)
    return blocked


def run_worker(study: Study) -> int:
    """Claim and run free units whose dependencies are finished until none is left; returns how many ran.

    Raises:
        UserError: some units failed (listed), so the units that need them cannot run.
    """
    since, ran, failed_here = time.time(), 0, set()
    while True:
        pending = [u for u in study.units if not is_finished(study.folder, u.id)]
        blocked = blocked_units(study, since, failed_here)
        if all(u.id in blocked for u in pending):
            break
        claimed = False
        for u in sorted(pending, key=lambda u: STAGE_ORDER.index(u.kind)):  # upstream first: more units in parallel
            if u.id in blocked or not all(is_finished(study.folder, n) for n in u.needs):
                continue
            with UnitLock(study.folder, u.id) as lock:
                if not lock.acquire() or is_finished(study.folder, u.id):
                    continue
                claimed = True
                if run_one(study, u):
                    ran += 1
                else:
                    failed_here.add(u.id)
            break
        if not claimed:
            time.sleep(POLL_S)  # other workers are running what the pending units need
    failed = sorted(blocked_units(study, since, failed_here) & {u.id for u in study.units if has_failed(study.folder, u.id)})
    if failed:
        raise UserError(f"{study.folder}: unit(s) failed: {', '.join(failed)} (see units/<id>.failed.json; "
                        "a rerun retries them)")
    return ran


def worker_environment(index: int, jobs: int) -> dict[str, str]:
    """Threads split between the workers; one GPU per worker where there are several."""
    env = dict(os.environ)
    cores = int(env.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    env["OMP_NUM_THREADS"] = str(max(1, cores // jobs))
    gpus = [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def run_jobs(config_path: str | Path, study: Study, jobs: int, overrides: Sequence[str]) -> None:
    """Start `jobs` local ``synthmed study --worker`` processes on the study folder and wait for them.

    Raises:
        UserError: a worker ended with an error.
    """
    cmd = [sys.executable, "-m", "synthmed.cli", "study", "--config", str(config_path), "--out", str(study.folder),
           "--worker", *[a for s in overrides for a in ("--set", s)]]
    procs = [subprocess.Popen(cmd, env=worker_environment(i, jobs)) for i in range(jobs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise UserError(f"{study.folder}: {sum(1 for c in codes if c)} of {jobs} workers failed (exit codes {codes})")


def write_html_report(folder: Path) -> Path:
    """The study's self-contained HTML report (`synthmed.report`)."""
    from synthmed.report import write_report

    return write_report(folder)


def print_answer(study: Study) -> None:
    results = study.folder / "results.json"
    if not results.is_file() or not is_finished(study.folder, REPORT):
        return
    doc = json.loads(results.read_text())
    print(f"\nStudy {doc['name']} ({doc['protocol']}): report {study.folder / 'report.html'}")
    for line in doc["verdicts"]:
        print(f"  {line}")
