"""Reading delimited text files the way spreadsheet tools and editors actually write them.

What is accepted, so that a file saved by Excel, Google Sheets, pandas or a Windows editor
reads exactly as the clean file would:

- encodings: UTF-8 with or without a byte-order mark, and UTF-16 with a BOM (Excel's
  "Unicode Text"). Anything else (e.g. Windows-1252 from Notepad or old Excel) is refused
  with the byte, line, row and column of the first undecodable byte.
- line endings ``\\n``, ``\\r\\n`` and ``\\r``; only those end a row (U+2028, form feed and
  NEL inside a tweet are text, unlike ``str.splitlines``).
- separators: ``.csv`` files may use ``,``, ``;`` (Excel in many European locales) or a tab;
  the one that splits the header into the most columns wins (ties: ``,``). ``.txt``/``.tsv``
  files (SemEval) are tab-separated with no quoting, except UTF-16 ones, which Excel quotes.
- blank rows and rows of empty cells are skipped (row numbers count only non-blank data
  rows, header excluded, 1-based); empty cells past the header's last named column are dropped.

Refused with file, row and column: a quote that never closes, a NUL character, a row with
more (non-empty) or fewer fields than the header.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

csv.field_size_limit(10_000_000)
_DELIMITERS = (",", ";", "\t")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass
class Table:
    """A parsed file: stripped header names and the data rows (each as long as the header)."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    delimiter: str


def read_table(path: Path) -> Table:
    """Decode, detect the separator and parse ``path``; every problem is a :class:`DataError`."""
    if not path.is_file():
        raise DataError("does not exist", file=path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"could not be read: {exc.strerror or exc}", file=path) from None
    utf16 = raw.startswith(_UTF16_BOMS)
    text = _decode(raw, path, utf16)
    if not text.strip():
        raise DataError("is empty (no header row)", file=path)
    tsv = path.suffix.lower() in (".txt", ".tsv")
    delimiter = "\t" if tsv else _detect_delimiter(text)
    quoting = csv.QUOTE_NONE if tsv and not utf16 else csv.QUOTE_MINIMAL  # SemEval TSV quotes nothing
    records = _parse(text, path, delimiter, quoting)
    if not records:
        raise DataError("is empty (no header row)", file=path)
    header = [h.strip() for h in records[0]]
    rows = [_fit_row(row, header, path, number) for number, row in enumerate(records[1:], start=1)]
    for number, row in enumerate(rows, start=1):
        for j, cell in enumerate(row):
            if "\x00" in cell:
                raise DataError(
                    "contains a NUL character (a binary file, or UTF-16 without a byte-order mark?)",
                    file=path, row=number, column=header[j] or None,
                )
    return Table(path, header, rows, delimiter)


def _decode(raw: bytes, path: Path, utf16: bool) -> str:
    encoding = "utf-16" if utf16 else "utf-8-sig"  # utf-8-sig drops the BOM Excel writes
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        if utf16:
            raise DataError(f"is not valid UTF-16 (offset {exc.start}); re-save the file as CSV UTF-8", file=path) from None
        line = raw[: exc.start].count(b"\n") + raw[: exc.start].count(b"\r") - raw[: exc.start].count(b"\r\n") + 1
        row, column = _locate(raw[: exc.start].decode("utf-8-sig", errors="replace"))
        raise DataError(
            f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}, line {line}; a Windows-1252/Latin-1 "
            "file?); re-save it as UTF-8 (Excel: Save As > 'CSV UTF-8'; Notepad: Save As > Encoding UTF-8)",
            file=path, row=row, column=column,
        ) from None


def _locate(prefix: str) -> tuple[int | None, str | None]:
    """Data row and column in which the text ``prefix`` ends (for pointing at a bad byte)."""
    try:
        records = [r for r in csv.reader(io.StringIO(prefix, newline=""), delimiter=_detect_delimiter(prefix)) if any(c.strip() for c in r)]
    except csv.Error:
        return None, None
    at_record_start = prefix.endswith(("\n", "\r")) or not prefix
    if len(records) <= (0 if at_record_start else 1):
        return None, None  # the bad byte is in the header
    header = [h.strip() for h in records[0]]
    row = len(records) if at_record_start else len(records) - 1
    index = 0 if at_record_start else len(records[-1]) - 1
    return row, (header[index] or None) if index < len(header) else None


def _detect_delimiter(text: str) -> str:
    first_line = re.split(r"\r\n|\r|\n", text.lstrip("\r\n"), maxsplit=1)[0]
    counts = {}
    for delimiter in _DELIMITERS:
        try:
            counts[delimiter] = len(next(csv.reader([first_line], delimiter=delimiter), []))
        except csv.Error:
            counts[delimiter] = 0
    return max(_DELIMITERS, key=lambda d: (counts[d], -_DELIMITERS.index(d)))


def _parse(text: str, path: Path, delimiter: str, quoting: int) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    records: list[list[str]] = []
    record_line = 0  # physical lines consumed before the record being read
    try:
        for record in reader:
            if any(cell.strip() for cell in record):  # skip blank lines and Excel's rows of empty cells
                records.append(record)
            record_line = reader.line_num
    except csv.Error as exc:
        row = len(records) or None  # the record being read, as a data row (the header is records[0])
        line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
        start = line_starts[min(record_line, len(line_starts) - 1)]
        index = _stray_quote_field(text[start:], delimiter)
        header = [h.strip() for h in records[0]] if records else []
        column = header[index] or None if row and index is not None and index < len(header) else None
        raise DataError(
            f'has an unterminated or stray quote ({exc}): a field that starts with " must end with " just before the '
            'separator or the line end; write a quote inside a quoted field as ""',
            file=path, row=row, column=column,
        ) from None
    return records


def _stray_quote_field(text: str, delimiter: str) -> int | None:
    """Index of the field of the record at the start of ``text`` whose quote is broken."""
    field, i, at_start = 0, 0, True
    while i < len(text):
        char = text[i]
        if at_start and char == '"':
            j = i + 1
            while True:
                k = text.find('"', j)
                if k == -1:
                    return field  # never closes
                if text[k + 1 : k + 2] == '"':
                    j = k + 2  # a doubled quote inside the field
                    continue
                break
            if k + 1 < len(text) and text[k + 1] not in (delimiter, "\r", "\n"):
                return field  # text right after the closing quote: the quote was not a closing one
            i, at_start = k + 1, False
            continue
        if char in "\r\n":
            return None
        if char == delimiter:
            field, at_start = field + 1, True
        else:
            at_start = False
        i += 1
    return None


def _fit_row(row: list[str], header: list[str], path: Path, number: int) -> list[str]:
    """Drop empty cells past the header, pad missing cells of unnamed trailing columns."""
    if len(row) > len(header) and not any(c.strip() for c in row[len(header) :]):
        return row[: len(header)]
    if len(row) < len(header) and not any(header[len(row) :]):
        return row + [""] * (len(header) - len(row))
    if len(row) != len(header):
        raise DataError(f"has {len(row)} fields but the header has {len(header)}", file=path, row=number)
    return row
