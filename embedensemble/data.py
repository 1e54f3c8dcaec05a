"""Reading tweets and labels (Kaggle CSV or SemEval-2018 E-c TSV) and writing submissions.

Every problem in a file becomes a :class:`~embedensemble.errors.DataError` that names the
file, the row (1-based, header excluded) and the column.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._logging import get_logger
from .delimited import read_table
from .errors import DataError
from .fileio import atomic_write_text
from .labels import EMOTIONS, N_LABELS

logger = get_logger(__name__)

MAX_TWEET_CHARS = 2_000  # tweets are <= 280 chars; longer texts are truncated with a warning
DATA_ENV = "EMBEDENSEMBLE_DATA"
ID_COLUMN, TEXT_COLUMN = "ID", "Tweet"


@dataclass
class Corpus:
    """Tweets with their IDs and, when known, 0/1 labels [n, 11] in ``EMOTIONS`` order."""

    ids: list[str]
    texts: list[str]
    labels: np.ndarray | None = None
    source: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: Sequence[int] | np.ndarray) -> Corpus:
        rows = np.asarray(rows, dtype=int)
        labels = None if self.labels is None else self.labels[rows]
        return Corpus([self.ids[i] for i in rows], [self.texts[i] for i in rows], labels, self.source)


@dataclass
class DatasetSplits:
    """What a data folder holds: a labelled train split, and optionally test and evaluation splits."""

    train: Corpus
    test: Corpus | None = None
    eval: Corpus | None = None
    sample_submission: Path | None = None
    kind: str = "kaggle"
    files: dict[str, str] = field(default_factory=dict)
    # Rows of eval/test whose text is a train text (see ``overlap_mask``), per split:
    # {"eval": {"excluded_rows", "eval_rows_before", "eval_rows_after", "rule"}, "test": {...}}.
    overlap: dict[str, dict] = field(default_factory=dict)


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    table = read_table(path)
    return table.header, table.rows


def _columns(header: list[str], path: Path) -> dict[str, int]:
    """Where each known column is: exact name first, else the one name that matches ignoring case."""
    found = {}
    for name in (ID_COLUMN, TEXT_COLUMN, *EMOTIONS):
        matches = [j for j, h in enumerate(header) if h == name] or [j for j, h in enumerate(header) if h.casefold() == name.casefold()]
        if len(matches) > 1:
            raise DataError(f"column {name!r} appears twice (columns {matches[0] + 1} and {matches[1] + 1})", file=path, column=name)
        if matches:
            found[name] = matches[0]
    return found


def read_corpus(path: str | os.PathLike, *, require_labels: bool | None = None) -> Corpus:
    """Read a Kaggle CSV or SemEval TSV file (as Excel, Sheets or pandas save it: see ``delimited``).

    Labels are read when the file has all 11 emotion columns and they are not ``NONE``.
    ``require_labels=True`` makes missing labels an error; ``False`` ignores them.
    Headers, IDs and label cells are stripped of surrounding whitespace; tweet text is kept verbatim.
    """
    path = Path(path)
    header, rows = _rows(path)
    columns = _columns(header, path)
    missing = [c for c in (ID_COLUMN, TEXT_COLUMN) if c not in columns]
    if missing:
        hint = _close_match_hint(missing, header)
        raise DataError(f"missing required column(s) {missing}; header is {header}{hint}", file=path, column=missing[0])
    if not rows:
        raise DataError("has a header but no data rows", file=path)
    present = [e for e in EMOTIONS if e in columns]
    absent = [e for e in EMOTIONS if e not in columns]
    if require_labels and absent:
        raise DataError(f"missing label column(s) {absent}{_close_match_hint(absent, header)}", file=path, column=absent[0])
    if present and absent and require_labels is not False:
        raise DataError(f"has some emotion columns but not {absent}", file=path, column=absent[0])
    id_col, text_col = columns[ID_COLUMN], columns[TEXT_COLUMN]
    label_cols = [columns[e] for e in EMOTIONS] if not absent and require_labels is not False else []
    ids, texts, labels = [], [], []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        tweet_id, text = row[id_col].strip(), row[text_col]
        if not tweet_id:
            raise DataError("empty ID", file=path, row=number, column=ID_COLUMN)
        if tweet_id in seen:
            raise DataError(f"duplicate ID {tweet_id!r} (first seen at row {seen[tweet_id]})", file=path, row=number, column=ID_COLUMN)
        seen[tweet_id] = number
        texts.append(_clean_text(text, file=path, row=number))
        ids.append(tweet_id)
        if label_cols:
            labels.append([row[c] for c in label_cols])
    label_array = _parse_labels(labels, path) if label_cols else None
    if require_labels and label_array is None:
        raise DataError("has no labels (NONE) but labels are required", file=path, column=EMOTIONS[0])
    if label_array is not None:
        _warn_absent_labels(label_array, path)
    return Corpus(ids, texts, label_array, str(path))


def _clean_text(text: str | None, *, file: Path | str | None, row: int, column: str = TEXT_COLUMN) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        raise DataError("missing tweet", file=file, row=row, column=column)
    if not isinstance(text, str):
        raise DataError(f"tweet must be a string, got {type(text).__name__}", file=file, row=row, column=column)
    if not text.strip():
        raise DataError("empty tweet", file=file, row=row, column=column)
    if len(text) > MAX_TWEET_CHARS:
        where = f"{file} row {row}" if file else f"text {row}"
        logger.warning("%s: tweet of %d characters truncated to %d", where, len(text), MAX_TWEET_CHARS)
        text = text[:MAX_TWEET_CHARS]
    return text


# Label cells: 0/1 as written by hand or csv, 0.0/1.0 as pandas writes a float column (one
# with a missing value once), TRUE/FALSE as Excel/Sheets and pandas write booleans. Anything
# else (2, 0.5, yes, NaN, an empty cell) is an error: guessing would silently change labels.
_LABEL_NUMBER = re.compile(r"[01](?:\.0*)?")
_LABEL_WORDS = {"true": 1, "false": 0}


def _parse_labels(cells: list[list[str]], path: Path) -> np.ndarray | None:
    flat = {c.strip() for row in cells for c in row}
    if flat == {"NONE"} or flat == {""}:
        return None  # an unlabelled test file
    out = np.zeros((len(cells), N_LABELS), dtype=np.int8)
    for number, row in enumerate(cells, start=1):
        for j, cell in enumerate(row):
            value = cell.strip()
            if _LABEL_NUMBER.fullmatch(value):
                out[number - 1, j] = value[0] == "1"
            elif value.casefold() in _LABEL_WORDS:
                out[number - 1, j] = _LABEL_WORDS[value.casefold()]
            elif not value:
                raise DataError("empty label cell (expected 0 or 1)", file=path, row=number, column=EMOTIONS[j])
            else:
                raise DataError(f"label must be 0 or 1 (also read: 0.0/1.0, TRUE/FALSE), got {value!r}", file=path, row=number, column=EMOTIONS[j])
    return out


def _warn_absent_labels(labels: np.ndarray, path: Path) -> None:
    never = [e for e, count in zip(EMOTIONS, labels.sum(axis=0)) if count == 0]
    if never:
        logger.warning(
            "%s: emotion(s) %s never occur in its %d rows; models can only predict their prior, and F1 for them is 0 or undefined",
            path, ", ".join(map(repr, never)), len(labels),
        )


def _close_match_hint(missing: list[str], header: list[str]) -> str:
    import difflib

    hints = []
    for name in missing:
        match = difflib.get_close_matches(name, header, n=1, cutoff=0.6) or [
            h for h in header if h.lower() == name.lower()
        ]
        if match:
            hints.append(f"{match[0]!r} -> {name!r}")
    return f" (did you mean: {', '.join(hints)}?)" if hints else ""


def validate_texts(texts: object) -> list[str]:
    """Check in-memory input for ``predict``: one string (one row, as SetFit accepts) or a list of non-empty strings."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    try:
        items = list(texts)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(f"expected a list of texts, got {type(texts).__name__}") from None
    return [_clean_text(t, file=None, row=i, column="text") for i, t in enumerate(items)]


