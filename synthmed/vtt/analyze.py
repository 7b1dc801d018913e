"""Analysis of a study's ratings: per rater and pooled scores, AUC, accuracy, binomial test, agreement, plots.

Scale: 0 = certainly real, 10 = certainly synthetic; synthetic is the positive class.

- AUC: area under the ROC curve of the scores (ties count one half), with a two-sided Mann-Whitney U
  p-value against AUC = 0.5.
- Accuracy at threshold 5: a score below 5 calls an item real, above 5 synthetic; 5 is the undecided
  midpoint and is left out of accuracy and of the binomial test (their number is reported as
  ``n_undecided``). The binomial test is two-sided against a success probability of 0.5, with a
  Clopper-Pearson 95% interval of the accuracy.
- Pooled: every rating of every rater as one observation. Items are shared between raters, so the
  pooled p-values treat ratings as independent and are optimistic; per-rater results are exact.
- Agreement: Krippendorff's alpha (interval and ordinal metrics; handles raters who did not rate
  every item), and per rater pair Spearman's rho and quadratic-weighted Cohen's kappa on the items
  both rated.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_curve

import synthmed
from synthmed.errors import UserError
from synthmed.fileio import atomic_directory, atomic_savefig, atomic_write_json, atomic_write_text, check_output_folder
from synthmed.vtt import db
from synthmed.vtt.study import ANALYSIS_DIR, VTT_ANALYZE_KIND, Study, load_key, load_study

ANALYSIS_FORMAT = "synthmed-vtt-analysis"
THRESHOLD = 5
SCORES = np.arange(db.MIN_SCORE, db.MAX_SCORE + 1)
POOLED = "pooled"
ALPHA_LEVELS = ("interval", "ordinal")
TABLE_COLUMNS = ("rater", "n", "mean_real", "mean_synthetic", "auc", "accuracy", "n_undecided", "binomial_p_value")


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _sd(x: np.ndarray) -> float | None:
    return float(np.std(x, ddof=1)) if len(x) > 1 else None


def score_summary(is_synthetic: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Means, AUC, accuracy at threshold 5 and the binomial test of one set of ratings.

    Args:
        is_synthetic: bool ``[n]``, the true origin of each rated item.
        scores: int ``[n]``, the ratings (0 = certainly real ... 10 = certainly synthetic).

    Returns:
        A dict; a figure that cannot be computed (e.g. AUC without both origins) is None.
    """
    is_synthetic = np.asarray(is_synthetic, dtype=bool)
    scores = np.asarray(scores, dtype=np.int64)
    real, synthetic = scores[~is_synthetic], scores[is_synthetic]
    out: dict[str, Any] = {
        "n": int(len(scores)), "n_real": int(len(real)), "n_synthetic": int(len(synthetic)),
        "mean_real": _mean(real), "sd_real": _sd(real), "mean_synthetic": _mean(synthetic), "sd_synthetic": _sd(synthetic),
        "auc": None, "auc_p_value": None,
    }
    if len(real) and len(synthetic):  # AUC = U / (n1 n0): the share of (synthetic, real) pairs ordered right, ties half
        test = stats.mannwhitneyu(synthetic, real, alternative="two-sided")
        out["auc"] = float(test.statistic / (len(synthetic) * len(real)))
        out["auc_p_value"] = float(test.pvalue)
    decided = scores != THRESHOLD
    called_synthetic = scores > THRESHOLD
    correct = decided & (called_synthetic == is_synthetic)
    n_decided, n_correct = int(decided.sum()), int(correct.sum())
    out.update({"n_decided": n_decided, "n_undecided": int(len(scores) - n_decided), "n_correct": n_correct,
                "accuracy": None, "accuracy_ci95": None, "binomial_p_value": None,
                "sensitivity": None, "specificity": None})
    if n_decided:
        test = stats.binomtest(n_correct, n_decided, 0.5, alternative="two-sided")
        ci = test.proportion_ci(confidence_level=0.95, method="exact")
        out.update({"accuracy": n_correct / n_decided, "accuracy_ci95": [float(ci.low), float(ci.high)],
                    "binomial_p_value": float(test.pvalue)})
    decided_synthetic, decided_real = decided & is_synthetic, decided & ~is_synthetic
    if decided_synthetic.any():  # synthetic items called synthetic, among decided synthetic items
        out["sensitivity"] = float(correct[decided_synthetic].mean())
    if decided_real.any():  # real items called real, among decided real items
        out["specificity"] = float(correct[decided_real].mean())
    return out


