"""CSV files as Excel, Google Sheets, pandas and Windows editors write them (issue 10, item 7).

Every clean variant must read as the identical Corpus; every broken one must be refused by
``read_corpus`` with file, row and column named, and by ``python -m embedensemble.fit`` with
exit code 2, one ``error:`` line and no traceback, before a run folder exists.
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from embedensemble import fit
from embedensemble._cli import run_cli
from embedensemble.data import load_dataset, read_corpus
from embedensemble.errors import DataError
from embedensemble.labels import EMOTIONS

from .odd_csv import BROKEN_VARIANTS, CLEAN_TEXT, CLEAN_VARIANTS, expected_corpus, table, to_csv

TINY_CONFIG = {"name": "tiny", "members": [{"name": "tfidf-logreg", "features": "tfidf", "head": "logreg"}], "cv": {"n_folds": 2}}


def write_train(folder, content: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_bytes(content)
    return folder / "train.csv"


@pytest.mark.parametrize("name", sorted(CLEAN_VARIANTS))
def test_clean_variant_reads_identically(tmp_path, name, caplog):
    path = write_train(tmp_path, CLEAN_VARIANTS[name]())
    with caplog.at_level(logging.WARNING):
        corpus = read_corpus(path, require_labels=True)
    ids, texts, labels = expected_corpus()
    assert corpus.ids == ids
    assert corpus.texts == texts
    assert corpus.labels.dtype == labels.dtype
    np.testing.assert_array_equal(corpus.labels, labels)
    assert "never" not in caplog.text  # every emotion occurs in the fixture


@pytest.mark.parametrize("name", sorted(CLEAN_VARIANTS))
def test_clean_variant_as_test_file_reads_texts(tmp_path, name):
    """The same files as an unlabelled test file (labels ignored) give the same IDs and texts."""
    path = write_train(tmp_path, CLEAN_VARIANTS[name]())
    corpus = read_corpus(path, require_labels=False)
    ids, texts, _ = expected_corpus()
    assert (corpus.ids, corpus.texts, corpus.labels) == (ids, texts, None)


@pytest.mark.parametrize("name", sorted(BROKEN_VARIANTS))
def test_broken_variant_names_file_row_column(tmp_path, name):
    content, fragment, row, column = BROKEN_VARIANTS[name]
    path = write_train(tmp_path, content)
    with pytest.raises(DataError) as info:
        read_corpus(path, require_labels=True)
    message = str(info.value)
    assert fragment in message.replace(str(path), "") and str(path) in message
    assert info.value.row == row
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert info.value.column == column and f"'{column}'" in message


@pytest.mark.parametrize("name", sorted(BROKEN_VARIANTS))
def test_fit_cli_refuses_broken_train_file_before_training(tmp_path, name, capsys):
    content, fragment, _, _ = BROKEN_VARIANTS[name]
    data = tmp_path / "data"
    write_train(data, content)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    run = tmp_path / "run"
    rc = run_cli(fit.main, ["--config", str(config), "--data", str(data), "--run", str(run), "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and fragment in err.replace(str(data), "") and "train.csv" in err
    assert "Traceback" not in err
    assert not run.exists()  # refused before anything was written or trained


def test_fit_subprocess_exit_code_2_and_no_traceback(tmp_path):
    """A real process: Windows cp1252 train file, then a broken --eval file."""
    data = tmp_path / "data"
    write_train(data, BROKEN_VARIANTS["windows_cp1252"][0])
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    base = [sys.executable, "-m", "embedensemble.fit", "--config", str(config), "--run", str(tmp_path / "run"), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*base, "--data", str(data)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    assert "not valid UTF-8" in result.stderr and "row 2" in result.stderr and "line 4" in result.stderr
    assert "Traceback" not in result.stderr

    write_train(data, CLEAN_TEXT.encode())
    bad_eval = tmp_path / "dev.csv"
    bad_eval.write_bytes(BROKEN_VARIANTS["label_two"][0])
    result = subprocess.run([*base, "--data", str(data), "--eval", str(bad_eval)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    assert "dev.csv" in result.stderr and "row 2" in result.stderr and "'joy'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_label_that_never_occurs_is_named_in_a_warning(tmp_path, caplog):
    rows = table()
    column = rows[0].index("surprise")
    for r in rows[1:]:
        r[column] = "0"
    path = write_train(tmp_path, to_csv(rows).encode())
    with caplog.at_level(logging.WARNING, logger="embedensemble"):
        corpus = read_corpus(path, require_labels=True)
    assert corpus.labels[:, EMOTIONS.index("surprise")].sum() == 0  # still read: a warning, not an error
    assert "'surprise'" in caplog.text and "never" in caplog.text and str(path) in caplog.text


def test_unicode_line_separators_inside_unquoted_tweets(tmp_path):
    """U+2028, form feed and NEL are not CSV line breaks (str.splitlines treats them as such)."""
    odd = ["one\u2028two", "page\x0cbreak", "next\x85line", "group\x1dsep"]
    rows = table()
    for r, text in zip(rows[1:], odd):
        r[1] = text
    path = write_train(tmp_path, to_csv(rows).encode())
    corpus = read_corpus(path, require_labels=True)
    assert corpus.texts[: len(odd)] == odd and len(corpus) == len(rows) - 1


def test_same_rules_for_test_and_sample_submission(tmp_path):
    """Excel-saved test.csv and sample_submission.csv (BOM, CRLF, ;) load with the train file."""
    ids, _, _ = expected_corpus()
    data = tmp_path / "data"
    write_train(data, CLEAN_VARIANTS["plain"]())
    test_rows = [["ID", "Tweet"], *[[f"t-{i}", f"a new tweet number {i}"] for i in range(4)]]
    sample = [["ID", *EMOTIONS], *[[f"t-{i}", *["0"] * 11] for i in range(4)]]
    (data / "test.csv").write_bytes(("\ufeff" + to_csv(test_rows, delimiter=";", lineterminator="\r\n")).encode())
    (data / "sample_submission.csv").write_bytes(("\ufeff" + to_csv(sample, lineterminator="\r\n")).encode())
    splits = load_dataset(data)
    assert splits.test.ids == [f"t-{i}" for i in range(4)] and splits.train.ids == ids
