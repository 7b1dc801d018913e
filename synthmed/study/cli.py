"""``synthmed study``: the parser of the study stage (gathered by synthmed/cli.py)."""

from __future__ import annotations

import argparse


def add_study_parser(sub) -> None:
    p = sub.add_parser("study", help="the whole protocol (prepare -> train -> sample -> evaluate -> downstream -> "
                                     "report) as resumable work units",
                       description="Run (or resume) a study: one YAML names the data, generators, sampling, "
                                   "evaluation and downstream arms. Finished units are skipped on a rerun.")
    p.add_argument("--config", required=True, help="study YAML, e.g. configs/study_tiny.yaml")
    p.add_argument("--out", default=None, help="study folder (default: the YAML's out)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of the YAML")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--jobs", type=int, default=1, help="local worker processes sharing the study folder")
    mode.add_argument("--worker", action="store_true",
                      help="one worker: claim free units until none is left (e.g. one per SLURM array task)")
    mode.add_argument("--dry-run", action="store_true", help="check the inputs and print the units; run nothing")
    p.set_defaults(func=_run_study)


def _run_study(args: argparse.Namespace) -> None:
    from synthmed.errors import UserError
    from synthmed.study.run import check_inputs, open_study, print_answer, print_plan, run_jobs, run_worker

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: needs at least 1")
    study = open_study(args.config, args.out, args.set, write=False)
    notes = check_inputs(study)  # before anything is written: a refused study leaves no folder
    if args.dry_run:
        print_plan(study, notes)
        return
    study = open_study(args.config, args.out, args.set)
    if args.jobs > 1:
        run_jobs(args.config, study, args.jobs, args.set)
    else:
        run_worker(study)
    if not args.worker:  # each worker of an array would print it again
        print_answer(study)