def _delta_squared(values: np.ndarray, counts: np.ndarray, level: str) -> np.ndarray:
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return (values[:, None] - values[None, :]) ** 2
    if level == "ordinal":  # Krippendorff: (sum of n_g for g from c to k) - (n_c + n_k) / 2, squared
        cumulative = np.concatenate([[0.0], np.cumsum(counts)])
        i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        between = cumulative[hi + 1] - cumulative[lo]
        return (between - (counts[i] + counts[j]) / 2.0) ** 2
    raise ValueError(f"unknown level {level!r}")


def krippendorff_alpha(ratings: np.ndarray, level: str = "interval") -> float | None:
    """Krippendorff's alpha of a ``[raters, units]`` matrix with NaN for missing ratings.

    Units with fewer than two ratings are not pairable and are left out. Returns None when no unit
    has two ratings or when all pairable ratings are equal (no variation: alpha is undefined).
    """
    ratings = np.asarray(ratings, dtype=np.float64)
    values = np.unique(ratings[np.isfinite(ratings)])
    coincidence = np.zeros((len(values), len(values)))
    for unit in ratings.T:
        present = unit[np.isfinite(unit)]
        if len(present) < 2:
            continue
        counts = np.array([(present == v).sum() for v in values], dtype=np.float64)
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(present) - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    if n < 2:
        return None
    delta2 = _delta_squared(values, n_c, level)
    expected = (np.outer(n_c, n_c) * delta2).sum()
    if expected == 0:
        return None
    return float(1.0 - (n - 1) * (coincidence * delta2).sum() / expected)


def quadratic_weighted_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two raters' 0..10 scores with quadratic disagreement weights (None when undefined)."""
    k = len(SCORES)
    observed = np.zeros((k, k))
    np.add.at(observed, (np.asarray(a, dtype=int), np.asarray(b, dtype=int)), 1.0)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    weights = (SCORES[:, None] - SCORES[None, :]) ** 2 / (k - 1) ** 2
    chance = (weights * expected).sum()
    return None if chance == 0 else float(1.0 - (weights * observed).sum() / chance)


def pairwise_agreement(matrix: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    """Spearman's rho and quadratic-weighted Cohen's kappa for every pair of raters, on shared items."""
    out = []
    for a, b in itertools.combinations(range(len(names)), 2):
        both = np.isfinite(matrix[a]) & np.isfinite(matrix[b])
        x, y = matrix[a, both].astype(int), matrix[b, both].astype(int)
        entry = {"rater_a": names[a], "rater_b": names[b], "n_common": int(both.sum()), "spearman_rho": None,
                 "weighted_kappa": None}
        if len(x) >= 2:
            if np.ptp(x) > 0 and np.ptp(y) > 0:  # Spearman's rho: Pearson's r of the (tie-averaged) ranks
                entry["spearman_rho"] = float(np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1])
            entry["weighted_kappa"] = quadratic_weighted_kappa(x, y)
        out.append(entry)
    return out


