"""Streaming tweet files in and prediction files out: CSV, JSONL and Parquet, or ``-`` for stdin/stdout.

Readers yield :class:`TextChunk` objects of at most ``chunk_size`` rows, so memory stays bounded
whatever the file size; every problem is a :class:`~embedensemble.errors.DataError` naming the
file, the row (1-based, header excluded; JSONL: the line) and the column. Writers build the
output in a temp file beside the target and ``os.replace`` it into place when every chunk is
written, so a crash leaves the old output (or none), never half of one.

Shared by ``python -m embedensemble.predict`` and the Ray batch path (same column and format rules).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import numpy as np

from .data import ID_COLUMN, TEXT_COLUMN, _clean_text, _close_match_hint
from .delimited import _UTF16_BOMS, _detect_delimiter, _fit_row
from .errors import DataError
from .fileio import _UMASK
from .labels import EMOTIONS

FORMATS = ("csv", "jsonl", "parquet")
STDIO = "-"
_SHARD_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_EXTENSIONS = {**_SHARD_EXTENSIONS, ".txt": "csv"}  # .txt/.tsv: tab-separated (SemEval); not read as shards
csv.field_size_limit(10_000_000)


@dataclass
class TextChunk:
    """Up to ``chunk_size`` consecutive rows: texts, their IDs (``None`` without an ID column), first row number."""

    texts: list[str]
    ids: list[str] | None
    first_row: int


def detect_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """``fmt`` if given, else the format named by the file extension (``-`` defaults to CSV)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
        return fmt
    if str(path) == STDIO:
        return "csv"
    suffix = Path(path).suffix.lower()
    if suffix not in _EXTENSIONS:
        raise DataError(f"cannot tell the format from the extension {suffix!r}; pass --format {'|'.join(FORMATS)}", file=path)
    return _EXTENSIONS[suffix]


