"""The study's answer: per real-set size, every arm against real-only and against real + augmentation.

Reads only finished units. Per test case, Dice is the mean over foreground labels, then over the
slices (seeds, and folds for protocol ``folds``) of that real-set size. Each comparison is paired by
test case: the signed mean difference with a bootstrap CI, the median difference, the Wilcoxon
signed-rank p and Holm's correction over every comparison of that real-set size: the downstream stage's
``compare_with_baselines``, so a study and a single downstream run state their answers alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthmed.downstream.stats import Comparison, compare_with_baselines, verdict_sentence
from synthmed.fileio import atomic_write_json, atomic_write_text
from synthmed.metrics.bootstrap import bootstrap_mean_ci
from synthmed.metrics.evaluate import headline_figures
from synthmed.metrics.json_safe import json_safe
from synthmed.study.config import StudyConfig
from synthmed.study.locks import is_finished, read_record
from synthmed.study.plan import AGGREGATE, DOWNSTREAM, EVALUATE, REPORT, STAGE_ORDER, parse_slice

REAL, REAL_AUG = "real-noaug", "real-aug"
BASELINES = ((REAL, "real_only"), (REAL_AUG, "real_augmentation"))


def arm_key(name: str) -> str:
    """``real+synthetic-wgan-n20-rall-aug`` -> ``real+synthetic-wgan-n20-aug`` (the slice gives the size)."""
    return name.replace("-rall", "")


def arm_label(key: str) -> str:
    """A reader's name: ``real+synthetic-wgan-n20-aug`` -> ``real + wgan x 20 + augmentation``."""
    parts = key.split("-")
    aug = " + augmentation" if parts[-1] == "aug" else ""
    if parts[0] == "real":
        return "real" + aug
    kind, n = parts[0], parts[-2].lstrip("n")
    gen = "-".join(parts[1:-2])
    prefix = {"real+synthetic": "real + ", "synthetic": "", "pretrain_finetune": "pretrain on "}[kind]
    suffix = ", fine-tune on real" if kind == "pretrain_finetune" else ""
    return f"{prefix}{gen} x {n}{suffix}{aug}"


def per_case_rows(study: Path, units: list[dict]) -> pd.DataFrame:
    """The per_case.csv rows (arm, seed, case, label) of every finished downstream unit, with its slice."""
    frames = []
    for u in units:
        if u["kind"] == DOWNSTREAM and is_finished(study, u["id"]):
            frame = pd.read_csv(study / u["output"] / "per_case.csv")
            frame["real_size"] = parse_slice(u["slice"]).real_size
            frame["slice"] = u["slice"]
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["real_size", "arm", "slice", "case_id", "label_name", "dice"])
    frame = pd.concat(frames, ignore_index=True)
    frame["arm"] = frame["arm"].map(arm_key)
    return frame


def case_table(rows: pd.DataFrame, metric: str = "dice", by_label: bool = False) -> pd.DataFrame:
    """[real_size, arm, case_id(, label_name)] -> `metric`: over labels (unless `by_label`), then over slices."""
    keys = ["real_size", "arm", "slice", "case_id"] + (["label_name"] if by_label else [])
    per_slice = rows.groupby(keys)[metric].mean()
    return per_slice.groupby([k for k in keys if k != "slice"]).mean().reset_index()


def arm_summary(rows: pd.DataFrame, dice: pd.DataFrame, config: StudyConfig) -> dict[str, list[dict[str, Any]]]:
    """Per real-set size and arm: mean Dice over test cases with its bootstrap CI, Dice per label, HD95.

    `dice` is ``case_table(rows)``, already computed by the caller."""
    st = config.downstream.stats
    hd95 = next((c for c in rows.columns if c.startswith("hd95_")), None)
    per_label = case_table(rows, by_label=True)
    distance = case_table(rows, hd95) if hd95 else None
    out: dict[str, list[dict[str, Any]]] = {}
    for (size, arm), g in dice.groupby(["real_size", "arm"]):
        mean, low, high = bootstrap_mean_ci(g["dice"].to_numpy(), st.bootstrap, st.confidence)
        labels = per_label[(per_label.real_size == size) & (per_label.arm == arm)]
        entry = {"arm": arm, "label": arm_label(arm), "n_cases": int(len(g)), "dice": mean, "ci_low": low,
                 "ci_high": high, "dice_per_label": labels.groupby("label_name")["dice"].mean().to_dict()}
        if distance is not None:
            d = distance[(distance.real_size == size) & (distance.arm == arm)][hd95].to_numpy(dtype=float)
            entry.update(hd95=float(np.nanmean(d)) if np.isfinite(d).any() else float("nan"), hd95_unit=hd95[5:])
        out.setdefault(str(size), []).append(entry)
    baseline_first = [b for b, _ in BASELINES]
    for entries in out.values():  # the baselines first, then the arms by name
        entries.sort(key=lambda e: (baseline_first.index(e["arm"]) if e["arm"] in baseline_first else 2, e["arm"]))
    return out


