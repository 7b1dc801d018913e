"""Print a finished study's answer as Markdown tables (the README's "Results on real data" come from here).

    python benchmarks/study_tables.py STUDY_DIR

Reads STUDY/results.json (written by ``synthmed study``'s aggregate unit) and each evaluation's
metrics.json: Dice per arm with its bootstrap CI, the signed effects against real and real +
augmentation, the fidelity (Fréchet distance, synthetic vs real, and its ratio to real train vs real
test, mean over seeds), the memorisation audit and the wall time per stage.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from synthmed.study.aggregate import arm_label


def fmt(x: float, spec: str = ".3f") -> str:
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def arm_tables(doc: dict) -> None:
    for size, arms in doc["arms"].items():
        labels = list(arms[0]["dice_per_label"])
        unit = arms[0].get("hd95_unit", "mm")
        print(f"\n{size} real training cases, {arms[0]['n_cases']} test cases (Dice: mean over seeds per case)\n")
        print("| arm | Dice [95% CI] | " + " | ".join(f"Dice {n}" for n in labels) + f" | HD95 ({unit}) |")
        print("|---|---|" + "---|" * len(labels) + "---|")
        for a in arms:
            per_label = " | ".join(fmt(a["dice_per_label"][n]) for n in labels)
            print(f"| {a['label']} | {fmt(a['dice'])} [{fmt(a['ci_low'])}, {fmt(a['ci_high'])}] | {per_label} | "
                  f"{fmt(a.get('hd95', float('nan')), '.2f')} |")


def comparison_tables(doc: dict) -> None:
    for size, rows in doc["comparisons"].items():
        print(f"\n{size} real training cases: every arm against its baselines (Holm over all rows)\n")
        print("| arm | against | ΔDice mean [95% CI] | median Δ | p (Wilcoxon) | p (Holm) | verdict |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {arm_label(r['arm'])} | {arm_label(r['baseline'])} | "
                  f"{r['mean_difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | "
                  f"{r['median_difference']:+.3f} | {r['p']:.2g} | {r['p_holm']:.2g} | {r['verdict']} |")


def fidelity_table(study: Path) -> None:
    figures: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    flagged: dict[str, list[float]] = defaultdict(list)
    for metrics in sorted((study / "evaluation").glob("*/*/metrics.json")):
        generator, doc = metrics.parent.parent.name, json.loads(metrics.read_text())
        for modality in ("images", "masks"):
            for space, block in doc[modality].items():
                syn = block.get("synthetic_vs_real", {}).get("frechet_distance", {}).get("value")
                ref = block.get("real_train_vs_real_test", {}).get("frechet_distance", {}).get("value")
                if syn is not None and ref:
                    figures[generator][f"{modality} {space}"].append((syn, syn / ref))
        flagged[generator].append(doc["memorisation"]["fraction_flagged"])
    spaces = sorted({s for g in figures.values() for s in g})
    print("\nFidelity: Fréchet distance synthetic vs real (ratio to real train vs real test), mean over seeds\n")
    print("| generator | " + " | ".join(spaces) + " | memorisation: fraction flagged |")
    print("|---|" + "---|" * len(spaces) + "---|")
    for generator, by_space in figures.items():
        cells = []
        for s in spaces:
            values = np.array(by_space.get(s, [(np.nan, np.nan)]))
            cells.append(f"{np.mean(values[:, 0]):.3g} ({np.mean(values[:, 1]):.3g})")
        print(f"| {generator} | " + " | ".join(cells) + f" | {np.mean(flagged[generator]):.3f} |")


def wall_table(doc: dict) -> None:
    wall = doc["wall_s_per_stage"]
    print("\nWall time per stage, summed over units (s)\n")
    print("| " + " | ".join(wall) + " | all |")
    print("|" + "---|" * (len(wall) + 1))
    print("| " + " | ".join(f"{v:.0f}" for v in wall.values()) + f" | {sum(wall.values()):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    study = parser.parse_args().study
    doc = json.loads((study / "results.json").read_text())
    print(f"Study {doc['name']} ({doc['protocol']}; seeds {doc['seeds']}; "
          f"{len(doc['finished_units'])} of {doc['units']} units finished)")
    arm_tables(doc)
    comparison_tables(doc)
    fidelity_table(study)
    wall_table(doc)


if __name__ == "__main__":
    main()
