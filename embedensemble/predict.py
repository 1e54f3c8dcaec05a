"""``python -m embedensemble.predict``: score a file of tweets with a saved ensemble.

    python -m embedensemble.predict --ensemble artifacts/default/ensemble --input tweets.csv --output scores.csv --proba
    cat tweets.jsonl | python -m embedensemble.predict --ensemble DIR --input - --input-format jsonl --format jsonl

Input: CSV, JSONL or Parquet (by extension, or ``--input-format``), or ``-`` for stdin; one text
column (``--text-column``, default ``Tweet``); an ``ID`` column (or ``--id-column``) is copied to
the output. Output: one row per input row, in input order, with 0/1 per emotion (the ensemble's
thresholds) or probabilities (``--proba``). The input is read ``--chunk-size`` rows at a time and
each chunk is scored and written before the next is read, so memory stays bounded; the output
file appears atomically when every row is written (``-`` or no ``--output``: stdout, as it goes).

Thread policy (:mod:`embedensemble.runtime`, shared with ``embedensemble.serve`` and Ray actors): :func:`set_thread_policy` fixes torch's
intra-op threads once per process, to ``--threads``, else ``$OMP_NUM_THREADS``, else torch's
default (the physical cores), without importing torch itself; one batch is scored at a time and
uses all of them.

The embedding cache is off by default here: scoring new tweets would fill it with entries that
are never read again. ``--use-cache`` turns it on (useful when the same tweets are scored again).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ._cli import add_verbosity, apply_verbosity, run_cli
from ._logging import get_logger
from .data import TEXT_COLUMN
from .ensemble import load_ensemble
from .errors import ConfigError, DataError
from .text_io import FORMATS, STDIO, PredictionWriter, count_rows, detect_format, iter_text_chunks

logger = get_logger("embedensemble.predict")  # not "__main__" when run with -m
DEFAULT_CHUNK_SIZE = 1000


def predict_file(
    ensemble,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike = STDIO,
    *,
    text_column: str = TEXT_COLUMN,
    id_column: str | None = None,
    proba: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    input_format: str | None = None,
    output_format: str | None = None,
    show_progress_bar: bool | None = None,
) -> int:
    """Score every row of ``input_path`` and write the results to ``output_path``; returns the row count.

    ``show_progress_bar=None`` shows a bar on stderr only when stderr is a terminal.
    """
    in_format = detect_format(input_path, input_format)
    if output_format is None and str(output_path) == STDIO:
        output_format = "jsonl" if in_format == "jsonl" else "csv"
    if str(output_path) != STDIO and str(input_path) != STDIO and Path(output_path).resolve() == Path(input_path).resolve():
        raise DataError("the output file is the input file; choose another --output", file=output_path)
    chunks = iter_text_chunks(input_path, text_column=text_column, id_column=id_column, chunk_size=chunk_size, fmt=in_format)
    bar = _progress_bar(count_rows(input_path, in_format), show_progress_bar)
    try:
        with PredictionWriter(output_path, fmt=output_format, id_column=id_column, proba=proba) as writer:
            for chunk in chunks:
                scores = ensemble.predict_proba(chunk.texts) if proba else ensemble.predict(chunk.texts)
                writer.write(scores.to_numpy(), chunk.ids)
                bar.update(len(chunk.texts))
    finally:
        bar.close()
    return writer.rows


def _progress_bar(total: int | None, show: bool | None):
    from tqdm.auto import tqdm

    enabled = sys.stderr.isatty() if show is None else show
    return tqdm(total=total, unit=" tweets", desc="Predicting", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedensemble.predict",
        description="Score a CSV/JSONL/Parquet file (or stdin) of tweets with a saved ensemble: 0/1 per emotion, "
        "or probabilities with --proba. Streams in chunks; the output file is written atomically.",
    )
    parser.add_argument("--ensemble", type=Path, required=True, help="saved ensemble folder (e.g. artifacts/default/ensemble)")
    parser.add_argument("--input", required=True, help="input file, or - for stdin (Ray engine: a file or a folder of shards)")
    parser.add_argument("--output", default=STDIO, help="output file (default: stdout); with --engine ray an output folder")
    parser.add_argument("--text-column", default=TEXT_COLUMN, help=f"column (JSONL: key) holding the tweet text (default {TEXT_COLUMN})")
    parser.add_argument("--id-column", help="column copied to the output to identify rows (default: ID when present)")
    parser.add_argument("--proba", action="store_true", help="write probabilities instead of 0/1 decisions")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help=f"rows read and scored at a time (default {DEFAULT_CHUNK_SIZE})")
    parser.add_argument("--format", choices=FORMATS, help="output format (default: from the output extension; stdout: csv, or jsonl for jsonl input)")
    parser.add_argument("--input-format", choices=FORMATS, help="input format (default: from the input extension; stdin: csv)")
    parser.add_argument("--threads", type=int, help="torch threads (default $OMP_NUM_THREADS, else all physical cores)")
    parser.add_argument("--use-cache", action="store_true", help="read and write the embedding cache (off by default)")
    parser.add_argument("--cache-dir", help="embedding/weights cache folder (default: the ensemble's)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: the ensemble's)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local", help="local (this process) or ray (Ray Data, writes Parquet shards)")
    parser.add_argument("--address", help="Ray cluster address (--engine ray; default: start Ray locally)")
    parser.add_argument("--num-workers", type=int, help="Ray actors (--engine ray)")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per Ray actor, e.g. 1 or 0.5 (--engine ray; default 0: CPU actors)")
    parser.add_argument("--no-resume", action="store_true", help="--engine ray: start the output folder afresh instead of skipping finished shards")
    add_verbosity(parser)
    return parser


def _run_ray(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--engine ray needs Ray, which is not installed: pip install embedensemble[ray]")
    if args.output == STDIO:
        raise ConfigError("--engine ray writes Parquet shards into a folder: pass --output DIR")
    if args.input == STDIO:
        raise ConfigError("--engine ray reads files, not stdin: pass --input FILE or a folder of shards")
    from .distributed.ray_predict import predict_with_ray

    predict_with_ray(
        args.ensemble,
        args.input,
        args.output,
        text_column=args.text_column,
        id_column=args.id_column,
        proba=args.proba,
        address=args.address,
        num_workers=args.num_workers,
        batch_size=args.chunk_size,
        num_gpus=args.num_gpus,
        resume=not args.no_resume,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_verbosity(args)
    if args.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    if args.engine == "ray":
        return _run_ray(args)
    if args.address or args.num_workers or args.num_gpus or args.no_resume:
        raise ConfigError("--address, --num-workers, --num-gpus and --no-resume apply to --engine ray only")
    # check the input's format and columns before paying for the model load
    if args.input != STDIO:
        next(iter_text_chunks(args.input, text_column=args.text_column, id_column=args.id_column, chunk_size=1, fmt=args.input_format), None)
    ensemble = load_ensemble(args.ensemble, use_cache=args.use_cache, cache_dir=args.cache_dir, device=args.device, threads=args.threads)
    rows = predict_file(
        ensemble,
        args.input,
        args.output,
        text_column=args.text_column,
        id_column=args.id_column,
        proba=args.proba,
        chunk_size=args.chunk_size,
        input_format=args.input_format,
        output_format=args.format,
        show_progress_bar=False if args.quiet else None,
    )
    if args.output != STDIO:
        logger.info("wrote %d rows to %s", rows, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