def analyze_ratings(rows: list[dict[str, Any]], item_ids: list[str]) -> dict[str, Any]:
    """The analysis document of ratings joined with the key.

    Args:
        rows: one dict per rating with ``rater``, ``item_id``, ``score``, ``origin`` ("real" or
            "synthetic") and ``set`` (the item's source set).
        item_ids: every item of the study (the columns of the agreement matrix).
    """
    names = sorted({r["rater"] for r in rows})
    per_rater = {}
    for name in names:
        mine = [r for r in rows if r["rater"] == name]
        per_rater[name] = score_summary(np.array([r["origin"] == "synthetic" for r in mine]), np.array([r["score"] for r in mine]))
    pooled = score_summary(np.array([r["origin"] == "synthetic" for r in rows], dtype=bool), np.array([r["score"] for r in rows]))
    column = {item: j for j, item in enumerate(item_ids)}
    matrix = np.full((len(names), len(item_ids)), np.nan)
    for r in rows:
        matrix[names.index(r["rater"]), column[r["item_id"]]] = r["score"]
    real_rows = [r for r in rows if r["origin"] == "real"]
    by_set = {}
    for set_name in sorted({r["set"] for r in rows if r["origin"] == "synthetic"}):
        chosen = real_rows + [r for r in rows if r["set"] == set_name and r["origin"] == "synthetic"]
        summary = score_summary(np.array([r["origin"] == "synthetic" for r in chosen]), np.array([r["score"] for r in chosen]))
        by_set[set_name] = {k: summary[k] for k in ("n_synthetic", "mean_synthetic", "mean_real", "auc", "auc_p_value")}
    return {
        "threshold": {"value": THRESHOLD, "rule": "score < 5 calls an item real, score > 5 synthetic; 5 is undecided "
                      "and left out of accuracy and the binomial test"},
        "raters": per_rater, POOLED: pooled, "by_synthetic_set": by_set,
        "agreement": {
            "n_raters": len(names),
            "n_items_rated_by_two_or_more": int((np.isfinite(matrix).sum(axis=0) >= 2).sum()),
            "krippendorff_alpha": {level: krippendorff_alpha(matrix, level) for level in ALPHA_LEVELS},
            "pairwise": pairwise_agreement(matrix, names),
        },
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def table_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per rater, then the pooled row, with the TABLE_COLUMNS."""
    entries = [*doc["raters"].items(), (POOLED, doc[POOLED])]
    return [{"rater": name, **{c: s[c] for c in TABLE_COLUMNS[1:]}} for name, s in entries]


def format_table(doc: dict[str, Any]) -> str:
    """A markdown table of the per-rater and pooled results, and the agreement lines."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in table_rows(doc):
        lines.append("| " + " | ".join(_fmt(row[c]) for c in TABLE_COLUMNS) + " |")
    alpha = doc["agreement"]["krippendorff_alpha"]
    lines += ["", f"Krippendorff's alpha: interval {_fmt(alpha['interval'])}, ordinal {_fmt(alpha['ordinal'])} "
              f"({doc['agreement']['n_raters']} raters, {doc['agreement']['n_items_rated_by_two_or_more']} items rated by two or more)"]
    for pair in doc["agreement"]["pairwise"]:
        lines.append(f"{pair['rater_a']} vs {pair['rater_b']}: Spearman {_fmt(pair['spearman_rho'])}, "
                     f"weighted kappa {_fmt(pair['weighted_kappa'])} (n = {pair['n_common']})")
    return "\n".join(lines)


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _item_rows(rows: list[dict[str, Any]], key: dict[str, dict[str, str]], item_ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for item in item_ids:
        scores = [r["score"] for r in rows if r["item_id"] == item]
        out.append({"item_id": item, **key[item], "n_ratings": len(scores),
                    "mean_score": float(np.mean(scores)) if scores else None})
    return out


ORIGIN_COLOURS = {"real": "tab:blue", "synthetic": "tab:orange"}
MAX_ROC_LEGEND = 10  # with more raters, their ROC curves are drawn thin and grey, without legend entries


def _plot_scores(rows: list[dict[str, Any]], doc: dict[str, Any], path: Path) -> None:
    """Left: the pooled score distribution of real and synthetic items. Right: each rater's two mean scores."""
    from matplotlib.figure import Figure

    names = sorted(doc["raters"])
    height = max(3.5, 1.2 + 0.3 * len(names))  # inches: room for one row per rater
    fig = Figure(figsize=(11.0, height))
    pooled_ax, rater_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.2, 1.0]})
    for offset, origin in ((-0.2, "real"), (0.2, "synthetic")):
        scores = np.array([r["score"] for r in rows if r["origin"] == origin], dtype=int)
        share = np.bincount(scores, minlength=len(SCORES)) / max(len(scores), 1)
        pooled_ax.bar(SCORES + offset, share, width=0.4, color=ORIGIN_COLOURS[origin], label=f"{origin} (n = {len(scores)})")
    pooled_ax.axvline(THRESHOLD, color="grey", linestyle=":", linewidth=1)
    pooled_ax.set(title=f"all ratings ({len(names)} rater{'s' if len(names) != 1 else ''})", xticks=SCORES,
                  xlabel="score (0 = certainly real, 10 = certainly synthetic)", ylabel="share of ratings")
    pooled_ax.legend(fontsize="small")
    y = np.arange(len(names))[::-1]
    for origin in ("real", "synthetic"):
        means = [doc["raters"][n][f"mean_{origin}"] for n in names]
        rater_ax.scatter([np.nan if m is None else m for m in means], y, color=ORIGIN_COLOURS[origin], label=f"mean {origin}", zorder=3)
    for yi, name in zip(y, names):
        pair = [doc["raters"][name]["mean_real"], doc["raters"][name]["mean_synthetic"]]
        if None not in pair:
            rater_ax.plot(pair, [yi, yi], color="grey", linewidth=1)
    rater_ax.axvline(THRESHOLD, color="grey", linestyle=":", linewidth=1)
    rater_ax.set(yticks=y, yticklabels=names, xlim=(-0.3, 10.3), xticks=SCORES, xlabel="mean score", title="per rater")
    rater_ax.legend(fontsize="small", loc="lower right")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.55 / height, top=1 - 0.4 / height, wspace=0.3)
    atomic_savefig(fig, path, dpi=100)


