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
        labelled_ids             real_ids + val_ids: the real labelled cases a generator for this unit may see
        synthetic_path: str|None the set this unit reads; config.synthetic paths may hold the placeholders
                                 {real_size}, {fold}, {seed} (one generator per real-set size/fold/seed)
        steps, pretrain_steps    optimiser steps of the unit (pretrain_steps 0 unless pretrain_finetune)
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
summary.csv adds: label, steps, final_loss, diff_vs_real_only, diff_ci_vs_real_only, p_holm_vs_real_only,
    verdict_vs_real_only (and the same with _vs_real_aug when augmentation is on), extra_labels.
HD95 is in mm (the manifest's prepared spacing); for 2D pixel-spaced images in pixels (hd95_px, hd95_unit "px").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.config import config_to_yaml
from synthmed.data.manifest import Manifest, load_manifest
from synthmed.downstream.arms import ArmSpec, expand_arms
from synthmed.downstream.config import DownstreamConfig
from synthmed.downstream.data import CaseArrays, check_leakage, load_real, load_synthetic
from synthmed.sample.synthetic_set import synthetic_case_files
from synthmed.downstream.evaluation import score_cases
from synthmed.downstream.report import write_reports
from synthmed.downstream.trainer import SegTrainer, predict_probabilities
from synthmed.errors import UserError
from synthmed.fileio import (atomic_torch_save, atomic_write_json, atomic_write_text, check_resumable_folder,
                             mark_resumable_folder)
from synthmed.metrics.json_safe import json_safe
from synthmed.sample.card import load_card
from synthmed.train.distributed import select_device

log = logging.getLogger(__name__)

DOWNSTREAM_KIND = "downstream"
OUT_ENTRIES = ["arms", "config.yaml", "per_case.csv", "plots", "results.json", "summary.csv"]  # what --overwrite deletes


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


class Benchmark:
    """The state shared by all arms of one benchmark run (data, folds, output folder).

    Building one checks everything a run needs before any training (also for ``--dry-run``): the
    manifest and its folds, every synthetic set (files and card) and the leakage guard, the counts,
    and that the output folder can be written. The real test cases are loaded by `run`. The output
    folder follows `check_resumable_folder`: a rerun resumes only a folder an earlier ``synthmed
    downstream`` wrote, and `overwrite` empties only such a one.
    """

    def __init__(self, config: DownstreamConfig, allow_leakage: bool = False, overwrite: bool = False):
        self.config = config
        self.overwrite = overwrite
        self.manifest: Manifest = load_manifest(config.manifest)
        self.set_sizes = {name: len(synthetic_case_files(Path(p))) for name, p in config.synthetic.items()}
        self.warnings = check_leakage(self.manifest, config.synthetic, allow_leakage)
        self.allow_leakage = allow_leakage
        self.arms = expand_arms(config)
        self.folds = self.resolve_folds()
        self.labels = {0: "background", 1: "foreground"} if config.binarize else dict(sorted(self.manifest.labels.items()))
        self.num_classes = max(self.labels) + 1
        self.hd95_unit = "px" if int(self.manifest.preprocessing.get("dims", 3)) == 2 else "mm"
        self.check_sizes()
        inputs = [self.manifest.root, *config.synthetic.values()]
        self.out = check_resumable_folder(config.out, kind=DOWNSTREAM_KIND, entries=OUT_ENTRIES, inputs=inputs,
                                          overwrite=overwrite)
        check_writable_folder(self.out)
        self.test: CaseArrays  # the real test cases, loaded by `run`
        self._synthetic_cache: dict[tuple[str, int], CaseArrays] = {}

    def resolve_folds(self) -> list[int]:
        available = len(self.manifest.splits.get("folds") or [])
        k = self.config.folds or available
        if available < 2:
            raise UserError(f"{self.manifest.path}: the manifest has {available} folds; the benchmark needs k >= 2 "
                            "(prepare with --folds k)")
        if k > available:
            raise UserError(f"folds: {k} requested, the manifest has {available} folds")
        return list(range(k))

    def check_sizes(self) -> None:
        """Real-set sizes and synthetic counts must fit every fold and every set."""
        smallest = min(len(self.manifest.split_ids("train", fold=f)) for f in self.folds)
        too_big = [r for r in self.config.real_sizes if r != "all" and r > smallest]
        if too_big:
            raise UserError(f"real_sizes: {too_big} exceed the smallest fold's training part ({smallest} real cases)")
        for name, size in self.set_sizes.items():
            needed = max(self.config.n_synthetic)
            if needed > size:
                raise UserError(f"synthetic.{name} ({self.config.synthetic[name]}): has {size} cases, "
                                f"n_synthetic asks for {needed}")

    # data of one arm -------------------------------------------------------------------------------
    def real_training(self, arm: ArmSpec, seed: int, fold: int) -> CaseArrays:
        ids = self.manifest.split_ids("train", fold=fold)
        if arm.real_size not in (None, "all"):
            order = np.random.default_rng([seed, fold]).permutation(len(ids))
            ids = [ids[i] for i in sorted(order[: arm.real_size])]
        return load_real(self.manifest, ids, self.config.binarize)

    def synthetic_training(self, arm: ArmSpec, seed: int) -> CaseArrays:
        """n cases drawn with `seed`; for one seed, smaller n are subsets of larger n (nested)."""
        key = (arm.synthetic_set, seed)
        if key not in self._synthetic_cache:
            order = np.random.default_rng(seed).permutation(self.set_sizes[arm.synthetic_set])
            chosen = order[: max(self.config.n_synthetic)]
            self._synthetic_cache[key] = load_synthetic(self.config.synthetic[arm.synthetic_set], self.manifest,
                                                        list(chosen), self.config.binarize)
        return self._synthetic_cache[key].subset(range(arm.n_synthetic))

    def fingerprint(self, arm: ArmSpec) -> str:
        """Hash of everything that changes an arm's results; resume refuses results with another."""
        train = self.config.train.model_dump(mode="json", exclude={"progress", "device", "amp"})
        cards = {n: load_card(Path(self.config.synthetic[n])).get("checkpoint", {}).get("sha256")
                 for n in ([arm.synthetic_set] if arm.synthetic_set else [])}
        # "augment" keeps the key's name from before the config's renaming, so finished arms still resume.
        doc = {"arm": arm.to_json(), "train": train, "binarize": self.config.binarize,
               "augment": self.config.augmentation.model_dump(mode="json") if arm.augment else None,
               "manifest": self.manifest.sha256, "cards": cards, "folds": len(self.folds)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    # one fold --------------------------------------------------------------------------------------
    def fold_path(self, arm: ArmSpec, seed: int, fold: int) -> Path:
        return self.out / "arms" / arm.name / f"seed{seed}" / f"fold{fold}.pt"

    def load_fold(self, path: Path, fingerprint: str) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        result = torch.load(path, map_location="cpu", weights_only=True)
        if result.get("fingerprint") != fingerprint:
            raise UserError(f"{path}: was written with another configuration for this arm; use a new out folder "
                            "or pass --overwrite to start again")
        return result

    def run_fold(self, arm: ArmSpec, seed: int, fold: int) -> dict[str, Any]:
        real = self.real_training(arm, seed, fold) if arm.uses_real else None
        synthetic = self.synthetic_training(arm, seed) if arm.uses_synthetic else None
        if arm.kind.value == "pretrain_finetune":
            train_data, pretrain = real, synthetic
        else:
            train_data, pretrain = CaseArrays.concat([d for d in (real, synthetic) if d is not None]), None
        val = load_real(self.manifest, self.manifest.split_ids("train", fold=fold, part="val"), self.config.binarize)
        trainer = SegTrainer(train_data, val, self.num_classes, self.config.train, seed=seed * 1000 + fold,
                             augmentation=self.config.augmentation if arm.augment else None, pretrain_data=pretrain,
                             progress_label=f"{arm.name} seed {seed} fold {fold}")
        network = trainer.run_training()
        started = time.perf_counter()
        probs = predict_probabilities(network, self.test.images, self.config.train, trainer.device)
        return {
            "fingerprint": self.fingerprint(arm),
            "arm": arm.name, "seed": seed, "fold": fold,
            "n_real": 0 if real is None else len(real), "n_synthetic": 0 if synthetic is None else len(synthetic),
            "history": [asdict(r) for r in trainer.history],
            "train_wall_s": trainer.wall_s, "inference_wall_s": time.perf_counter() - started,
            "epochs_run": len(trainer.history),
            "test_ids": list(self.test.ids),
            "test_probabilities": torch.from_numpy(probs).half(),  # float16 halves the file size
            "state_dict": {k: v.cpu() for k, v in network.state_dict().items()},
        }

    # one arm and seed ------------------------------------------------------------------------------
    def run_seed(self, arm: ArmSpec, seed: int) -> dict[str, Any]:
        fingerprint = self.fingerprint(arm)
        folds = []
        for fold in self.folds:
            path = self.fold_path(arm, seed, fold)
            result = self.load_fold(path, fingerprint)
            if result is None:
                result = self.run_fold(arm, seed, fold)
                atomic_torch_save(result, path)
            else:
                log.info("resume: %s seed %d fold %d already done, skipped", arm.name, seed, fold)
            folds.append(result)
        ensemble_path = path.parent / "ensemble.json"
        if ensemble_path.is_file():
            done = json.loads(ensemble_path.read_text())
            if done.get("fingerprint") == fingerprint:
                return done
        ensemble = json_safe(self.evaluate_ensemble(arm, seed, folds, fingerprint))
        atomic_write_json(ensemble_path, ensemble)
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
            "train_wall_s": float(sum(f["train_wall_s"] for f in folds)),
            "inference_wall_s": float(sum(f["inference_wall_s"] for f in folds)),
            "epochs_run": int(sum(f["epochs_run"] for f in folds)),
            "history": [f["history"] for f in folds],
        }

    def finished_folds(self) -> int:
        """How many arm/seed/fold results the output folder already holds (reused by `run`)."""
        return sum(self.fold_path(arm, seed, fold).is_file()
                   for arm in self.arms for seed in self.config.seeds for fold in self.folds)

    def run(self) -> Path:
        mark_resumable_folder(self.out, DOWNSTREAM_KIND, OUT_ENTRIES, overwrite=self.overwrite)
        reused = self.finished_folds()
        if reused:
            print(f"reusing {reused} finished fold(s) from {self.out} (--overwrite starts again)")
        self.test = load_real(self.manifest, self.manifest.split_ids("test"), self.config.binarize)
        atomic_write_text(self.out / "config.yaml", config_to_yaml(self.config))
        log.info("downstream: %d arms x %d seeds x %d folds on %d real test cases, device %s", len(self.arms),
                 len(self.config.seeds), len(self.folds), len(self.test), select_device(self.config.train.device))
        ensembles = [self.run_seed(arm, seed) for arm in self.arms for seed in self.config.seeds]
        write_reports(self.out, self.config, self.manifest, self.arms, ensembles, self.warnings, self.hd95_unit)
        return self.out


def run_downstream(config: DownstreamConfig, allow_leakage: bool = False, overwrite: bool = False) -> Path:
    """Run (or resume) the benchmark described by `config`; returns the output folder.

    Raises:
        UserError: bad inputs (see `Benchmark`), leakage without `allow_leakage`, an output folder
            holding results of another configuration without `overwrite`, or one that overlaps an input
            or that another command or the user wrote (see `synthmed.fileio.check_resumable_folder`).
    """
    return Benchmark(config, allow_leakage, overwrite).run()
