"""The ``synthmed`` command line: one verb per stage.

    synthmed prepare  INPUT... --out DIR      read, check and preprocess a dataset; write the manifest
    synthmed analyze  INPUT... [--out DIR]    per-source dataset analysis (table + plots)
    synthmed train    --config FILE           train a generator on a manifest's train split
    synthmed grid     --config F --grid G     grid search of training runs, with a table of final metrics
    synthmed sample   --checkpoint C -n N     draw synthetic pairs (NIfTI or PNG + dataset card)
    synthmed encode   --checkpoint C --input  map a real volume to its latent code and reconstruct it (HA-GAN)
    synthmed evaluate --real M --synthetic S  fidelity, diversity and memorisation of a synthetic set
    synthmed downstream --config FILE         does synthetic data improve segmentation of real test cases?
    synthmed vtt      create|invite|serve|analyze  visual Turing test with expert raters
    synthmed demo     [--out DIR]             prepare -> train -> sample on the bundled data
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from synthmed import __version__
from synthmed.errors import UserError


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a generative model", description="Train a generative model on a manifest's train split.")
    p.add_argument("--config", type=Path, help="YAML preset (e.g. configs/wgan3d_32.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("--out", help="run folder (same as --set out=DIR)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue a run exactly from its newest checkpoint (RUN_DIR, or the config's out)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration and stop")
    p.set_defaults(func=_run_train)


def _run_train(args) -> None:
    from synthmed.train.config import config_to_yaml, read_yaml, resolve_config
    from synthmed.train.loop import train

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
    run_dir = train(config, resume=bool(args.resume))
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {run_dir}")


def _add_sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw synthetic image/mask pairs from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (its newest checkpoint)")
    p.add_argument("-n", type=int, default=None, help="number of pairs (required unless --masks gives them)")
    p.add_argument("--out", required=True, help="output folder (nnU-Net layout: imagesTr/, labelsTr/, dataset.json, card.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of its moving average")
    p.add_argument("--min-component-size", type=int, default=None, metavar="K", help="drop mask components under K voxels")
    p.add_argument("--keep-largest", action="store_true", help="keep only the largest mask component per label")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--trunc", type=float, default=1.0, metavar="PSI",
                   help="truncation psi for StyleGAN2 (1 = none; lower = more typical, less diverse)")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="mask-conditional models (C-SG): render images for these masks (a folder or a synthetic set)")
    p.add_argument("--mask-checkpoint", default=None, metavar="RUN",
                   help="MC-SG: draw the masks from this mask-only generator (M-SG run or checkpoint)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="class-conditional models (HA-GAN with num_classes): draw every pair of this class "
                        "(default: classes drawn uniformly)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_run_sample)


def _run_sample(args) -> None:
    from synthmed.sample.sampler import sample_to_folder

    if args.n is None and args.masks is None:
        raise UserError("-n is required (how many pairs to draw)")
    if args.n is not None and args.n < 1:
        raise UserError(f"-n must be at least 1, got {args.n}")
    out = sample_to_folder(args.checkpoint, args.n, args.out, seed=args.seed, batch_size=args.batch_size,
                           use_ema=not args.no_ema, min_component_size=args.min_component_size,
                           keep_largest=args.keep_largest, overwrite=args.overwrite, device=args.device,
                           truncation=args.trunc, masks_dir=args.masks, mask_checkpoint=args.mask_checkpoint,
                           class_name=args.class_name)
    count = len(list((out / "labelsTr").iterdir()))
    print(f"wrote {count} synthetic pairs to {out}")


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="prepare -> train -> sample on the bundled hippocampus subset")
    p.add_argument("--out", default="demo_output", help="output folder (replaced if it exists)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo preset)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> None:
    from synthmed.demo import run_demo

    run_demo(Path(args.out), steps=args.steps, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    from synthmed.data.cli import add_analyze_parser, add_prepare_parser
    from synthmed.downstream.cli import add_downstream_parser
    from synthmed.metrics.cli import add_evaluate_parser
    from synthmed.models.hagan_cli import add_encode_parser, add_grid_parser
    from synthmed.vtt.cli import add_vtt_parser

    parser = argparse.ArgumentParser(prog="synthmed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"synthmed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_prepare_parser(sub)
    add_analyze_parser(sub)
    _add_train_parser(sub)
    add_grid_parser(sub)
    _add_sample_parser(sub)
    add_encode_parser(sub)
    add_evaluate_parser(sub)
    add_downstream_parser(sub)
    add_vtt_parser(sub)
    _add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except UserError as err:
        print(f"synthmed {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
