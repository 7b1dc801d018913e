"""Results of a downstream benchmark: per-case CSV, per-arm summaries, tests, table and plots."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import synthmed  # noqa: E402
from synthmed.data.manifest import Manifest  # noqa: E402
from synthmed.downstream.arms import ArmSpec  # noqa: E402
from synthmed.downstream.config import ArmKind, DownstreamConfig  # noqa: E402
from synthmed.downstream.stats import (Comparison, compare_with_baselines, friedman_nemenyi,  # noqa: E402
                                      verdict_sentence)
from synthmed.fileio import atomic_savefig, atomic_write_json, atomic_write_text  # noqa: E402
from synthmed.metrics.bootstrap import bootstrap_mean_ci  # noqa: E402
from synthmed.metrics.json_safe import json_safe  # noqa: E402

log = logging.getLogger(__name__)
PRIMARY = "dice_mean"  # per-case mean foreground Dice: the score every test is run on


def per_case_frame(ensembles: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per arm, seed, test case and foreground label."""
    rows = []
    for e in ensembles:
        arm = e["arm"]
        for i, case_id in enumerate(e["case_ids"]):
            for j, (label, name) in enumerate(e["labels"].items()):
                rows.append({"arm": arm["name"], "category": arm["category"], "kind": arm["kind"],
                             "synthetic_set": arm["synthetic_set"], "n_synthetic": arm["n_synthetic"],
                             "real_size": arm["real_size"], "augment": arm["augment"], "seed": e["seed"],
                             "case_id": case_id, "label": int(label), "label_name": name,
                             "dice": e["dice"][i][j], "hd95": e["hd95"][i][j]})
    return pd.DataFrame(rows)