def input_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself, or the CSV/JSONL/Parquet files directly inside a folder of shards (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _SHARD_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise DataError(f"holds no {'/'.join(sorted(_SHARD_EXTENSIONS))} files", file=path)
        return files
    if not path.is_file():
        raise DataError("does not exist", file=path)
    return [path]


def iter_text_chunks(
    path: str | os.PathLike,
    *,
    text_column: str = TEXT_COLUMN,
    id_column: str | None = None,
    chunk_size: int = 1000,
    fmt: str | None = None,
    stdin: IO[bytes] | None = None,
) -> Iterator[TextChunk]:
    """Read texts (and IDs) from a CSV, JSONL or Parquet file, or ``-`` (stdin), ``chunk_size`` rows at a time.

    ``id_column=None`` keeps an ``ID`` column when the file has one; a named ``id_column`` must exist.
    Texts are checked like training tweets: a missing or empty text is an error, an overlong one is
    truncated with a warning.
    """
    if chunk_size < 1:
        raise DataError(f"chunk size must be at least 1, got {chunk_size}")
    fmt = detect_format(path, fmt)
    if str(path) != STDIO and not Path(path).is_file():
        raise DataError("does not exist", file=path)
    rows = {"csv": _csv_records, "jsonl": _jsonl_records, "parquet": _parquet_records}[fmt](path, text_column, id_column, stdin)
    texts: list[str] = []
    ids: list[str] = []
    first = 1
    has_ids = None
    for number, text, tweet_id in rows:
        has_ids = tweet_id is not None
        texts.append(_clean_text(text, file=path, row=number, column=text_column))
        if has_ids:
            ids.append(tweet_id)
        if len(texts) == chunk_size:
            yield TextChunk(texts, ids if has_ids else None, first)
            texts, ids, first = [], [], number + 1
    if texts:
        yield TextChunk(texts, ids if has_ids else None, first)


def count_rows(path: str | os.PathLike, fmt: str | None = None) -> int | None:
    """Row count when it is free to know (Parquet metadata); ``None`` otherwise (a progress bar then counts up)."""
    if str(path) == STDIO or detect_format(path, fmt) != "parquet":
        return None
    return int(_parquet_file(path).metadata.num_rows)


# ------------------------------------------------------------------ readers: (row, text, id) records


def _open_text(path: str | os.PathLike, stdin: IO[bytes] | None) -> IO[str]:
    """UTF-8 (a BOM is dropped) or, after a UTF-16 BOM, UTF-16 (Excel's "Unicode Text"), as in ``read_corpus``."""
    if str(path) == STDIO:
        raw = stdin if stdin is not None else sys.stdin.buffer
        raw = raw if hasattr(raw, "peek") else io.BufferedReader(raw)
    else:
        raw = open(path, "rb")  # noqa: SIM115 - closed with the text wrapper
    utf16 = raw.peek(2)[:2] in _UTF16_BOMS
    return io.TextIOWrapper(raw, encoding="utf-16" if utf16 else "utf-8-sig", newline="")


def _columns(path: str | os.PathLike, header: Sequence[str], text_column: str, id_column: str | None) -> tuple[int, int | None]:
    header = list(header)
    if text_column not in header:
        raise DataError(
            f"has no text column {text_column!r}; columns are {header}{_close_match_hint([text_column], header)} "
            "(choose one with --text-column)",
            file=path,
            column=text_column,
        )
    if id_column is not None and id_column not in header:
        raise DataError(f"has no ID column {id_column!r}; columns are {header}{_close_match_hint([id_column], header)}", file=path, column=id_column)
    id_name = id_column if id_column is not None else (ID_COLUMN if ID_COLUMN in header else None)
    return header.index(text_column), (header.index(id_name) if id_name is not None else None)


def _decoding_error(path: str | os.PathLike, row: int, exc: UnicodeDecodeError) -> DataError:
    return DataError(f"is not valid UTF-8 ({exc.reason}); re-save the file as UTF-8", file=path, row=row)


def _csv_records(path, text_column, id_column, stdin) -> Iterator[tuple[int, Any, str | None]]:
    # the separator, blank-row and trailing-empty-cell rules of embedensemble.delimited, applied row by row
    tsv = str(path) != STDIO and Path(path).suffix.lower() in (".txt", ".tsv")
    with _open_text(path, stdin) as handle:
        number = 0
        try:
            first = handle.readline()
            while first and not first.strip():
                first = handle.readline()
            if not first:
                raise DataError("is empty (no header row)", file=path)
            utf16 = handle.encoding == "utf-16"
            options = {"delimiter": "\t" if tsv else _detect_delimiter(first), "strict": True,
                       "quoting": csv.QUOTE_NONE if tsv and not utf16 else csv.QUOTE_MINIMAL}  # SemEval TSV quotes nothing
            header = [h.strip() for h in next(csv.reader([first], **options))]
            text_at, id_at = _columns(path, header, text_column, id_column)
            for row in csv.reader(handle, **options):
                if not any(cell.strip() for cell in row):
                    continue  # blank line, or a spreadsheet's row of empty cells
                number += 1
                row = _fit_row(row, header, Path(path), number)
                if "\x00" in row[text_at]:
                    raise DataError("contains a NUL character (a binary file?)", file=path, row=number, column=text_column)
                yield number, row[text_at], (row[id_at].strip() if id_at is not None else None)
        except UnicodeDecodeError as exc:
            raise _decoding_error(path, number + 1, exc) from None
        except csv.Error as exc:
            raise DataError(f"could not be parsed ({exc}); a quote inside a quoted field is written as \"\"", file=path, row=number + 1) from None


def _jsonl_records(path, text_column, id_column, stdin) -> Iterator[tuple[int, Any, str | None]]:
    id_name: str | None = None
    number_of_records = 0
    with _open_text(path, stdin) as handle:
        number = 0
        try:
            for line in handle:
                number += 1
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"is not valid JSON: {exc.msg} (column {exc.colno})", file=path, row=number) from None
                if not isinstance(record, dict):
                    raise DataError(f"each line must be a JSON object, got {type(record).__name__}", file=path, row=number)
                if text_column not in record:
                    keys = list(record)
                    raise DataError(
                        f"has no key {text_column!r}; keys are {keys}{_close_match_hint([text_column], keys)} (choose one with --text-column)",
                        file=path, row=number, column=text_column,
                    )
                if id_name is None and number_of_records == 0:  # the first record decides whether IDs are kept
                    id_name = id_column if id_column is not None else (ID_COLUMN if ID_COLUMN in record else None)
                number_of_records += 1
                if id_name is not None and id_name not in record:
                    raise DataError(f"has no ID key {id_name!r}", file=path, row=number, column=id_name)
                yield number, record[text_column], (str(record[id_name]) if id_name is not None else None)
        except UnicodeDecodeError as exc:
            raise _decoding_error(path, number + 1, exc) from None


def _parquet_file(path: str | os.PathLike):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install pyarrow", file=path) from None
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowIOError / ArrowInvalid for a damaged file
        raise DataError(f"is not a readable Parquet file: {exc}", file=path) from None


