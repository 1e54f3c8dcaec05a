"""Deterministic input shards for distributed prediction: planned once, each readable on its own.

A shard is a run of consecutive rows of one input file, named ``part-<file>-<shard>`` from the
file's position in the sorted input and the shard's position in the file, so a rerun over the
same input makes the same shards and can skip the finished ones. A worker reads only its shard:

* CSV / JSONL: a byte range that starts and ends on record boundaries. The planner streams the
  file once in 1 MiB blocks (memory bounded whatever the size) and finds the boundaries: a newline
  outside quotes ends a record (a quoted CSV field may hold newlines; ``""`` inside quotes keeps
  the parity); a blank line is not a record, as :mod:`embedensemble.text_io` skips it (CSV: an
  empty line; JSONL: a line of whitespace).
* Parquet: a row range, read from the row groups that overlap it.

Column and text rules (ID column kept when present, missing or empty text is a
:class:`DataError` naming file, 1-based row and column) are those of :mod:`embedensemble.text_io`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data import ID_COLUMN, _clean_text
from ..errors import DataError
from ..text_io import _columns, _parquet_file, detect_format, input_files

_BLOCK = 1 << 20
_NEWLINE, _QUOTE = 10, 34
# What a blank (skipped) line may hold, as text_io reads: csv.reader skips only an empty line,
# the JSONL reader any line of whitespace.
_BLANK_BYTES = {"csv": np.array([10, 13], dtype=np.uint8), "jsonl": np.array([9, 10, 11, 12, 13, 32], dtype=np.uint8)}


@dataclass(frozen=True)
class Shard:
    """Rows ``first_row .. first_row + n_rows - 1`` (1-based, header excluded) of ``file``."""

    name: str
    file: str
    fmt: str
    first_row: int
    n_rows: int
    start: int  # byte offset (CSV/JSONL) or 0-based row offset (Parquet)
    stop: int

    def to_dict(self) -> dict:
        return asdict(self)


def plan_shards(input_path: str | os.PathLike, rows_per_shard: int) -> list[Shard]:
    """Shards of every input file (a file, or the CSV/JSONL/Parquet files directly inside a folder)."""
    if rows_per_shard < 1:
        raise DataError(f"rows per shard must be at least 1, got {rows_per_shard}")
    shards: list[Shard] = []
    for file_index, path in enumerate(input_files(input_path)):
        fmt = detect_format(path)
        if fmt == "parquet":
            ranges = _parquet_ranges(path, rows_per_shard)
        else:
            ranges = _text_ranges(path, rows_per_shard, quoted=fmt == "csv")
        first_row = 1
        for k, (start, stop, n_rows) in enumerate(ranges):
            shards.append(Shard(f"part-{file_index:05d}-{k:06d}", str(Path(path).resolve()), fmt, first_row, n_rows, start, stop))
            first_row += n_rows
    return shards


def input_signature(input_path: str | os.PathLike) -> list[dict]:
    """Name, size and modification time of each input file: a changed input is not resumed."""
    return [{"file": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in input_files(input_path)]


def _parquet_ranges(path: Path, rows_per_shard: int) -> list[tuple[int, int, int]]:
    total = int(_parquet_file(path).metadata.num_rows)
    return [(start, min(start + rows_per_shard, total), min(rows_per_shard, total - start)) for start in range(0, total, rows_per_shard)]


def record_ends(path: str | os.PathLike, *, quoted: bool) -> Iterator[np.ndarray]:
    """Byte offsets just past each non-blank record, one array per 1 MiB block read (streaming)."""
    size = os.path.getsize(path)
    quotes = 0  # quotes seen so far: an odd count means we are inside a quoted field
    content = 0  # non-whitespace bytes since the last record end: 0 at a newline = a blank line
    last_end = 0
    with open(path, "rb") as handle:
        offset = 0
        while block := handle.read(_BLOCK):
            data = np.frombuffer(block, dtype=np.uint8)
            newlines = np.flatnonzero(data == _NEWLINE)
            if quoted:
                parity = (np.cumsum(data == _QUOTE, dtype=np.int64) + quotes) % 2
                newlines = newlines[parity[newlines] == 0]
                quotes += int(np.count_nonzero(data == _QUOTE))
            solid = np.cumsum(~np.isin(data, _BLANK_BYTES["csv" if quoted else "jsonl"]), dtype=np.int64)
            if len(newlines):
                at = solid[newlines]
                non_blank = np.diff(at, prepend=-content) > 0
                yield offset + newlines[non_blank] + 1
                content = int(solid[-1] - at[-1])
                last_end = offset + int(newlines[-1]) + 1
            else:
                content += int(solid[-1])
            offset += len(block)
    if last_end < size and content:
        yield np.array([size])  # the last record has no final newline


def _text_ranges(path: Path, rows_per_shard: int, *, quoted: bool) -> list[tuple[int, int, int]]:
    """(byte start, byte stop, rows) of each shard; a CSV's first record is its header."""
    ranges: list[tuple[int, int, int]] = []
    start: int | None = None if quoted else 0
    count = 0  # rows in the shard being built
    for ends in record_ends(path, quoted=quoted):
        if start is None:  # the CSV header
            if not len(ends):
                continue
            start, ends = int(ends[0]), ends[1:]
        # the shard ends at every (rows_per_shard - count)-th record from here
        cuts = np.arange(rows_per_shard - count - 1, len(ends), rows_per_shard)
        for cut in cuts.tolist():
            ranges.append((start, int(ends[cut]), rows_per_shard))
            start = int(ends[cut])
        count = (count + len(ends)) % rows_per_shard if not len(cuts) else len(ends) - 1 - int(cuts[-1])
    if start is None:
        raise DataError("is empty (no header row)", file=path)
    if count:
        ranges.append((start, os.path.getsize(path), count))
    return ranges


