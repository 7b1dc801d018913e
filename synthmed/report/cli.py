"""The ``synthmed report`` sub-command (wired into synthmed/cli.py by `add_report_parser`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="one self-contained HTML report of a study / train / evaluate / downstream folder",
                              description="Render a folder written by synthmed into one HTML file (images inline, "
                                          "no scripts, no network access needed to view it).")
    p.add_argument("folder", metavar="DIR", help="a study or demo folder, or a train, evaluate or downstream output folder")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the HTML file (default: DIR/report.html for a study or demo, else DIR_report.html beside DIR)")
    p.set_defaults(func=run_report)
    return p


def run_report(args: argparse.Namespace) -> int:
    from synthmed.report.render import write_report

    path = write_report(Path(args.folder), Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0
