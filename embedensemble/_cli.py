"""Shared command-line plumbing: verbosity flags and turning library errors into one clear line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from ._logging import set_verbosity
from .errors import EmbedEnsembleError

EXIT_USAGE = 2


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors (no progress bars)")


def apply_verbosity(args: argparse.Namespace) -> None:
    set_verbosity(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)


def member_list(text: str | None) -> list[str] | None:
    """``--members a,b`` as a list of names (blank entries dropped); ``None`` when the option is absent."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a user error prints ``error: <message>`` (no traceback) and exits with code 2."""
    try:
        return main(argv)
    except EmbedEnsembleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; finished members and folds are kept and reused by the next run", file=sys.stderr)
        return 130