def compare_size(table: pd.DataFrame, config: StudyConfig) -> list[dict[str, Any]]:
    """Every arm against real-only and real + augmentation (when run), Holm-corrected together, each with
    its Dice means and verdict sentence."""
    scores = table.pivot(index="case_id", columns="arm", values="dice")
    baselines = [(b, role) for b, role in BASELINES if b in scores.columns]
    pairs = [Comparison(arm, base, role) for arm in scores.columns for base, role in baselines
             if arm != base and not (arm == REAL and base == REAL_AUG)]
    st = config.downstream.stats
    rows = compare_with_baselines(scores, pairs, st.alpha, st.bootstrap, st.confidence)
    for row in rows:
        row["mean_dice"] = float(scores[row["arm"]].mean())
        row["baseline_dice"] = float(scores[row["baseline"]].mean())
        row["sentence"] = verdict_sentence(arm_label(row["arm"]), arm_label(row["baseline"]), row)
    return rows


def fidelity(study: Path, units: list[dict]) -> list[dict[str, Any]]:
    out = []
    for u in units:
        if u["kind"] == EVALUATE and is_finished(study, u["id"]):
            doc = json.loads((study / u["output"] / "metrics.json").read_text())
            out.append({"generator": u["generator"], "slice": u["slice"], "headline": headline_figures(doc)})
    return out


def wall_time(study: Path, units: list[dict]) -> dict[str, float]:
    totals = {k: 0.0 for k in STAGE_ORDER}
    for u in units:
        record = read_record(study, u["id"])
        if record:
            totals[u["kind"]] += record["wall_s"]
    return {k: round(v, 1) for k, v in totals.items() if v}


def downstream_budget(study: Path, units: list[dict]) -> dict[str, Any] | None:
    """How the segmentation arms' training budgets were set (the downstream stage's ``budget`` record)."""
    for u in units:
        if u["kind"] == DOWNSTREAM and is_finished(study, u["id"]):
            return json.loads((study / u["output"] / "results.json").read_text()).get("budget")
    return None


def aggregate(config: StudyConfig, study: Path, plan: dict) -> dict[str, Any]:
    """Write results.json and summary.csv from the finished units; return the results document."""
    units = plan["units"]
    work = [u for u in units if u["kind"] not in (AGGREGATE, REPORT)]  # what the answer is built from
    per_case = per_case_rows(study, units)
    table = case_table(per_case)
    comparisons = {str(size): compare_size(g, config) for size, g in table.groupby("real_size")}
    rows = [{"real_size": int(size), **r} for size, rs in comparisons.items() for r in rs]
    doc = {"format": "synthmed-study-results", "format_version": 2, "name": config.name,
           "protocol": config.protocol, "real_sizes": config.real_sizes, "seeds": config.seeds,
           "finished_units": sorted(u["id"] for u in work if is_finished(study, u["id"])),
           "units": len(work), "arms": arm_summary(per_case, table, config), "comparisons": comparisons,
           "verdicts": [r["sentence"] for r in rows], "fidelity": fidelity(study, units),
           "wall_s_per_stage": wall_time(study, units), "downstream_budget": downstream_budget(study, units),
           "method": "Dice per test case = mean over foreground labels, then over the slices (seeds"
                     + (", folds" if config.protocol == "folds" else "") + ") of a real-set size; paired by "
                     "case: mean difference with a bootstrap CI, Wilcoxon signed-rank, Holm per real-set size"}
    atomic_write_json(study / "results.json", json_safe(doc))
    atomic_write_text(study / "summary.csv", pd.DataFrame(rows).to_csv(index=False))
    return doc