def _parquet_records(path, text_column, id_column, stdin) -> Iterator[tuple[int, Any, str | None]]:
    if str(path) == STDIO:
        raise DataError("Parquet cannot be streamed from stdin; pass a file path", file=path)
    parquet = _parquet_file(path)
    text_at, id_at = _columns(path, parquet.schema_arrow.names, text_column, id_column)
    names = parquet.schema_arrow.names
    columns = [names[text_at]] + ([names[id_at]] if id_at is not None else [])
    number = 0
    for batch in parquet.iter_batches(batch_size=4096, columns=columns):
        texts = batch.column(0).to_pylist()
        ids = batch.column(1).to_pylist() if id_at is not None else [None] * len(texts)
        for text, tweet_id in zip(texts, ids):
            number += 1
            yield number, text, (None if id_at is None else str(tweet_id))


# ------------------------------------------------------------------------------------- writers


class PredictionWriter:
    """Write rows of per-emotion values (probabilities or 0/1), chunk by chunk, replacing ``path`` atomically.

    Use as a context manager; the output appears only when the block exits without an error.
    ``path="-"`` writes to stdout as it goes (CSV or JSONL).
    """

    def __init__(self, path: str | os.PathLike, *, fmt: str | None = None, id_column: str | None = None, proba: bool = True) -> None:
        self.path = path
        self.fmt = detect_format(path, fmt)
        self.id_column = id_column
        self.proba = proba
        self.rows = 0
        self._tmp: Path | None = None
        self._handle: IO[str] | None = None
        self._parquet = None
        self._header_written = False
        if str(path) == STDIO and self.fmt == "parquet":
            raise DataError("Parquet output needs a file path, not stdout", file=path)

    def __enter__(self) -> Self:
        if str(self.path) == STDIO:
            self._handle = sys.stdout
            return self
        target = Path(self.path)
        if target.is_dir():
            raise DataError("is a folder; give an output file path", file=target)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        self._tmp = Path(tmp)
        if self.fmt != "parquet":
            self._handle = open(self._tmp, "w", encoding="utf-8", newline="")
        return self

    def write(self, values: np.ndarray, ids: Sequence[str] | None = None) -> None:
        """Append rows: ``values`` [n, 11] in ``EMOTIONS`` order, ``ids`` their IDs (written as the ID column)."""
        values = np.asarray(values, dtype=np.float64 if self.proba else np.int64)
        if ids is not None and self.id_column is None:
            self.id_column = ID_COLUMN
        if self.fmt == "parquet":
            self._write_parquet(values, ids)
        elif self.fmt == "csv":
            self._write_csv(values, ids)
        else:
            self._write_jsonl(values, ids)
        self.rows += len(values)

    def _cells(self, row: np.ndarray) -> list:
        return [round(float(v), 6) for v in row] if self.proba else [int(v) for v in row]

    def _write_csv(self, values: np.ndarray, ids: Sequence[str] | None) -> None:
        writer = csv.writer(self._handle, lineterminator="\n")
        if not self._header_written:
            writer.writerow(([self.id_column] if ids is not None else []) + list(EMOTIONS))
            self._header_written = True
        for k, row in enumerate(values):
            writer.writerow(([ids[k]] if ids is not None else []) + self._cells(row))

    def _write_jsonl(self, values: np.ndarray, ids: Sequence[str] | None) -> None:
        for k, row in enumerate(values):
            record = {self.id_column: ids[k]} if ids is not None else {}
            record.update(zip(EMOTIONS, self._cells(row)))
            self._handle.write(json.dumps(record) + "\n")

    def _write_parquet(self, values: np.ndarray, ids: Sequence[str] | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {self.id_column: pa.array(list(ids), pa.string())} if ids is not None else {}
        kind = pa.float32() if self.proba else pa.int8()
        columns.update({e: pa.array(values[:, j], kind) for j, e in enumerate(EMOTIONS)})
        table = pa.table(columns)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self._tmp, table.schema)
        self._parquet.write_table(table)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._tmp is None:  # stdout
            if self._handle is not None:
                self._handle.flush()
            return
        try:
            if self._handle is not None:
                if exc_type is None and not self._header_written and self.fmt == "csv":
                    self._write_csv(np.zeros((0, len(EMOTIONS))), None)  # empty input: header only
                self._handle.flush()
                os.fsync(self._handle.fileno())
                self._handle.close()
            if self._parquet is not None:
                self._parquet.close()
            elif self.fmt == "parquet" and exc_type is None:
                self._write_parquet(np.zeros((0, len(EMOTIONS))), None)
                self._parquet.close()
            if exc_type is None:
                os.chmod(self._tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp.exists():
                self._tmp.unlink()