# ------------------------------------------------------------------------------ reading a shard


def read_shard(shard: Shard, *, text_column: str, id_column: str | None) -> tuple[list[str], list[str] | None]:
    """The shard's texts (checked as :mod:`embedensemble.text_io` checks them) and IDs (``None`` without an ID column)."""
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[shard.fmt]
    texts, ids = [], []
    for number, text, tweet_id in reader(shard, text_column, id_column):
        texts.append(_clean_text(text, file=shard.file, row=number, column=text_column))
        ids.append(tweet_id)
    if len(texts) != shard.n_rows:
        raise DataError(f"shard {shard.name} read {len(texts)} rows, planned {shard.n_rows}: was the file changed while predicting?", file=shard.file)
    return texts, (ids if texts and ids[0] is not None else None)


def _byte_range(shard: Shard) -> bytes:
    with open(shard.file, "rb") as handle:
        handle.seek(shard.start)
        return handle.read(shard.stop - shard.start)


def _read_csv(shard: Shard, text_column: str, id_column: str | None):
    with open(shard.file, encoding="utf-8-sig", newline="") as handle:
        header = [h.strip() for h in next(r for r in csv.reader(handle) if r)]
    text_at, id_at = _columns(shard.file, header, text_column, id_column)
    try:
        rows = csv.reader(io.StringIO(_byte_range(shard).decode("utf-8"), newline=""))
    except UnicodeDecodeError as exc:
        raise DataError(f"is not valid UTF-8 ({exc.reason}) in rows {shard.first_row}..{shard.first_row + shard.n_rows - 1}", file=shard.file) from None
    number = shard.first_row - 1
    for row in rows:
        if not row:
            continue  # an empty line (the planner does not count it either)
        number += 1
        if len(row) != len(header):
            raise DataError(f"has {len(row)} fields but the header has {len(header)}", file=shard.file, row=number)
        yield number, row[text_at], (row[id_at].strip() if id_at is not None else None)


def _read_jsonl(shard: Shard, text_column: str, id_column: str | None):
    number = shard.first_row - 1
    id_name = id_column if id_column is not None else _first_record_id_key(shard)
    for line in _byte_range(shard).splitlines():
        if not line.strip():
            continue
        number += 1
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"is not valid JSON/UTF-8: {exc}", file=shard.file, row=number) from None
        if not isinstance(record, dict):
            raise DataError(f"each line must be a JSON object, got {type(record).__name__}", file=shard.file, row=number)
        if text_column not in record:
            raise DataError(f"has no key {text_column!r}; keys are {list(record)}", file=shard.file, row=number, column=text_column)
        if id_name is not None and id_name not in record:
            raise DataError(f"has no ID key {id_name!r}", file=shard.file, row=number, column=id_name)
        yield number, record[text_column], (str(record[id_name]) if id_name is not None else None)


def _first_record_id_key(shard: Shard) -> str | None:
    """Whether the file's first record has an ``ID`` key: it decides for the whole file (as in text_io)."""
    with open(shard.file, "rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return None  # the shard holding that line reports it
                return ID_COLUMN if isinstance(record, dict) and ID_COLUMN in record else None
    return None


def _read_parquet(shard: Shard, text_column: str, id_column: str | None):
    import pyarrow as pa

    parquet = _parquet_file(shard.file)
    names = parquet.schema_arrow.names
    text_at, id_at = _columns(shard.file, names, text_column, id_column)
    columns = [names[text_at]] + ([names[id_at]] if id_at is not None else [])
    # Only the row groups that overlap the shard are read (memory: the shard plus one row group).
    groups, first = [], 0
    for g in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(g).num_rows
        if first < shard.stop and first + rows > shard.start:
            groups.append((g, first))
        first += rows
    if not groups:
        return
    table = pa.concat_tables([parquet.read_row_group(g, columns=columns) for g, _ in groups])
    table = table.slice(shard.start - groups[0][1], shard.n_rows)
    texts = table.column(0).to_pylist()
    ids = table.column(1).to_pylist() if id_at is not None else [None] * len(texts)
    for k, (text, tweet_id) in enumerate(zip(texts, ids)):
        yield shard.first_row + k, text, (None if id_at is None else str(tweet_id))
