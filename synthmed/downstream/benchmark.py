"""Run a downstream benchmark: every arm x seed x fold (a *unit*), fold ensembles on the test split, statistics.

Output folder::

    OUT/config.yaml                       the resolved configuration
    OUT/arms/<arm>/seed<s>/fold<k>.pt     one finished unit (weights, learning curve, test probabilities,
                                          steps, wall time, final training loss), written atomically
    OUT/arms/<arm>/seed<s>/ensemble.json  per-case test scores of the fold ensemble
    OUT/results.json                      per-arm summaries, comparisons, verdicts, summary table, warnings
    OUT/per_case.csv                      one row per arm, seed, test case and label
    OUT/summary.csv                       one row per arm (medigan vocabulary), with the signed effects
    OUT/plots/*.png                       Dice vs n synthetic, Dice vs real-set size, learning curves

A rerun with the same configuration skips every unit and ensemble already written (resume).

Per-unit API (what ``synthmed study`` calls; `run_downstream` is these three in a row)::

    plan_units(config) -> list[Unit]       every arm x seed x fold, in a stable order; needs only the
                                           manifest (synthetic sets need not exist yet)
    run_unit(config, unit, allow_leakage=False, allow_extra_labels=False) -> Path
                                           train + predict one unit, write OUT/arms/<arm>/seed<s>/fold<k>.pt
                                           atomically and return it; returns at once when it is already there
                                           (idempotent). Checks only the synthetic set this unit uses.
    unit_done(config, unit) -> bool        is the unit's file there
    aggregate(config, allow_leakage=False, allow_extra_labels=False) -> Path
                                           fold ensembles, statistics and reports from the finished units only
                                           (an (arm, seed) is used when all its folds are finished); returns
                                           OUT/results.json

    Unit (frozen dataclass): arm (ArmSpec), seed, fold,
        real_ids: tuple[str]     the real cases the arm trains on in this unit (subsampled by real_size,
                                 seeded by (seed, fold)); empty for synthetic-only arms
        val_ids: tuple[str]      the real validation cases of the fold (model selection; same for every arm)
        labelled_ids             real_ids + val_ids: the real labelled cases the unit uses
        budget_ids: tuple[str]   the real labelled cases a generator for this unit may see: labelled_ids, or
                                 for a synthetic-only arm those of its real-only baseline on all cases; the
                                 label-budget guard refuses a set whose card's trained_on_case_ids go beyond
                                 (--allow-extra-labels / allow_extra_labels: true runs it, labelled)
        synthetic_path: str|None the set this unit reads; config.synthetic paths may hold the placeholders
                                 {real_size}, {fold}, {seed} (one generator per real-set size/fold/seed)
        steps, pretrain_steps    optimiser steps of the unit (pretrain_steps 0 unless pretrain_finetune)
        val_every                steps between validations (model selection)
        id                       "<arm>/seed<s>/fold<k>", stable across runs (safe as a lock-file name)
        to_json()

Fair budgets: ``train.steps`` optimiser steps per unit, equal for every arm of one real-set size and fold,
with the same batch size (every batch full: indices cycle through reshuffled passes) and the same constant
AdamW learning rate. ``train.epochs`` (instead of steps) converts to steps = epochs x ceil(n / batch_size)
with n the real-only arm's training cases of that real-set size and fold. ``train.budget: per_arm_epochs``
restores the old, unequal, epochs-over-each-arm's-own-cases budget (named in results). Every arm picks its
best weights on the same real validation cases, every ``train.val_every`` steps.

results.json (format_version 2) adds to version 1:
    budget: {mode: "equal_steps"|"per_arm_epochs", steps_from: "train.steps"|"train.epochs (real-only arm)",
             batch_size, lr, schedule, selection, note}
    baselines: {"real_only": [arm names], "real_augmentation": [arm names]}  (added to the arms when missing)
    arms[i] adds: label (e.g. "real + wgan × 100"), is_baseline, steps {"train", "pretrain"} (per unit),
             wall_s {"train", "inference", ...}, final_train_loss (mean over units of the mean loss of the last
             validation interval), extra_labels {"n_cases", "examples"} or null, verdicts [sentences]
    comparisons: [{arm, baseline, baseline_role ("real_only"|"real_augmentation"), n_cases, mean_difference,
             median_difference, ci_low, ci_high (bootstrap CI of the mean per-case Dice difference, seeds
             averaged per case first), statistic, p (paired Wilcoxon), p_holm (Holm over all comparisons),
             verdict ("benefit"|"harm"|"no benefit"), sentence, extra_labels (bool)}]
    verdicts: [sentence, ...], also printed, e.g.
             "real + wgan × 100: −0.008 Dice [−0.020, 0.004] against real + augmentation: no benefit (Holm p = 0.41)"
             benefit: p_holm < alpha and ci_low > 0; harm: p_holm < alpha and ci_high < 0; else no benefit.
    extra_labels_allowed: bool, extra_labels_warning: bool
    units: {"planned", "finished", "complete"}
    tests.friedman_nemenyi stays; tests.wilcoxon_vs_real_only is replaced by comparisons.
summary.csv adds: label, steps, pretrain_steps, final_loss, diff_vs_real_only, diff_ci_vs_real_only, p_holm_vs_real_only,
    verdict_vs_real_only (and the same with _vs_real_aug when augmentation is on), extra_labels.
HD95 is in mm (the manifest's prepared spacing); for 2D pixel-spaced images in pixels (hd95_px, hd95_unit "px").
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.config import config_to_yaml
from synthmed.data.manifest import Manifest, load_manifest
from synthmed.downstream.arms import ArmSpec, expand_arms
from synthmed.downstream.config import ArmKind, DownstreamConfig
from synthmed.downstream.data import (EXTRA_LABELS_WARNING, CaseArrays, check_leakage, extra_labels,
                                      generator_case_ids, load_real, load_synthetic)
from synthmed.downstream.evaluation import score_cases
from synthmed.downstream.report import write_reports
from synthmed.downstream.trainer import SegTrainer, predict_probabilities
from synthmed.errors import UserError, format_problems
from synthmed.fileio import (atomic_torch_save, atomic_write_json, atomic_write_text, check_resumable_folder,
                             mark_resumable_folder)
from synthmed.metrics.json_safe import json_safe
from synthmed.sample.card import load_card
from synthmed.sample.synthetic_set import synthetic_case_files
from synthmed.train.distributed import select_device

log = logging.getLogger(__name__)

DOWNSTREAM_KIND = "downstream"
OUT_ENTRIES = ["arms", "config.yaml", "per_case.csv", "plots", "results.json", "summary.csv"]  # what --overwrite deletes
PLACEHOLDERS = ("real_size", "fold", "seed")  # may appear in config.synthetic paths


@dataclass(frozen=True)
class Unit:
    """One arm x seed x fold: one segmentation model, trained, selected and run on the test split."""

    arm: ArmSpec
    seed: int
    fold: int
    real_ids: tuple[str, ...]  # real training cases (empty for synthetic-only arms)
    val_ids: tuple[str, ...]  # the fold's real validation cases (model selection, every arm alike)
    budget_ids: tuple[str, ...]  # real labelled cases a generator may have seen (the arm's, or its baseline's)
    synthetic_path: str | None  # the set this unit reads (placeholders filled in)
    steps: int
    pretrain_steps: int
    val_every: int

    @property
    def id(self) -> str:
        return f"{self.arm.name}/seed{self.seed}/fold{self.fold}"

    @property
    def labelled_ids(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.real_ids) | set(self.val_ids)))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "arm": self.arm.to_json(), "seed": self.seed, "fold": self.fold,
                "real_ids": list(self.real_ids), "val_ids": list(self.val_ids), "budget_ids": list(self.budget_ids),
                "synthetic_path": self.synthetic_path, "steps": self.steps, "pretrain_steps": self.pretrain_steps,
                "val_every": self.val_every}


def fill_placeholders(path: str, real_size: int | str | None, fold: int, seed: int) -> str:
    """A synthetic-set path with ``{real_size}``, ``{fold}`` and ``{seed}`` replaced (synthetic-only: all)."""
    values = {"real_size": "all" if real_size is None else real_size, "fold": fold, "seed": seed}
    for key in PLACEHOLDERS:
        path = path.replace("{" + key + "}", str(values[key]))
    return path


def check_writable_folder(folder: Path) -> None:
    """Refuse an output folder that cannot be created or written.

    Raises:
        UserError: naming the folder (or the existing part of its path that blocks it).
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"out {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"out {folder}: cannot write in {existing} (permission denied); choose another --out")


