"""The ``synthmed vtt`` sub-command: create, invite, serve, analyze (wired in by `add_vtt_parser`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_create(args: argparse.Namespace) -> int:
    from synthmed.vtt.study import StudyOptions, create_study

    options = StudyOptions(n=args.n, seed=args.seed, window=tuple(args.window) if args.window else None,
                           panel_size=args.panel_size, interpolation=args.interpolation,
                           rater_order="shared" if args.shared_order else "per_rater", overwrite=args.overwrite,
                           channel=args.channel)
    out = create_study(args.real, args.synthetic, args.out, options)
    print(f"created study in {out}: {args.n} items ({args.n // 2} real, {args.n // 2} synthetic). "
          f"Keep {out / 'key.json'} private. Next: synthmed vtt invite --study {out} NAME ...")
    return 0


def run_invite(args: argparse.Namespace) -> int:
    from synthmed.vtt.invite import invite

    invitations = invite(args.study, args.names, admins=args.admin, reissue=args.reissue)
    print("# role\tname\ttoken  (shown once; only hashes are stored. Give each person their own token.)")
    for inv in invitations:
        print(f"{inv.role}\t{inv.name}\t{inv.token}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from synthmed.vtt.app import serve

    serve(args.study, host=args.host, port=args.port, extra_hosts=args.allowed_host)
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from synthmed.vtt.analyze import analyze_study, format_table
    from synthmed.vtt.study import ANALYSIS_DIR

    doc = analyze_study(args.study, out=args.out, overwrite=args.overwrite)
    print(format_table(doc))
    print(f"wrote {args.out or Path(args.study) / ANALYSIS_DIR}/ (analysis.json, summary.md, raters.csv, items.csv, "
          "scores.png, roc.png)")
    return 0


def _add_create(sub) -> None:
    p = sub.add_parser("create", help="select, shuffle and render real and synthetic pairs into a study folder",
                       description="Build a blinded study: n/2 real and n/2 synthetic pairs in a seeded random order, "
                                   "rendered alike (3D: axial, coronal and sagittal slices through the mask centroid; "
                                   "2D: the image), with the mask as a toggleable overlay. The answer key goes to "
                                   "STUDY/key.json, which is never served.")
    p.add_argument("--real", required=True, metavar="MANIFEST[:split]", help="prepared manifest (or folder) and split (default train)")
    p.add_argument("--synthetic", required=True, action="append", metavar="DIR",
                   help="synthetic set folder from `synthmed sample` (repeat for several sets; items are shared evenly)")
    p.add_argument("--n", type=int, required=True, help="number of items, even: n/2 real and n/2 synthetic")
    p.add_argument("--seed", type=int, default=0, help="seed of the selection and order (default: 0)")
    p.add_argument("--out", required=True, type=Path, metavar="STUDY", help="study folder to create")
    p.add_argument("--window", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                   help="display window in original units, e.g. -160 240 for CT soft tissue (default: the manifest's intensity range)")
    p.add_argument("--channel", type=int, default=0, metavar="C",
                   help="multi-channel images: the channel raters see (default: 0); --window is in its units")
    p.add_argument("--panel-size", type=int, default=320, metavar="PX", help="pixels of the longest side of a view (default: 320)")
    p.add_argument("--interpolation", choices=["bilinear", "nearest"], default="bilinear", help="image resampling (default: bilinear)")
    p.add_argument("--shared-order", action="store_true", help="every rater sees the items in the same order (default: one shuffle per rater)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing study folder (its ratings are lost)")
    p.set_defaults(func=run_create)


def _add_invite(sub) -> None:
    p = sub.add_parser("invite", help="make one access token per rater (and admin)",
                       description="Print a new token for each NAME (raters) and each --admin NAME. Tokens are shown "
                                   "once; the study keeps only their SHA-256.")
    p.add_argument("--study", required=True, type=Path, metavar="STUDY")
    p.add_argument("names", nargs="*", metavar="NAME", help="rater names (e.g. MD1 radiologist2)")
    p.add_argument("--admin", action="append", default=[], metavar="NAME", help="an admin, who can download CSV exports (repeatable)")
    p.add_argument("--reissue", action="store_true", help="replace the tokens of people already invited (old tokens and sessions stop working; ratings are kept)")
    p.set_defaults(func=run_invite)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the rating web app of a study",
                       description="Serve the study to its raters. Binds to loopback by default; for remote raters, "
                                   "put an HTTPS reverse proxy in front and pass its host name with --allowed-host.")
    p.add_argument("--study", required=True, type=Path, metavar="STUDY")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another host name clients may use (e.g. the reverse proxy's); repeatable")
    p.set_defaults(func=run_serve)


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="per-rater and pooled AUC, accuracy, binomial test, agreement and plots",
                       description="Analyse the ratings: per rater and pooled mean score of real and synthetic items, "
                                   "AUC, accuracy at threshold 5 (5 = undecided), a two-sided binomial test against "
                                   "chance, Krippendorff's alpha and pairwise agreement, and plots.")
    p.add_argument("--study", required=True, type=Path, metavar="STUDY")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default: STUDY/analysis, replaced on each run)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=run_analyze)


def add_vtt_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``vtt`` with its sub-commands create, invite, serve and analyze."""
    p = subparsers.add_parser("vtt", help="visual Turing test: create a study, invite raters, serve, analyze",
                              description="Visual Turing test with expert raters (0 = certainly real, 10 = certainly synthetic).")
    sub = p.add_subparsers(dest="vtt_command", required=True, metavar="SUBCOMMAND")
    _add_create(sub)
    _add_invite(sub)
    _add_serve(sub)
    _add_analyze(sub)
    return p