# ---------------------------------------------------------------- data folders

KAGGLE_FILES = {"train": "train.csv", "test": "test.csv", "sample_submission": "sample_submission.csv"}
SEMEVAL_FILES = {"train": "2018-E-c-En-train.txt", "eval": "2018-E-c-En-dev.txt", "test": "2018-E-c-En-test.txt"}


def default_data_dir() -> Path:
    """``$EMBEDENSEMBLE_DATA`` or ``../shared/data/kaggle-emotion`` (this project's shared layout)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path("../shared/data/kaggle-emotion")


def load_dataset(
    data_dir: str | os.PathLike | None = None, *, eval_path: str | os.PathLike | None = None, exclude_eval_overlap: bool = True
) -> DatasetSplits:
    """Read a data folder holding either the Kaggle files or the SemEval-2018 E-c files.

    Evaluation rows whose text is also a training text (``overlap_mask``: the Kaggle train file
    holds every SemEval dev tweet under other IDs) are dropped from ``eval`` with a warning,
    unless ``exclude_eval_overlap=False``; overlapping test rows are only counted and warned
    about, since a submission needs every test ID. Counts are in ``DatasetSplits.overlap``.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if not data_dir.is_dir():
        raise DataError(f"data folder does not exist (set --data or ${DATA_ENV})", file=data_dir)
    if (data_dir / KAGGLE_FILES["train"]).is_file():
        kind, names = "kaggle", KAGGLE_FILES
    elif (data_dir / SEMEVAL_FILES["train"]).is_file():
        kind, names = "semeval", SEMEVAL_FILES
    else:
        raise DataError(
            f"holds neither {KAGGLE_FILES['train']} (Kaggle format) nor {SEMEVAL_FILES['train']} (SemEval-2018 E-c)",
            file=data_dir,
        )
    files = {split: data_dir / name for split, name in names.items() if (data_dir / name).is_file()}
    train = read_corpus(files["train"], require_labels=True)
    test = read_corpus(files["test"], require_labels=False) if "test" in files else None
    evaluation = read_corpus(eval_path or files["eval"], require_labels=True) if (eval_path or "eval" in files) else None
    sample = files.get("sample_submission")
    if test is not None and sample is not None:
        check_ids_match(test, sample)
    _check_disjoint(train, test, "test")
    overlap = {}
    if test is not None:
        overlap["test"] = _test_overlap(train, test)
    if evaluation is not None:
        evaluation, overlap["eval"] = _exclude_eval_overlap(train, evaluation, exclude_eval_overlap)
    return DatasetSplits(train, test, evaluation, sample, kind, {k: str(v) for k, v in files.items()}, overlap)


