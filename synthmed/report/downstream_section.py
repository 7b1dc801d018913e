"""Downstream: per-arm Dice and HD95 with CIs, budgets, signed effects against the baselines, verdicts.

Reads results.json of format_version 1 (`tests.wilcoxon_vs_real_only`) and 2 (`comparisons`, `verdicts`,
`budget`, per-arm `steps` / `final_train_loss`); a field is rendered only when the file has it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthmed.report.figures import png_file_uri

DEFAULT_ALPHA = 0.05


def _v1_verdict(p_holm: float | None, difference: float | None, alpha: float) -> str:
    if p_holm is None or difference is None or p_holm >= alpha:
        return "no benefit"
    return "benefit" if difference > 0 else "harm"


def v1_comparisons(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Version-1 Wilcoxon tests against real-only in the shape of version 2's `comparisons`."""
    tests = results.get("tests") or {}
    alpha = tests.get("alpha", DEFAULT_ALPHA)
    rows = []
    for arm, test in (tests.get("wilcoxon_vs_real_only") or {}).items():
        difference = test.get("median_difference")
        verdict = _v1_verdict(test.get("p_holm"), difference, alpha)
        p = test.get("p_holm")
        sentence = (f"{arm}: {difference:+.3f} Dice (median paired difference over {test.get('n')} test cases) "
                    f"against {test.get('baseline')}: {verdict}" + (f" (Holm p = {p:.2g})" if p is not None else "")
                    if difference is not None else f"{arm}: no paired difference against {test.get('baseline')}")
        rows.append({"arm": arm, "baseline": test.get("baseline"), "baseline_role": "real_only",
                     "n_cases": test.get("n"), "mean_difference": None, "median_difference": difference,
                     "ci_low": None, "ci_high": None, "p": test.get("p"), "p_holm": p, "verdict": verdict,
                     "sentence": sentence})
    return rows


def _label_names(arms: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for arm in arms:
        names += [n for n in (arm.get("labels") or {}) if n not in names]
    return names


def arm_rows(arms: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    rows = []
    for arm in arms:
        per_label = arm.get("labels") or {}
        rows.append({
            "name": arm.get("name"), "label": arm.get("label"), "category": arm.get("category"),
            "is_baseline": arm.get("is_baseline"), "real_size": arm.get("real_size"),
            "n_real": arm.get("n_real_per_fold"), "n_synthetic": arm.get("n_synthetic_used"), "augment": arm.get("augment"),
            "dice": arm.get("dice_mean") or {}, "hd95": arm.get("hd95_mean") or {},
            "label_dice": [(per_label.get(n) or {}).get("dice") or {} for n in labels],
            "label_hd95": [(per_label.get(n) or {}).get("hd95") or {} for n in labels],
            "steps": arm.get("steps"), "wall_s": arm.get("wall_s") or {}, "final_train_loss": arm.get("final_train_loss"),
            "extra_labels": arm.get("extra_labels"),
        })
    return rows


def downstream_section(folder: Path, root: Path) -> dict[str, Any]:
    """What the report shows of one `synthmed downstream` output folder."""
    path = folder / "results.json"
    name = str(folder.relative_to(root)) if folder != root else folder.name
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return {"name": name, "path": str(folder), "problem": f"{path}: cannot read ({err})"}
    arms = results.get("arms") or []
    labels = _label_names(arms)
    comparisons = results.get("comparisons")
    version = 2 if comparisons is not None else 1
    comparisons = comparisons if comparisons is not None else v1_comparisons(results)
    verdicts = results.get("verdicts") or [c["sentence"] for c in comparisons if c.get("sentence")]
    figures = [{"title": p.stem.replace("_", " "), "uri": png_file_uri(p)} for p in sorted((folder / "plots").glob("*.png"))]
    return {
        "name": name, "path": str(folder), "problem": None, "format_version": results.get("format_version"),
        "results_version": version, "hd95_unit": results.get("hd95_unit", "mm"),
        "hd95_unit_meaning": results.get("hd95_unit_meaning"), "labels": labels, "arms": arm_rows(arms, labels),
        "arm_labels": {a.get("name"): a["label"] for a in arms if a.get("label")},
        "comparisons": comparisons, "verdicts": verdicts, "budget": results.get("budget"),
        "baselines": results.get("baselines"), "units": results.get("units"),
        "test_cases": len((results.get("manifest") or {}).get("test_cases") or []),
        "seeds": (results.get("config") or {}).get("seeds"), "folds": (results.get("config") or {}).get("folds"),
        "friedman": (results.get("tests") or {}).get("friedman_nemenyi"),
        "warnings": results.get("warnings") or [], "leakage_warning": results.get("leakage_warning"),
        "extra_labels_warning": results.get("extra_labels_warning"),
        "figures": [f for f in figures if f["uri"]],
    }
