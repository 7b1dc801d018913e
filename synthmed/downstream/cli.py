"""``synthmed downstream --config FILE [--set k=v] [--allow-leakage] [--allow-extra-labels]``: the downstream benchmark."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_downstream_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``downstream`` sub-command; it sets ``func`` to `run_downstream_command`."""
    p = subparsers.add_parser(
        "downstream", help="does synthetic data improve segmentation of real held-out cases?",
        description="Train SegResNet (3D) / UNet (2D) segmentation models on real-only, synthetic-only, "
                    "real+synthetic and pretrain/fine-tune arms with k-fold CV and several seeds; evaluate "
                    "the fold ensembles on the manifest's real test split. Every arm gets the same optimiser "
                    "steps (train.steps, or train.epochs converted with the real-only arm's size); real-only and "
                    "real + augmentation are always run as baselines; each arm ends with a verdict (signed Dice "
                    "difference, bootstrap CI, Holm-corrected Wilcoxon). Reruns resume.")
    p.add_argument("--config", type=Path, required=True, help="YAML preset (e.g. configs/downstream_demo.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--out", help="output folder (same as --set out=DIR)")
    p.add_argument("--allow-leakage", action="store_true",
                   help="run even when a generator saw test cases; the results then carry a loud warning")
    p.add_argument("--allow-extra-labels", action="store_true",
                   help="run arms whose generator saw real labelled cases outside the arm's own real set (a "
                        "generator trained on more cases than a small-data arm); every output labels them")
    p.add_argument("--overwrite", action="store_true", help="discard the results in the output folder (only in one an earlier `synthmed downstream` wrote)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the inputs (manifest, synthetic sets, leakage guard, counts, --out), print the resolved "
                        "configuration and the arms, then stop")
    p.set_defaults(func=run_downstream_command)
    return p


def run_downstream_command(args: argparse.Namespace) -> None:
    from synthmed.config import config_to_yaml
    from synthmed.downstream.benchmark import Benchmark, run_downstream
    from synthmed.downstream.config import load_downstream_config

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    config = load_downstream_config(args.config, overrides)
    if args.dry_run:
        benchmark = Benchmark(config, allow_leakage=args.allow_leakage, overwrite=args.overwrite,
                              allow_extra_labels=args.allow_extra_labels)  # every check a run makes before training
        print(config_to_yaml(config), end="")
        print("arms:\n" + "\n".join(f"  {a.name} ({a.category}): {a.label}" for a in benchmark.arms))
        steps = sorted({u.steps for u in benchmark.units})
        print(f"units: {len(benchmark.units)} (arm x seed x fold), optimiser steps per unit: "
              f"{', '.join(map(str, steps))} ({benchmark.budget()['steps_from']})")
        print(f"checked: manifest, {len(config.synthetic)} synthetic set(s) "
              f"({', '.join(f'{k}: {n} cases' for k, n in benchmark.set_counts().items()) or 'none'}), leakage guard"
              f"{' (' + str(len(benchmark.warnings)) + ' warning(s))' if benchmark.warnings else ''}, label budget, "
              "counts, --out")
        return
    out = run_downstream(config, allow_leakage=args.allow_leakage, overwrite=args.overwrite,
                         allow_extra_labels=args.allow_extra_labels)
    print(f"results: {out / 'results.json'}")
    print((out / "summary.csv").read_text(), end="")
    results = json.loads((out / "results.json").read_text())
    print("verdicts (mean per-case Dice difference [95% bootstrap CI], paired Wilcoxon, Holm over all comparisons):")
    print("\n".join(f"  {v}" for v in results["verdicts"]) or "  none (no arm beside the baselines)")