# ------------------------------------------------------- train/eval overlap

OVERLAP_RULE = (
    "same text as a train row after Unicode NFKC, casefolding, @mentions -> @user, URLs -> http "
    "and collapsing whitespace (IDs are not compared)"
)
_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)


def normalise_for_overlap(text: str) -> str:
    """The form under which two tweets count as the same (retweets/re-posts differ in these details only)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _MENTION.sub("@user", _URL.sub("http", text))
    return " ".join(text.split())


def overlap_mask(train: Corpus, other: Corpus) -> np.ndarray:
    """Bool [len(other)]: rows of ``other`` whose normalised text is a normalised train text."""
    seen = {normalise_for_overlap(t) for t in train.texts}
    return np.array([normalise_for_overlap(t) in seen for t in other.texts], dtype=bool)


def _test_overlap(train: Corpus, test: Corpus) -> dict:
    n = int(overlap_mask(train, test).sum())
    if n:
        logger.warning(
            "%d of %d test tweets (%s) are also train tweets (%s); they are kept, since a submission needs every test ID, "
            "but predictions for them are not predictions on unseen tweets", n, len(test), test.source, OVERLAP_RULE,
        )
    return {"overlapping_rows": n, "test_rows": len(test), "excluded_rows": 0, "rule": OVERLAP_RULE}


def _exclude_eval_overlap(train: Corpus, evaluation: Corpus, exclude: bool) -> tuple[Corpus | None, dict]:
    mask = overlap_mask(train, evaluation)
    n = int(mask.sum())
    info = {"excluded_rows": n if exclude else 0, "overlapping_rows": n, "eval_rows_before": len(evaluation), "rule": OVERLAP_RULE}
    if n and exclude:
        logger.warning(
            "%d of %d evaluation tweets (%s) are also train tweets (%s); they are excluded from the evaluation score",
            n, len(evaluation), evaluation.source, OVERLAP_RULE,
        )
        evaluation = evaluation.subset(np.flatnonzero(~mask))
    elif n:
        logger.warning("%d of %d evaluation tweets (%s) are also train tweets; kept (exclude_eval_overlap=False)", n, len(evaluation), evaluation.source)
    info["eval_rows_after"] = len(evaluation)
    if not len(evaluation):
        logger.warning("every evaluation tweet of %s is a train tweet: there is no evaluation split left", evaluation.source)
        return None, info
    return evaluation, info


def _check_disjoint(train: Corpus, other: Corpus | None, name: str) -> None:
    if other is None:
        return
    overlap = set(train.ids) & set(other.ids)
    if overlap:
        first = min(overlap)
        raise DataError(f"{len(overlap)} ID(s) of the {name} file also appear in the train file, e.g. {first!r}", file=other.source)


def check_ids_match(test: Corpus, sample_submission: str | os.PathLike) -> None:
    """The test file's IDs must be the sample submission's IDs, in the same order."""
    header, rows = _rows(Path(sample_submission))
    if ID_COLUMN not in header:
        raise DataError(f"missing column {ID_COLUMN!r}", file=sample_submission, column=ID_COLUMN)
    sample_ids = [r[header.index(ID_COLUMN)].strip() for r in rows]
    if sample_ids == test.ids:
        return
    if len(sample_ids) != len(test.ids):
        raise DataError(f"has {len(sample_ids)} rows but test file {test.source} has {len(test.ids)}", file=sample_submission)
    row = next(i for i, (a, b) in enumerate(zip(sample_ids, test.ids)) if a != b) + 1
    raise DataError(
        f"ID {sample_ids[row - 1]!r} does not match test file {test.source} ID {test.ids[row - 1]!r}",
        file=sample_submission,
        row=row,
        column=ID_COLUMN,
    )


def write_submission(path: str | os.PathLike, ids: Sequence[str], predictions: np.ndarray) -> Path:
    """Write ``ID,<11 emotions>`` with integer 0/1 values, in the given (test) order, atomically."""
    predictions = np.asarray(predictions)
    if predictions.shape != (len(ids), N_LABELS):
        raise ValueError(f"predictions must have shape ({len(ids)}, {N_LABELS}), got {predictions.shape}")
    lines = [",".join((ID_COLUMN, *EMOTIONS))]
    for tweet_id, row in zip(ids, predictions.astype(int)):
        lines.append(",".join([tweet_id, *map(str, row.tolist())]))
    return atomic_write_text(path, "\n".join(lines) + "\n")
