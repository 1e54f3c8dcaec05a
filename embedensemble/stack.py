"""``python -m embedensemble.stack``: blend a run's members, tune thresholds, write the ensemble."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ._cli import add_verbosity, apply_verbosity, member_list, run_cli
from .errors import RunNotFoundError
from .metrics import DECISIONS, OBJECTIVES
from .stacking import stack_and_print


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedensemble.stack",
        description="Fit the stacker on members' out-of-fold probabilities, choose per-emotion thresholds, "
        "and write ensemble/, submission.csv, metrics.json and report/ into the run folder.",
    )
    parser.add_argument("--run", type=Path, required=True, help="run folder written by `python -m embedensemble.fit`")
    parser.add_argument("--objective", choices=OBJECTIVES, help="threshold objective (default: the config's, macro_f1)")
    parser.add_argument(
        "--decision",
        choices=DECISIONS,
        help="how labels are made from probabilities: per-emotion thresholds, or each tweet's expected-Jaccard-best "
        "set (default: the config's stack.decision, 'auto': expected_jaccard for the jaccard objective)",
    )
    parser.add_argument("--members", help="comma-separated subset of finished members to stack")
    parser.add_argument("--no-report", action="store_true", help="skip the plots and HTML report")
    parser.add_argument(
        "--refit-full",
        action="store_true",
        help="then retrain each member once on all train rows -> ensemble_full/ (embedensemble.refit)",
    )
    add_verbosity(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_verbosity(args)
    if not args.run.is_dir():
        raise RunNotFoundError(f"run folder {args.run} does not exist")
    members = member_list(args.members)
    stack_and_print(args.run, args.objective, members, not args.no_report, args.decision)
    if args.refit_full:
        from .refit import main as refit_main

        return refit_main(["--run", str(args.run), *(["--members", args.members] if args.members else [])])
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
