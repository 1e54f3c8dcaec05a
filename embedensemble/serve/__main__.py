"""``python -m embedensemble.serve --ensemble DIR [--host 127.0.0.1] [--port 8000]``.

Serves ``POST /predict``, ``GET /health`` and a page at ``GET /`` where a person pastes tweets.
One process, one model call at a time (see :mod:`embedensemble.serve.app`); for more throughput
send batches (up to ``--max-batch`` texts per request) rather than adding uvicorn workers, each of
which would hold its own copy of the ensemble.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from .._cli import add_verbosity, apply_verbosity, run_cli
from .._logging import get_logger
from ..errors import ConfigError
from .app import DEFAULT_MAX_BATCH, DEFAULT_MAX_CHARS

logger = get_logger("embedensemble.serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedensemble.serve",
        description="Serve a saved ensemble over HTTP: POST /predict, GET /health, and a page at GET /.",
    )
    parser.add_argument("--ensemble", type=Path, required=True, help="saved ensemble folder (e.g. artifacts/default/ensemble)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help=f"most texts per request (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help=f"most characters per text (default {DEFAULT_MAX_CHARS})")
    parser.add_argument("--threads", type=int, help="torch threads (default $OMP_NUM_THREADS, else all physical cores)")
    parser.add_argument("--use-cache", action="store_true", help="read and write the embedding cache (off by default)")
    parser.add_argument("--no-warmup", action="store_true", help="do not score a text at start-up (the first request then loads the members)")
    add_verbosity(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_verbosity(args)
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"serving needs {' and '.join(missing)}: pip install embedensemble[serve]")
    import uvicorn

    from .app import create_app

    app = create_app(
        args.ensemble, max_batch=args.max_batch, max_chars=args.max_chars, use_cache=args.use_cache,
        threads=args.threads, warmup=not args.no_warmup,
    )
    logger.warning("serving %s on http://%s:%d/ (Ctrl+C to stop)", args.ensemble, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="debug" if args.verbose else "warning" if args.quiet else "info")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
