"""``python -m embedensemble.report --run DIR``: (re)build a run's report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._logging import set_verbosity
from ..errors import EmbedEnsembleError, RunNotFoundError
from . import build_report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedensemble.report",
                                     description="Write <run>/report/report.html and its PNG figures.")
    parser.add_argument("--run", required=True, metavar="DIR", help="run folder written by fit/stack")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    set_verbosity("INFO" if args.verbose else "WARNING")
    try:
        path = build_report(args.run)
    except RunNotFoundError as exc:
        # exit code 2 like argparse's own usage errors: the input named on the command line is wrong
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EmbedEnsembleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