def case_scores(frame: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """[case x arm] mean over labels, then over seeds (seeds are repeated measurements of one case)."""
    per_seed = frame.groupby(["arm", "seed", "case_id"])[metric].mean()
    return per_seed.groupby(["arm", "case_id"]).mean().unstack("arm")


def arm_summaries(frame: pd.DataFrame, arms: list[ArmSpec], ensembles: list[dict], config: DownstreamConfig) -> list[dict]:
    st = config.stats
    dice_cases, hd_cases = case_scores(frame, "dice"), case_scores(frame, "hd95")
    out = []
    for arm in arms:
        runs = [e for e in ensembles if e["arm"]["name"] == arm.name]
        sub = frame[frame.arm == arm.name]
        labels = {}
        for (label, name), g in sub.groupby(["label", "label_name"]):
            per_case = {m: g.groupby("case_id")[m].mean().to_numpy() for m in ("dice", "hd95")}
            labels[name] = {m: dict(zip(("mean", "ci_low", "ci_high"), bootstrap_mean_ci(v, st.bootstrap, st.confidence)))
                            for m, v in per_case.items()}
        train_s = sum(e["train_wall_s"] for e in runs)
        steps = [n for e in runs for n in e["steps"]]
        out.append({
            **arm.to_json(),
            "n_real_per_fold": runs[0]["n_real"], "n_synthetic_used": runs[0]["n_synthetic"],
            "seeds": [e["seed"] for e in runs],
            "steps": {"train": int(np.median(steps)), "pretrain": int(np.median([n for e in runs for n in e["pretrain_steps"]])),
                      "per_unit": steps},
            "final_train_loss": float(np.mean([x for e in runs for x in e["final_train_loss"]])),
            "dice_mean": dict(zip(("mean", "ci_low", "ci_high"),
                                  bootstrap_mean_ci(dice_cases[arm.name].to_numpy(), st.bootstrap, st.confidence))),
            "hd95_mean": dict(zip(("mean", "ci_low", "ci_high"),
                                  bootstrap_mean_ci(hd_cases[arm.name].to_numpy(), st.bootstrap, st.confidence))),
            "labels": labels,
            "wall_s": {"train": train_s, "inference": sum(e["inference_wall_s"] for e in runs),
                       "train_per_step": train_s / max(sum(steps) + sum(n for e in runs for n in e["pretrain_steps"]), 1)},
        })
    return out


def comparisons_of(arms: list[ArmSpec]) -> list[Comparison]:
    """Every arm against each of its baselines (real-only; real + augmentation) that was run."""
    names = {a.name for a in arms}
    return [Comparison(a.name, base.name, role) for a in arms for role, base in a.baselines().items()
            if base.name in names]


def statistical_tests(frame: pd.DataFrame, arms: list[ArmSpec], config: DownstreamConfig,
                      extra_labels: dict[str, list[str]]) -> dict[str, Any]:
    """Comparisons with signed effects, Holm p and verdict sentences; Friedman + Nemenyi over all arms."""
    st = config.stats
    scores = case_scores(frame, "dice")
    labels = {a.name: a.label for a in arms}
    comparisons = compare_with_baselines(scores, comparisons_of(arms), st.alpha, st.bootstrap, st.confidence)
    for c in comparisons:
        extra = extra_labels.get(c["arm"], [])
        c["extra_labels"] = bool(extra)
        note = (f"EXTRA LABELS: its generator saw {len(extra)} real labelled case(s) this arm does not use"
                if extra else "")
        c["sentence"] = verdict_sentence(labels[c["arm"]], labels[c["baseline"]], c, note=note)
    tests: dict[str, Any] = {"metric": PRIMARY, "alpha": st.alpha, "comparisons": comparisons}
    if scores.shape[1] >= 3 and len(scores.dropna()) >= 2:
        tests["friedman_nemenyi"] = friedman_nemenyi(scores[[a.name for a in arms]])
    else:
        tests["friedman_nemenyi"] = None
        tests["friedman_note"] = f"needs >= 3 arms and >= 2 test cases; have {scores.shape[1]} arms, {len(scores)} cases"
    return tests


ROLE_COLUMNS = {"real_only": "real_only", "real_augmentation": "real_aug"}


def summary_table(summaries: list[dict], tests: dict[str, Any], hd95_unit: str = "mm") -> pd.DataFrame:
    """The medigan-vocabulary table: one row per arm with its budget, scores and signed effects against each
    baseline; HD95 in `hd95_unit` ("mm", or "px" for pixel-spaced 2D images), named so."""
    rows = []
    for s in summaries:
        d, h = s["dice_mean"], s["hd95_mean"]
        row = {"category": s["category"], "arm": s["name"], "label": s["label"], "real_size": s["real_size"],
               "n_synthetic": s["n_synthetic"], "augment": s["augment"], "steps": s["steps"]["train"],
               "pretrain_steps": s["steps"]["pretrain"], "train_s": round(s["wall_s"]["train"], 1),
               "final_loss": round(s["final_train_loss"], 4),
               "dice": round(d["mean"], 4), "dice_ci": f"[{d['ci_low']:.3f}, {d['ci_high']:.3f}]",
               f"hd95_{hd95_unit}": round(h["mean"], 2)}
        for c in tests["comparisons"]:
            if c["arm"] == s["name"]:
                suffix = ROLE_COLUMNS[c["baseline_role"]]
                row.update({f"diff_vs_{suffix}": round(c["mean_difference"], 4),
                            f"diff_ci_vs_{suffix}": f"[{c['ci_low']:.3f}, {c['ci_high']:.3f}]",
                            f"p_holm_vs_{suffix}": c["p_holm"], f"verdict_vs_{suffix}": c["verdict"]})
        row["extra_labels"] = bool(s.get("extra_labels"))
        rows.append(row)
    return pd.DataFrame(rows)


def plot_dice_vs_n(summaries: list[dict], path: Path) -> None:
    kinds = [k for k in (ArmKind.SYNTHETIC, ArmKind.REAL_SYNTHETIC, ArmKind.PRETRAIN_FINETUNE)
             if any(s["kind"] == k.value for s in summaries)]
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(5 * max(len(kinds), 1), 4), squeeze=False)
    baselines = {(s["real_size"], s["augment"]): s for s in summaries if s["kind"] == ArmKind.REAL.value}
    for ax, kind in zip(axes[0], kinds):
        groups: dict[tuple, list[dict]] = {}
        for s in summaries:
            if s["kind"] == kind.value:
                groups.setdefault((s["synthetic_set"], s["real_size"], s["augment"]), []).append(s)
        for (set_name, real_size, augment), items in groups.items():
            items = sorted(items, key=lambda s: s["n_synthetic"])
            x = [s["n_synthetic"] for s in items]
            y = np.array([[s["dice_mean"][k] for k in ("mean", "ci_low", "ci_high")] for s in items])
            label = f"{set_name} real={real_size} {'aug' if augment else 'no aug'}"
            line = ax.errorbar(x, y[:, 0], yerr=[y[:, 0] - y[:, 1], y[:, 2] - y[:, 0]], marker="o", capsize=3, label=label)
            base = baselines.get((real_size if real_size is not None else "all", augment))
            if base:
                ax.axhline(base["dice_mean"]["mean"], ls="--", color=line[0].get_color(), alpha=0.6)
        ax.set(title=f"{kind.value} (dashed: real-only baseline, same augmentation)", xlabel="synthetic cases", ylabel="test Dice (mean, 95% CI)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def plot_dice_vs_real_size(summaries: list[dict], n_all: int, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[tuple, list[dict]] = {}
    for s in summaries:
        if s["real_size"] is not None:
            groups.setdefault((s["kind"], s["synthetic_set"], s["n_synthetic"], s["augment"]), []).append(s)
    for (kind, set_name, n, augment), items in groups.items():
        items = sorted(items, key=lambda s: s["n_real_per_fold"])
        x = [s["n_real_per_fold"] for s in items]
        ax.plot(x, [s["dice_mean"]["mean"] for s in items], marker="o",
                label=f"{kind}{'' if set_name is None else f' {set_name} n={n}'} {'aug' if augment else 'no aug'}")
    ax.set(xlabel=f"real training cases per fold (all = {n_all})", ylabel="test Dice (mean)", title="Dice vs real-set size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def plot_learning_curves(ensembles: list[dict], path: Path) -> None:
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    by_arm: dict[str, list[list[dict]]] = {}
    for e in ensembles:
        by_arm.setdefault(e["arm"]["name"], []).extend(e["history"])
    for name, histories in by_arm.items():
        train = [[r for r in h if r["phase"] == "train"] for h in histories]
        n = min(len(h) for h in train)
        steps = [r["step"] for r in train[0][:n]]
        loss = np.mean([[r["train_loss"] for r in h[:n]] for h in train], axis=0)
        val = np.array([[np.nan if r["val_dice"] is None else r["val_dice"] for r in h[:n]] for h in train])
        line, = ax_loss.plot(steps, loss, label=name)
        ax_val.plot(steps, np.nanmean(val, axis=0), color=line.get_color(), label=name)
    ax_loss.set(xlabel="optimiser step", ylabel="training DiceCE loss", title="learning curves (mean over folds, seeds)")
    ax_val.set(xlabel="optimiser step", ylabel="validation Dice (real fold cases)")
    ax_val.legend(fontsize=6)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


HD95_UNITS = {"mm": "millimetres (the manifest's prepared voxel or pixel spacing)",
              "px": "pixels of the original 2D images (the manifest's pixel spacing in input pixels)"}


def write_reports(out: Path, config: DownstreamConfig, manifest: Manifest, arms: list[ArmSpec],
                  ensembles: list[dict], warnings: list[str], hd95_unit: str = "mm", budget: dict | None = None,
                  extra_labels: dict[str, list[str]] | None = None, allow_extra_labels: bool = False,
                  units: dict | None = None) -> dict[str, Any]:
    """Write per_case.csv, summary.csv, results.json and plots/; return the results document.

    HD95 is named by its unit in the CSVs (``hd95_mm``, or ``hd95_px`` for pixel-spaced 2D images) and
    given as ``hd95_unit`` in results.json; non-finite numbers are written as null. `extra_labels` maps
    an arm to the real cases its generator saw outside the arm's own; such arms are labelled everywhere.
    """
    extra_labels = extra_labels or {}
    frame = per_case_frame(ensembles)
    tests = statistical_tests(frame, arms, config, extra_labels)
    summaries = []
    for s in arm_summaries(frame, arms, ensembles, config):
        extra = extra_labels.get(s["name"])
        summaries.append({**s, "hd95_unit": hd95_unit,
                          "extra_labels": {"n_cases": len(extra), "examples": extra[:10]} if extra else None,
                          "verdicts": [c["sentence"] for c in tests["comparisons"] if c["arm"] == s["name"]]})
    table = summary_table(summaries, tests, hd95_unit)
    atomic_write_text(out / "per_case.csv", frame.rename(columns={"hd95": f"hd95_{hd95_unit}"}).to_csv(index=False))
    atomic_write_text(out / "summary.csv", table.to_csv(index=False))
    plots = out / "plots"
    plot_dice_vs_n(summaries, plots / "dice_vs_n_synthetic.png")
    plot_dice_vs_real_size(summaries, len(manifest.split_ids("train")), plots / "dice_vs_real_size.png")
    plot_learning_curves(ensembles, plots / "learning_curves.png")
    verdicts = [c["sentence"] for c in tests["comparisons"]]
    results = {
        "format": "synthmed-downstream-results", "format_version": 2, "synthmed_version": synthmed.__version__,
        "leakage_warning": any(w.startswith("LEAKAGE") for w in warnings), "warnings": warnings,
        "extra_labels_allowed": allow_extra_labels, "extra_labels_warning": bool(extra_labels),
        "hd95_unit": hd95_unit, "hd95_unit_meaning": HD95_UNITS[hd95_unit],
        "manifest": {"path": str(manifest.path), "sha256": manifest.sha256,
                     "test_cases": manifest.split_ids("test")},
        "config": config.model_dump(mode="json"), "budget": budget, "units": units,
        "baselines": {"real_only": [a.name for a in arms if a.is_baseline and not a.augment],
                      "real_augmentation": [a.name for a in arms if a.is_baseline and a.augment]},
        "arms": summaries, "comparisons": tests["comparisons"], "verdicts": verdicts,
        "tests": {k: v for k, v in tests.items() if k != "comparisons"},
        "summary_table": table.to_dict(orient="records"),
    }
    results = json_safe(results)
    atomic_write_json(out / "results.json", results)
    if warnings:
        log.warning("results carry %d warning(s): %s", len(warnings), " | ".join(warnings))
    return results
