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
    synthmed export   nnunet --manifest M --synthetic S --out DIR   an nnU-Net v2 dataset (real + synthetic)
    synthmed report   DIR [--out FILE]        one self-contained HTML report of a study / train / evaluate / downstream folder
    synthmed study    --config FILE           the whole protocol as resumable work units (--jobs N, --worker)
    synthmed demo     [--out DIR]             the tiny study on the bundled data, with its HTML report
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from synthmed import __version__
from synthmed.errors import UserError


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="the tiny study (prepare -> train -> sample -> evaluate -> downstream -> report) on the bundled hippocampus subset")
    p.add_argument("--out", default="demo_output", help="output folder (an earlier demo's folder there is replaced)")
    p.add_argument("--steps", type=int, default=None, help="generator training steps (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> None:
    from synthmed.demo import run_demo

    run_demo(Path(args.out), steps=args.steps, seed=args.seed)


def _fidelity_monitor(context):
    """The metrics stage's fidelity monitor for ``train.fidelity_every`` (imported only when a run uses it)."""
    from synthmed.metrics.monitor import fidelity_monitor

    return fidelity_monitor(context)


def build_parser() -> argparse.ArgumentParser:
    from synthmed.data.cli import add_analyze_parser, add_prepare_parser
    from synthmed.downstream.cli import add_downstream_parser
    from synthmed.export.cli import add_export_parser
    from synthmed.metrics.cli import add_evaluate_parser
    from synthmed.report.cli import add_report_parser
    from synthmed.study.cli import add_study_parser
    from synthmed.sample.cli import add_encode_parser, add_sample_parser
    from synthmed.train.cli import add_grid_parser, add_train_parser
    from synthmed.vtt.cli import add_vtt_parser

    parser = argparse.ArgumentParser(prog="synthmed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"synthmed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_prepare_parser(sub)
    add_analyze_parser(sub)
    add_train_parser(sub, monitor_factory=_fidelity_monitor)
    add_grid_parser(sub)
    add_sample_parser(sub)
    add_encode_parser(sub)
    add_evaluate_parser(sub)
    add_downstream_parser(sub)
    add_vtt_parser(sub)
    add_export_parser(sub)
    add_report_parser(sub)
    add_study_parser(sub)
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