def steps_for(n_cases: int, epochs: int, batch_size: int) -> int:
    """Optimiser steps of `epochs` passes over `n_cases` in batches of `batch_size`."""
    return epochs * max(1, math.ceil(n_cases / batch_size))


class Plan:
    """The arms, folds and units of a configuration; needs only the manifest (no synthetic set)."""

    def __init__(self, config: DownstreamConfig):
        self.config = config
        self.manifest: Manifest = load_manifest(config.manifest)
        self.folds = self.resolve_folds()
        self.check_real_sizes()
        self.arms = expand_arms(config)
        self.units = [self.unit(arm, seed, fold) for arm in self.arms for seed in config.seeds for fold in self.folds]

    def resolve_folds(self) -> list[int]:
        available = len(self.manifest.splits.get("folds") or [])
        k = self.config.folds or available
        if available < 2:
            raise UserError(f"{self.manifest.path}: the manifest has {available} folds; the benchmark needs k >= 2 "
                            "(prepare with --folds k)")
        if k > available:
            raise UserError(f"folds: {k} requested, the manifest has {available} folds")
        return list(range(k))

    def check_real_sizes(self) -> None:
        smallest = min(len(self.manifest.split_ids("train", fold=f)) for f in self.folds)
        too_big = [r for r in self.config.real_sizes if r != "all" and r > smallest]
        if too_big:
            raise UserError(f"real_sizes: {too_big} exceed the smallest fold's training part ({smallest} real cases)")

    def real_ids(self, real_size: int | str, seed: int, fold: int) -> list[str]:
        """The fold's training part, subsampled to `real_size` cases with the rng seeded by (seed, fold)."""
        ids = self.manifest.split_ids("train", fold=fold)
        if real_size != "all":
            order = np.random.default_rng([seed, fold]).permutation(len(ids))
            ids = [ids[i] for i in sorted(order[:real_size])]
        return ids

    def unit(self, arm: ArmSpec, seed: int, fold: int) -> Unit:
        """One unit, with its budget: equal steps for every arm of a real-set size and fold (see module doc)."""
        t, bs = self.config.train, self.config.train.batch_size
        baseline_ids = self.real_ids(arm.real_size if arm.real_size is not None else "all", seed, fold)
        real = baseline_ids if arm.uses_real else []
        val = self.manifest.split_ids("train", fold=fold, part="val")
        if t.budget == "per_arm_epochs":
            own = len(real) + (arm.n_synthetic if arm.kind in (ArmKind.SYNTHETIC, ArmKind.REAL_SYNTHETIC) else 0)
            steps = steps_for(own, t.epochs_or_default, bs)
        else:
            steps = t.steps or steps_for(len(baseline_ids), t.epochs_or_default, bs)
        pretrain = 0
        if arm.kind == ArmKind.PRETRAIN_FINETUNE:
            epochs = t.pretrain_epochs or (t.epochs_or_default if t.budget == "per_arm_epochs" else None)
            pretrain = t.pretrain_steps or (steps_for(arm.n_synthetic, epochs, bs) if epochs else steps)
        val_every = min(t.val_every or max(1, math.ceil(len(baseline_ids) / bs)), steps)
        path = None
        if arm.synthetic_set is not None:
            path = fill_placeholders(self.config.synthetic[arm.synthetic_set], arm.real_size, fold, seed)
        return Unit(arm, seed, fold, tuple(real), tuple(val), tuple(sorted(set(baseline_ids) | set(val))), path,
                    steps, pretrain, val_every)