def _plot_roc(rows: list[dict[str, Any]], doc: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = sorted(doc["raters"])
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    for name in [*names, POOLED]:
        mine = rows if name == POOLED else [r for r in rows if r["rater"] == name]
        summary = doc[POOLED] if name == POOLED else doc["raters"][name]
        if summary["auc"] is None:
            continue
        fpr, tpr, _ = roc_curve([r["origin"] == "synthetic" for r in mine], [r["score"] for r in mine])
        label = f"{name} (AUC {summary['auc']:.2f}, n = {summary['n']})"
        if name == POOLED:
            ax.plot(fpr, tpr, linewidth=2.5, color="black", label=label)
        elif len(names) <= MAX_ROC_LEGEND:
            ax.plot(fpr, tpr, linewidth=1.2, label=label)
        else:
            ax.plot(fpr, tpr, linewidth=0.6, color="0.6")
    ax.set(xlabel="false positive rate (real called synthetic)", ylabel="true positive rate (synthetic called synthetic)",
           xlim=(0, 1), ylim=(0, 1.01), title="ROC of the ratings")
    ax.legend(fontsize="small", loc="lower right")
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.93)
    atomic_savefig(fig, path, dpi=100)


@dataclass(frozen=True)
class StudyRatings:
    study: Study
    key: dict[str, dict[str, str]]  # item id -> origin, set, case
    rows: list[dict[str, Any]]  # every rater's rating joined with its origin and set
    progress: dict[str, dict[str, int]]  # rater -> {"rated", "assigned"}


def load_study_ratings(study_dir: str | os.PathLike) -> StudyRatings:
    """The study, its key, and every rater's ratings joined with the key."""
    study = load_study(study_dir)
    key = load_key(study)
    with db.opened(study.db_path) as conn:
        db.check_database(conn, study.db_path, study.study_id)
        ratings = [r for r in db.all_ratings(conn) if r["role"] == "rater"]
        progress = {p["rater"]: {"rated": p["rated"], "assigned": p["assigned"]}
                    for p in db.all_progress(conn) if p["role"] == "rater"}
    rows = [{**r, "origin": key[r["item_id"]]["origin"], "set": key[r["item_id"]]["set"]} for r in ratings]
    return StudyRatings(study, key, rows, progress)


def analyze_study(study_dir: str | os.PathLike, out: str | os.PathLike | None = None, overwrite: bool = False) -> dict[str, Any]:
    """`synthmed vtt analyze`: write analysis.json, summary.md, raters.csv, items.csv, scores.png and roc.png.

    Args:
        study_dir: the study folder.
        out: output folder; default ``STUDY/analysis``, which is always replaced (it is derived data).
        overwrite: replace an existing `out` given explicitly.

    Raises:
        UserError: not a study, no ratings yet, or an `out` that overlaps the study (other than the
            default) or may not be replaced (see `synthmed.fileio.check_output_folder`).
    """
    loaded = load_study_ratings(study_dir)
    study, rows, item_ids = loaded.study, loaded.rows, list(loaded.study.item_ids)
    default_out = study.folder / ANALYSIS_DIR
    out = Path(out).expanduser().resolve() if out is not None else default_out
    is_default = out == default_out.resolve()
    overwrite = overwrite or is_default
    read_from = [] if is_default else [study.folder]  # the default lies inside the study, by design
    check_output_folder(out, kind=VTT_ANALYZE_KIND, inputs=read_from, overwrite=overwrite)
    if not rows:
        raise UserError(f"{study.folder}: no ratings yet; nothing to analyze")
    doc = {"format": ANALYSIS_FORMAT, "synthmed_version": synthmed.__version__,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "study_id": study.study_id,
           "n_items": len(item_ids), "progress": loaded.progress,
           **analyze_ratings(rows, item_ids)}
    with atomic_directory(out, kind=VTT_ANALYZE_KIND, inputs=read_from, overwrite=overwrite) as tmp:
        atomic_write_json(tmp / "analysis.json", doc)
        atomic_write_text(tmp / "summary.md", f"# Visual Turing test {study.study_id}\n\n{format_table(doc)}\n\n"
                          f"Threshold rule: {doc['threshold']['rule']}.\n")
        atomic_write_text(tmp / "raters.csv", _csv_text(table_rows(doc), list(TABLE_COLUMNS)))
        atomic_write_text(tmp / "items.csv", _csv_text(_item_rows(rows, loaded.key, item_ids),
                                                       ["item_id", "origin", "set", "case", "n_ratings", "mean_score"]))
        _plot_scores(rows, doc, tmp / "scores.png")
        _plot_roc(rows, doc, tmp / "roc.png")
    return doc
