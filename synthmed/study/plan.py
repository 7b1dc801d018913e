"""The study's work units (stable ids, dependencies, outputs) and the sub-manifests of its slices.

A slice is one real-set size and seed (and fold, for protocol ``folds``). Its sub-manifest's train
split is exactly the real cases that the slice's generators see and that its downstream arms train on;
its val split (also its single fold's held-out part, which the downstream benchmark selects models on)
is the real validation cases; its test split is the prepared manifest's test split.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from synthmed.data.manifest import Manifest
from synthmed.errors import UserError
from synthmed.fileio import atomic_write_json
from synthmed.study.config import StudyConfig

PREPARE, SLICE, TRAIN, SAMPLE, EVALUATE, DOWNSTREAM, AGGREGATE, REPORT = (
    "prepare", "slice", "train", "sample", "evaluate", "downstream", "aggregate", "report")
STAGE_ORDER = [PREPARE, SLICE, TRAIN, SAMPLE, EVALUATE, DOWNSTREAM, AGGREGATE, REPORT]


@dataclass(frozen=True)
class Slice:
    real_size: int
    seed: int
    fold: int | None = None  # protocol folds only

    @property
    def name(self) -> str:
        return f"r{self.real_size}-s{self.seed}" + ("" if self.fold is None else f"-f{self.fold}")


@dataclass
class Unit:
    id: str  # stable: the same configuration always gives the same ids
    kind: str  # one of STAGE_ORDER
    needs: list[str] = field(default_factory=list)  # unit ids that must be finished first
    output: str = ""  # folder or file it writes, relative to the study folder
    slice: str | None = None
    generator: str | None = None


def slices(config: StudyConfig, n_folds: int) -> list[Slice]:
    """Every slice of the study; `n_folds` is the prepared manifest's fold count (protocol folds)."""
    folds = [None] if config.protocol == "fixed_validation" else list(range(config.folds or n_folds))
    return [Slice(r, s, f) for r in config.real_sizes for s in config.seeds for f in folds]


def build_plan(config: StudyConfig, n_folds: int) -> list[Unit]:
    """All units in an order that respects their dependencies."""
    units = [Unit(PREPARE, PREPARE, output="prepared")] if config.data.raw is not None else []
    first = [PREPARE] if units else []
    for sl in slices(config, n_folds):
        units.append(Unit(f"slice-{sl.name}", SLICE, first, f"slices/{sl.name}", sl.name))
        for gen in config.generators:
            tag = f"{gen}-{sl.name}"
            units.append(Unit(f"train-{tag}", TRAIN, [f"slice-{sl.name}"], f"generators/{gen}/{sl.name}", sl.name, gen))
            units.append(Unit(f"sample-{tag}", SAMPLE, [f"train-{tag}"], f"synthetic/{gen}/{sl.name}", sl.name, gen))
            if config.evaluation.enabled:
                units.append(Unit(f"evaluate-{tag}", EVALUATE, [f"sample-{tag}"], f"evaluation/{gen}/{sl.name}",
                                  sl.name, gen))
        units.append(Unit(f"downstream-{sl.name}", DOWNSTREAM, [f"sample-{g}-{sl.name}" for g in config.generators],
                          f"downstream/{sl.name}", sl.name))
    finals = [u.id for u in units if u.kind in (DOWNSTREAM, EVALUATE)]
    units.append(Unit(AGGREGATE, AGGREGATE, finals, "results.json"))
    units.append(Unit(REPORT, REPORT, [AGGREGATE], "report.html"))
    return units


def plan_document(config: StudyConfig, units: list[Unit], prepared: Path) -> dict:
    return {"name": config.name, "protocol": config.protocol, "prepared": str(prepared) if prepared else None,
            "units": [asdict(u) for u in units]}


def parse_slice(name: str) -> Slice:
    parts = dict((p[0], int(p[1:])) for p in name.split("-"))
    return Slice(parts["r"], parts["s"], parts.get("f"))


def slice_cases(manifest: Manifest, config: StudyConfig, sl: Slice) -> dict[str, list[str]]:
    """The real case ids of a slice: train (chosen with the slice's seed), val and test.

    Raises:
        UserError: the pool is smaller than the real-set size, or there are no validation cases.
    """
    if sl.fold is None:
        pool, val = manifest.split_ids("train"), manifest.split_ids("val")
        where = f"the train split of {manifest.path}"
        rng = np.random.default_rng(sl.seed)
    else:
        pool, val = manifest.split_ids("train", fold=sl.fold), manifest.split_ids("train", fold=sl.fold, part="val")
        where = f"fold {sl.fold}'s training part in {manifest.path}"
        rng = np.random.default_rng([sl.seed, sl.fold])
    if not val:
        raise UserError(f"{manifest.path}: no validation cases for protocol {config.protocol} "
                        "(data.prepare.val_fraction must be > 0 for fixed_validation, folds >= 2 for folds)")
    if sl.real_size > len(pool):
        raise UserError(f"real_sizes: {sl.real_size} exceeds the {len(pool)} cases of {where}")
    chosen = sorted(pool[i] for i in rng.permutation(len(pool))[: sl.real_size])
    return {"train": chosen, "val": sorted(val), "test": manifest.split_ids("test")}


def write_sub_manifest(manifest: Manifest, cases: dict[str, list[str]], folder: Path, sl: Slice) -> Path:
    """A manifest of the slice's cases whose caches point into the prepared folder (nothing copied).

    Cache paths are relative to `folder` when the prepared folder is in the study (the study folder can
    then be moved), absolute otherwise.
    """
    used = set(cases["train"]) | set(cases["val"]) | set(cases["test"])
    entries = []
    for case in manifest.cases:
        if case["id"] in used:
            entry = dict(case)
            entry["cache"] = _cache_path(manifest.root / case["cache"], folder)
            entries.append(entry)
    doc = dict(manifest.data)
    doc["cases"] = entries
    doc["splits"] = {**manifest.splits, "train": cases["train"], "val": cases["val"], "test": cases["test"],
                     "folds": [cases["val"]], "k_folds": 1,
                     "study_slice": {"real_size": sl.real_size, "seed": sl.seed, "fold": sl.fold,
                                     "parent_manifest": str(manifest.path), "parent_sha256": manifest.sha256}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    atomic_write_json(path, doc)
    return path


def _cache_path(cache: Path, folder: Path) -> str:
    """Relative to `folder` (STUDY/slices/<slice>) when the cache lies in the study folder, else absolute."""
    cache, study = cache.resolve(), folder.resolve().parent.parent
    return os.path.relpath(cache, folder.resolve()) if cache.is_relative_to(study) else str(cache)


def load_plan(study: Path) -> dict:
    return json.loads((study / "plan.json").read_text())