def plan_units(config: DownstreamConfig) -> list[Unit]:
    """Every unit (arm x seed x fold) of `config`, baselines first, in a stable order.

    Raises:
        UserError: the manifest is unreadable, has too few folds, or a real-set size exceeds a fold.
    """
    return Plan(config).units


class Benchmark(Plan):
    """The state of one benchmark: the plan, the checked synthetic sets, the output folder.

    Building one checks everything the given units need before any training (also for ``--dry-run``):
    the manifest and its folds, the synthetic sets the units read (files, card, counts), the leakage
    guard (no test case seen by a generator), the label-budget guard (no real labelled case seen by a
    generator outside the unit's own), and that the output folder can be written. The output folder
    follows `check_resumable_folder`: a rerun resumes only a folder an earlier ``synthmed downstream``
    wrote, and `overwrite` empties only such a one.

    Args:
        units: the units to check synthetic sets for (None: all planned units).
    """

    def __init__(self, config: DownstreamConfig, allow_leakage: bool = False, overwrite: bool = False,
                 allow_extra_labels: bool = False, units: list[Unit] | None = None):
        super().__init__(config)
        self.overwrite = overwrite
        self.allow_leakage = allow_leakage
        self.allow_extra_labels = allow_extra_labels or config.allow_extra_labels
        checked = self.units if units is None else units
        self.set_sizes = self.check_synthetic_sets(checked)
        self.warnings = check_leakage(self.manifest, self.leakage_names(), allow_leakage)
        self.extra_labels, extra_warnings = self.check_label_budget(checked)
        self.warnings += extra_warnings
        self.labels = {0: "background", 1: "foreground"} if config.binarize else dict(sorted(self.manifest.labels.items()))
        self.num_classes = max(self.labels) + 1
        self.hd95_unit = "px" if self.manifest.preprocessing.get("spacing_unit") == "pixel" else "mm"
        inputs = [self.manifest.root, *self.set_sizes]
        self.out = check_resumable_folder(config.out, kind=DOWNSTREAM_KIND, entries=OUT_ENTRIES, inputs=inputs,
                                          overwrite=overwrite)
        check_writable_folder(self.out)
        self._test: CaseArrays | None = None
        self._synthetic_cache: dict[tuple[str, int], CaseArrays] = {}

    # checks ----------------------------------------------------------------------------------------
    def check_synthetic_sets(self, units: list[Unit]) -> dict[str, int]:
        """{path: number of cases} of every synthetic set `units` read; each must hold max(n_synthetic)."""
        sizes = {}
        needed = max(self.config.n_synthetic)
        for unit in units:
            path = unit.synthetic_path
            if path is None or path in sizes:
                continue
            sizes[path] = len(synthetic_case_files(Path(path)))
            if needed > sizes[path]:
                raise UserError(f"synthetic.{unit.arm.synthetic_set} ({path}): has {sizes[path]} cases, "
                                f"n_synthetic asks for {needed}")
        return sizes

    def leakage_names(self) -> dict[str, str]:
        """{name: path} for the leakage guard: the set's name, with the path when placeholders make several."""
        names = {}
        for name, template in self.config.synthetic.items():
            paths = [p for p in self.set_sizes if any(u.synthetic_path == p and u.arm.synthetic_set == name
                                                      for u in self.units)]
            for p in paths:
                names[name if p == template else f"{name} {p}"] = p
        return names

    def set_counts(self) -> dict[str, int]:
        """{set name (with its path when placeholders make several): number of cases} of the checked sets."""
        return {name: self.set_sizes[path] for name, path in self.leakage_names().items()}

    def check_label_budget(self, units: list[Unit]) -> tuple[dict[str, list[str]], list[str]]:
        """{unit id: real labelled cases its generator saw outside the unit's budget} (non-empty only), and
        the warnings naming them.

        Raises:
            UserError: (without allow_extra_labels) naming every arm and set with extra labels.
        """
        test_ids = set(self.manifest.split_ids("test"))
        seen: dict[str, set[str]] = {}
        extra: dict[str, list[str]] = {}
        by_arm: dict[tuple[str, str], list[Unit]] = {}
        for unit in units:
            if unit.synthetic_path is None:
                continue
            if unit.synthetic_path not in seen:
                seen[unit.synthetic_path] = generator_case_ids(unit.synthetic_path)
            ids = extra_labels(seen[unit.synthetic_path], set(unit.budget_ids), test_ids)
            if ids:
                extra[unit.id] = ids
                by_arm.setdefault((unit.arm.name, unit.synthetic_path), []).append(unit)
        messages = []
        for (arm, path), arm_units in by_arm.items():
            ids = sorted({i for u in arm_units for i in extra[u.id]})
            where = ", ".join(f"seed {u.seed} fold {u.fold}" for u in arm_units)
            messages.append(EXTRA_LABELS_WARNING.format(path=path, n=len(ids), unit=f"arm {arm} ({where})",
                                                        examples=", ".join(ids[:5])))
        if messages and not self.allow_extra_labels:
            raise UserError(format_problems("label-budget guard refuses to run (pass --allow-extra-labels or set "
                                            "allow_extra_labels: true to run anyway, labelled in every output)",
                                            messages))
        for m in messages:
            log.warning("!" * 20 + " " + m)
        return extra, messages

    # data of one unit ------------------------------------------------------------------------------
    @property
    def test(self) -> CaseArrays:
        """The real test cases (loaded once, on first use)."""
        if self._test is None:
            self._test = load_real(self.manifest, self.manifest.split_ids("test"), self.config.binarize)
        return self._test

    def synthetic_training(self, unit: Unit) -> CaseArrays:
        """n cases drawn with the unit's seed; for one seed and set, smaller n are subsets of larger n (nested)."""
        key = (unit.synthetic_path, unit.seed)
        if key not in self._synthetic_cache:
            order = np.random.default_rng(unit.seed).permutation(self.set_sizes[unit.synthetic_path])
            chosen = order[: max(self.config.n_synthetic)]
            self._synthetic_cache[key] = load_synthetic(unit.synthetic_path, self.manifest, list(chosen),
                                                        self.config.binarize)
        return self._synthetic_cache[key].subset(range(unit.arm.n_synthetic))

    def fingerprint(self, unit: Unit) -> str:
        """Hash of everything that changes a unit's result; resume refuses a result with another."""
        train = self.config.train.model_dump(mode="json", exclude={"progress", "device", "amp"})
        card = load_card(Path(unit.synthetic_path)).get("checkpoint", {}).get("sha256") if unit.synthetic_path else None
        spec = {k: v for k, v in unit.to_json().items() if k != "synthetic_path"}  # a moved set keeps its card
        doc = {"unit": spec, "train": train, "binarize": self.config.binarize,
               "augment": self.config.augmentation.model_dump(mode="json") if unit.arm.augment else None,
               "manifest": self.manifest.sha256, "card": card, "folds": len(self.folds)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    # one unit --------------------------------------------------------------------------------------
    def unit_path(self, unit: Unit) -> Path:
        return self.out / "arms" / unit.arm.name / f"seed{unit.seed}" / f"fold{unit.fold}.pt"

    def load_unit(self, unit: Unit) -> dict[str, Any] | None:
        """The unit's finished result, or None when it is not there.

        Raises:
            UserError: the file holds a result of another configuration.
        """
        path = self.unit_path(unit)
        if not path.is_file():
            return None
        result = torch.load(path, map_location="cpu", weights_only=True)
        if result.get("fingerprint") != self.fingerprint(unit):
            raise UserError(f"{path}: was written with another configuration for this arm; use a new out folder "
                            "or pass --overwrite to start again")
        return result

    def run_unit(self, unit: Unit) -> Path:
        """Train and predict `unit` unless its result is there; return the result's path (written atomically)."""
        path = self.unit_path(unit)
        if self.load_unit(unit) is not None:
            log.info("resume: %s already done, skipped", unit.id)
            return path
        mark_resumable_folder(self.out, DOWNSTREAM_KIND, OUT_ENTRIES)
        atomic_torch_save(self.train_unit(unit), path)
        return path

    def train_unit(self, unit: Unit) -> dict[str, Any]:
        arm = unit.arm
        real = load_real(self.manifest, list(unit.real_ids), self.config.binarize) if arm.uses_real else None
        synthetic = self.synthetic_training(unit) if arm.uses_synthetic else None
        if arm.kind == ArmKind.PRETRAIN_FINETUNE:
            train_data, pretrain = real, synthetic
        else:
            train_data, pretrain = CaseArrays.concat([d for d in (real, synthetic) if d is not None]), None
        val = load_real(self.manifest, list(unit.val_ids), self.config.binarize)
        trainer = SegTrainer(train_data, val, self.num_classes, self.config.train, seed=unit.seed * 1000 + unit.fold,
                             steps=unit.steps, val_every=unit.val_every, pretrain_steps=unit.pretrain_steps,
                             augmentation=self.config.augmentation if arm.augment else None, pretrain_data=pretrain,
                             progress_label=unit.id)
        network = trainer.run_training()
        started = time.perf_counter()
        probs = predict_probabilities(network, self.test.images, self.config.train, trainer.device)
        return {
            "fingerprint": self.fingerprint(unit), "unit": unit.to_json(),
            "arm": arm.name, "seed": unit.seed, "fold": unit.fold,
            "n_real": 0 if real is None else len(real), "n_synthetic": 0 if synthetic is None else len(synthetic),
            "steps": unit.steps, "pretrain_steps": unit.pretrain_steps, "final_train_loss": trainer.final_train_loss,
            "history": [asdict(r) for r in trainer.history],
            "train_wall_s": trainer.wall_s, "inference_wall_s": time.perf_counter() - started,
            "test_ids": list(self.test.ids),
            "test_probabilities": torch.from_numpy(probs).half(),  # float16 halves the file size
            "state_dict": {k: v.cpu() for k, v in network.state_dict().items()},
        }

    # one arm and seed: the fold ensemble -----------------------------------------------------------
    def ensemble(self, units: list[Unit]) -> dict[str, Any]:
        """Scores of the fold ensemble of one arm and seed (all `units` finished), cached in ensemble.json."""
        fingerprint = hashlib.sha256("".join(self.fingerprint(u) for u in units).encode()).hexdigest()
        path = self.unit_path(units[0]).parent / "ensemble.json"
        if path.is_file():
            done = json.loads(path.read_text())
            if done.get("fingerprint") == fingerprint:
                return done
        folds = [self.load_unit(u) for u in units]
        ensemble = json_safe(self.evaluate_ensemble(units[0].arm, units[0].seed, folds, fingerprint))
        atomic_write_json(path, ensemble)
        return ensemble

    def evaluate_ensemble(self, arm: ArmSpec, seed: int, folds: list[dict], fingerprint: str) -> dict[str, Any]:
        """Average the folds' softmax probabilities, take the argmax and score every test case."""
        probs = torch.stack([f["test_probabilities"].float() for f in folds]).mean(0).numpy()
        pred = probs.argmax(1)
        spacings = [tuple(self.manifest.case(i).get("spacing") or (1.0,) * (pred.ndim - 1)) for i in self.test.ids]
        scores = score_cases(pred, self.test.masks, self.num_classes, spacings)
        return {
            "fingerprint": fingerprint, "arm": arm.to_json(), "seed": seed,
            "n_real": folds[0]["n_real"], "n_synthetic": folds[0]["n_synthetic"],
            "case_ids": list(self.test.ids),
            "labels": {str(k): v for k, v in self.labels.items() if k > 0},
            "dice": scores["dice"].tolist(), "hd95": scores["hd95"].tolist(), "hd95_unit": self.hd95_unit,
            "steps": [f["steps"] for f in folds], "pretrain_steps": [f["pretrain_steps"] for f in folds],
            "final_train_loss": [f["final_train_loss"] for f in folds],
            "train_wall_s": float(sum(f["train_wall_s"] for f in folds)),
            "inference_wall_s": float(sum(f["inference_wall_s"] for f in folds)),
            "history": [f["history"] for f in folds],
        }

    # the whole benchmark ---------------------------------------------------------------------------
    def budget(self) -> dict[str, Any]:
        """How the arms' budgets were set, for results.json (a reader checks they were equal)."""
        t = self.config.train
        if t.budget == "per_arm_epochs":
            source = f"train.epochs = {t.epochs_or_default} over each arm's own training cases (budgets differ)"
        elif t.steps is not None:
            source = "train.steps"
        else:
            source = (f"train.epochs = {t.epochs_or_default} converted to steps with the real-only arm's training "
                      "cases of each real-set size and fold: ceil(cases / batch_size) per epoch")
        selection = ("best mean foreground Dice on each fold's real validation cases (the same cases for every "
                     "arm), checked every val_every steps and at the last step") if t.select == "best_val" else "last step"
        return {"mode": "per_arm_epochs" if t.budget == "per_arm_epochs" else "equal_steps", "steps_from": source,
                "batch_size": t.batch_size, "lr": t.lr, "schedule": "constant learning rate (AdamW), full batches",
                "selection": selection,
                "note": "pretrain_finetune arms train pretrain_steps on synthetic cases before their steps on real ones"}

    def finished_units(self) -> list[Unit]:
        return [u for u in self.units if self.unit_path(u).is_file()]

    def aggregate(self) -> Path:
        """Fold ensembles, statistics and reports from the finished units; returns results.json.

        Raises:
            UserError: no (arm, seed) has all its folds finished.
        """
        atomic_write_text(self.out / "config.yaml", config_to_yaml(self.config))
        finished = {u.id for u in self.finished_units()}
        ensembles = []
        for arm in self.arms:
            for seed in self.config.seeds:
                units = [u for u in self.units if u.arm == arm and u.seed == seed]
                if all(u.id in finished for u in units):
                    ensembles.append(self.ensemble(units))
        if not ensembles:
            raise UserError(f"{self.out}: no arm has a seed with all its folds finished; nothing to aggregate")
        done = {e["arm"]["name"] for e in ensembles}
        extra = {arm.name: sorted({i for u in self.units if u.arm == arm for i in self.extra_labels.get(u.id, [])})
                 for arm in self.arms}
        write_reports(self.out, self.config, self.manifest, [a for a in self.arms if a.name in done], ensembles,
                      self.warnings, self.hd95_unit, budget=self.budget(),
                      extra_labels={k: v for k, v in extra.items() if v}, allow_extra_labels=self.allow_extra_labels,
                      units={"planned": len(self.units), "finished": len(finished),
                             "complete": len(finished) == len(self.units)})
        return self.out / "results.json"

    def run(self) -> Path:
        mark_resumable_folder(self.out, DOWNSTREAM_KIND, OUT_ENTRIES, overwrite=self.overwrite)
        reused = len(self.finished_units())
        if reused:
            print(f"reusing {reused} finished fold(s) from {self.out} (--overwrite starts again)")
        log.info("downstream: %d arms x %d seeds x %d folds on %d real test cases, device %s", len(self.arms),
                 len(self.config.seeds), len(self.folds), len(self.test), select_device(self.config.train.device))
        for unit in self.units:
            self.run_unit(unit)
        self.aggregate()
        return self.out


def run_unit(config: DownstreamConfig, unit: Unit, allow_leakage: bool = False, allow_extra_labels: bool = False) -> Path:
    """Run one unit unless it is finished (idempotent); returns its result file (written atomically).

    Checks only the synthetic set this unit reads (later units' sets need not exist yet).

    Raises:
        UserError: as `Benchmark` for this unit's inputs, or a finished result of another configuration.
    """
    return Benchmark(config, allow_leakage, allow_extra_labels=allow_extra_labels, units=[unit]).run_unit(unit)


def unit_done(config: DownstreamConfig, unit: Unit) -> bool:
    """Whether the unit's result file is there (written atomically, so there means finished)."""
    out = Path(config.out).expanduser().resolve()
    return (out / "arms" / unit.arm.name / f"seed{unit.seed}" / f"fold{unit.fold}.pt").is_file()


def aggregate(config: DownstreamConfig, allow_leakage: bool = False, allow_extra_labels: bool = False) -> Path:
    """Write results.json, per_case.csv, summary.csv and plots from the finished units only; returns results.json.

    Raises:
        UserError: nothing finished to aggregate, or bad inputs of the finished units (see `Benchmark`).
    """
    finished = [u for u in plan_units(config) if unit_done(config, u)]
    return Benchmark(config, allow_leakage, allow_extra_labels=allow_extra_labels, units=finished).aggregate()


def run_downstream(config: DownstreamConfig, allow_leakage: bool = False, overwrite: bool = False,
                   allow_extra_labels: bool = False) -> Path:
    """Run (or resume) the benchmark described by `config`: every unit, then `aggregate`; returns the folder.

    Raises:
        UserError: bad inputs (see `Benchmark`), leakage without `allow_leakage`, extra labels without
            `allow_extra_labels`, an output folder holding results of another configuration without
            `overwrite`, or one that overlaps an input or that another command or the user wrote (see
            `synthmed.fileio.check_resumable_folder`).
    """
    return Benchmark(config, allow_leakage, overwrite, allow_extra_labels).run()
