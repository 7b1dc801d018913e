"""Command-line verbs of the train stage.

    synthmed train --config FILE [--set KEY=VALUE ...] [--resume [RUN]] [--dry-run]
    synthmed grid  --config FILE --grid GRID.yaml --out DIR [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

from synthmed.config import config_to_yaml, read_yaml
from synthmed.errors import UserError
from synthmed.train.config import resolve_config
from synthmed.train.grid import run_grid
from synthmed.train.loop import train
from synthmed.train.watch import MonitorFactory


def add_train_parser(sub, monitor_factory: MonitorFactory | None = None) -> argparse.ArgumentParser:
    """The ``train`` verb. ``monitor_factory`` builds the fidelity monitor ``train.fidelity_every`` needs
    (the top-level command line passes the metrics stage's, which this stage may not import)."""
    p = sub.add_parser("train", help="train a generative model", description="Train a generative model on a manifest's train split.")
    p.add_argument("--config", type=Path, help="YAML preset (e.g. configs/wgan3d_32.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("--out", help="run folder (same as --set out=DIR)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue a run exactly from its newest checkpoint (RUN_DIR, or the config's out)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration and stop")
    p.set_defaults(func=functools.partial(_run_train, monitor_factory=monitor_factory))
    return p


def _run_train(args, monitor_factory: MonitorFactory | None = None) -> None:
    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    if isinstance(args.resume, str):
        run_dir = Path(args.resume)
        base = read_yaml(args.config) if args.config else read_yaml(run_dir / "config.yaml")
        overrides.append(f"out={run_dir}")
        source = str(args.config or run_dir / "config.yaml")
    elif args.config:
        base, source = read_yaml(args.config), str(args.config)
    else:
        raise UserError("train: give --config FILE, or --resume RUN_DIR")
    config = resolve_config(base, overrides, source=source)
    if args.dry_run:
        print(config_to_yaml(config), end="")
        return
    run_dir = train(config, resume=bool(args.resume), monitor_factory=monitor_factory)
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {run_dir}")


def add_grid_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("grid", help="train every combination of a grid of config values and tabulate them")
    p.add_argument("--config", required=True, type=Path, help="base YAML preset (e.g. configs/hagan_32.yaml)")
    p.add_argument("--grid", required=True, type=Path, help="YAML: dotted config key -> list of values (configs/hagan_grid.yaml)")
    p.add_argument("--out", required=True, type=Path, help="grid folder: runs/run_NNN/, grid.csv, grid.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every run, e.g. --set train.steps=500 (repeatable)")
    p.set_defaults(func=_run_grid)
    return p


def _run_grid(args) -> None:
    table = run_grid(args.config, args.grid, args.out, overrides=args.overrides)
    print(f"grid table: {table}")
