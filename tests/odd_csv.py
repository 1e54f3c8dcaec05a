"""Odd but valid, and broken, CSV files as real tools write them (synthetic tweets only).

``CLEAN_VARIANTS`` maps a name to a function returning the bytes of one train file that must
read as exactly ``expected_corpus()``; ``BROKEN_VARIANTS`` maps a name to (bytes, fragment of
the error message, row, column) for files that must be refused before any model trains.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import numpy as np

from embedensemble.labels import EMOTIONS

HEADER = ["ID", "Tweet", *EMOTIONS]
# Every emotion occurs at least once; texts hold the characters that trip CSV tools up:
# the delimiter candidates (, ; tab), quotes, a newline, emoji, cp1252-encodable é and a
# leading space (tweet text is kept verbatim: only headers, IDs and labels are stripped).
TWEETS = [
    ("2017-00001", 'So happy, really "delighted" today 😀', ["joy", "optimism"]),
    ("2017-00002", "line one\nline two at the café", ["sadness"]),
    ("2017-00003", "furious; livid; rage at the bus again", ["anger", "disgust"]),
    ("2017-00004", "countdown\tto the game soon", ["anticipation"]),
    ("2017-00005", " terrified and afraid of the dark", ["fear", "pessimism"]),
    ("2017-00006", "adore my darling sweetheart", ["love", "trust"]),
    ("2017-00007", "wow, shocked & unexpected", ["surprise"]),
    ("2017-00008", "just coffee at work", []),
    ("2017-00009", "'single quotes' and a trailing space ", ["joy"]),
]


def expected_corpus() -> tuple[list[str], list[str], np.ndarray]:
    labels = np.zeros((len(TWEETS), len(EMOTIONS)), dtype=np.int8)
    for i, (_, _, emotions) in enumerate(TWEETS):
        labels[i, [EMOTIONS.index(e) for e in emotions]] = 1
    return [t[0] for t in TWEETS], [t[1] for t in TWEETS], labels


def table(label_cell: Callable[[int], str] = str) -> list[list[str]]:
    ids, texts, labels = expected_corpus()
    return [HEADER] + [[i, t, *(label_cell(int(v)) for v in row)] for i, t, row in zip(ids, texts, labels)]


def to_csv(rows: list[list[str]], *, delimiter: str = ",", lineterminator: str = "\n", quoting: int = csv.QUOTE_MINIMAL) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator=lineterminator, quoting=quoting).writerows(rows)
    return buffer.getvalue()


def _pandas(label_dtype: type | None = None, **to_csv_kwargs) -> Callable[[], bytes]:
    def write() -> bytes:
        import pandas as pd

        ids, texts, labels = expected_corpus()
        frame = pd.DataFrame({"ID": ids, "Tweet": texts})
        for j, emotion in enumerate(EMOTIONS):
            frame[emotion] = labels[:, j]
        if label_dtype is not None:
            frame[list(EMOTIONS)] = frame[list(EMOTIONS)].astype(label_dtype)
        return frame.to_csv(**to_csv_kwargs).encode("utf-8")

    return write


def _reordered() -> bytes:
    order = [*EMOTIONS[::-1][:5], "Tweet", *EMOTIONS[::-1][5:], "ID"]
    rows = table()
    index = [rows[0].index(name) for name in order]
    return to_csv([[r[i] for i in index] for r in rows]).encode()


def _whitespace() -> bytes:
    rows = table(lambda v: f" {v} ")
    rows[0] = [f" {h}  " for h in rows[0]]
    for r in rows[1:]:
        r[0] = f"  {r[0]} "
    return to_csv(rows).encode()


def _excel_padding() -> bytes:
    rows = [r + ["", ""] for r in table()]
    rows += [[""] * len(rows[0])] * 3  # Excel exports formatted but empty rows as ;;;;
    return ("\ufeff" + to_csv(rows, delimiter=";", lineterminator="\r\n")).encode()


def _extra_columns() -> bytes:
    rows = table()
    rows[0] = ["Intensity", *rows[0], "notes"]
    for k, r in enumerate(rows[1:]):
        r[:] = [f"0.{k}", *r, "checked, twice"]
    return to_csv(rows).encode()


def _case() -> bytes:
    rows = table()
    rows[0] = ["id", "TWEET", *(e.capitalize() for e in EMOTIONS)]
    return to_csv(rows).encode()


CLEAN_VARIANTS: dict[str, Callable[[], bytes]] = {
    "plain": lambda: to_csv(table()).encode(),
    "excel_csv_utf8_bom_crlf": lambda: ("\ufeff" + to_csv(table(), lineterminator="\r\n")).encode(),
    "excel_quote_all": lambda: ("\ufeff" + to_csv(table(), lineterminator="\r\n", quoting=csv.QUOTE_ALL)).encode(),
    "excel_semicolon_locale": lambda: ("\ufeff" + to_csv(table(), delimiter=";", lineterminator="\r\n")).encode(),
    "excel_empty_rows_and_columns": _excel_padding,
    "excel_unicode_text_utf16_tab": lambda: to_csv(table(), delimiter="\t", lineterminator="\r\n").encode("utf-16"),
    "excel_boolean_labels": lambda: to_csv(table(lambda v: "TRUE" if v else "FALSE"), lineterminator="\r\n").encode(),
    "google_sheets_crlf_no_final_newline": lambda: to_csv(table(), lineterminator="\r\n").rstrip("\r\n").encode(),
    "pandas_index_column": _pandas(),
    "pandas_windows_crlf_no_index": _pandas(index=False, lineterminator="\r\n"),
    "pandas_float_labels": _pandas(index=False, label_dtype=float),
    "pandas_bool_labels": _pandas(index=False, label_dtype=bool),
    "pandas_quote_all": _pandas(index=False, quoting=csv.QUOTE_ALL),
    "columns_reordered": _reordered,
    "whitespace_around_headers_ids_labels": _whitespace,
    "header_case": _case,
    "extra_columns": _extra_columns,
    "old_mac_cr_line_endings": lambda: to_csv(table(), lineterminator="\r", quoting=csv.QUOTE_ALL).encode(),
    "blank_lines_between_rows": lambda: to_csv(table(), lineterminator="\n\n").encode(),
}


def _edit(row: int, column: str, value: str) -> bytes:
    rows = table()
    rows[row][rows[0].index(column)] = value
    return to_csv(rows).encode()


def _drop(column: str) -> bytes:
    rows = table()
    j = rows[0].index(column)
    return to_csv([r[:j] + r[j + 1 :] for r in rows]).encode()


def _text(text: str) -> bytes:
    return text.encode()


CLEAN_TEXT = to_csv(table())
# name -> (file bytes, message fragment, row (1-based, header excluded), column)
BROKEN_VARIANTS: dict[str, tuple[bytes, str, int | None, str | None]] = {
    "empty_file": (b"", "is empty", None, None),
    "bom_and_blank_lines_only": ("\ufeff\r\n\r\n".encode(), "is empty", None, None),
    "header_only": (to_csv(table()[:1]).encode(), "no data rows", None, None),
    "missing_id_column": (_drop("ID"), "missing required column", None, "ID"),
    "missing_tweet_column": (_drop("Tweet"), "missing required column", None, "Tweet"),
    "missing_label_column": (_drop("fear"), "missing label column", None, "fear"),
    "duplicate_label_column": (to_csv([r + [r[2]] for r in table()]).encode(), "appears twice", None, "anger"),
    "duplicate_id": (_edit(4, "ID", "2017-00002"), "duplicate ID", 4, "ID"),
    "empty_id": (_edit(3, "ID", "  "), "empty ID", 3, "ID"),
    "empty_tweet": (_edit(6, "Tweet", " "), "empty tweet", 6, "Tweet"),
    "label_two": (_edit(2, "joy", "2"), "must be 0 or 1", 2, "joy"),
    "label_half": (_edit(5, "trust", "0.5"), "must be 0 or 1", 5, "trust"),
    "label_yes": (_edit(1, "anger", "yes"), "must be 0 or 1", 1, "anger"),
    "label_empty": (_edit(7, "sadness", ""), "empty label", 7, "sadness"),
    "label_nan": (_edit(7, "love", "NaN"), "must be 0 or 1", 7, "love"),
    "short_row": (_text(CLEAN_TEXT.replace("just coffee at work,0,0,0", "just coffee at work,0,0")), "fields", 8, None),
    "unterminated_quote": (_text(CLEAN_TEXT.replace("adore my darling", '"adore my darling')), "unterminated or stray quote", 6, "Tweet"),
    "stray_quote_after_field": (_text(CLEAN_TEXT.replace('"wow, shocked & unexpected"', '"wow, shocked" & unexpected')), "stray quote", 7, "Tweet"),
    "unterminated_quote_in_last_row": (_text(CLEAN_TEXT.replace("'single quotes'", "\"'single quotes'")), "unterminated or stray quote", 9, "Tweet"),
    "nul_byte": (_text(CLEAN_TEXT.replace("wow,", "wow\x00,")), "NUL", 7, "Tweet"),
    "windows_cp1252": (CLEAN_TEXT.replace("😀", "").encode("cp1252"), "not valid UTF-8", 2, None),
    "semicolons_without_id": (_text(to_csv([["Key", *HEADER[1:]], *table()[1:]], delimiter=";")), "missing required column", None, "ID"),
}
