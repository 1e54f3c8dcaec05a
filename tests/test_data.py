import numpy as np
import pytest

from embedensemble.data import (
    MAX_TWEET_CHARS,
    check_ids_match,
    load_dataset,
    read_corpus,
    validate_texts,
    write_submission,
)
from embedensemble.errors import DataError
from embedensemble.labels import EMOTIONS

from .synthetic import write_kaggle, write_semeval

HEADER = "ID,Tweet," + ",".join(EMOTIONS)
ZEROS = ",".join(["0"] * 11)


def write(tmp_path, text, name="train.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_reads_kaggle_folder(tmp_path):
    splits = load_dataset(write_kaggle(tmp_path / "k"))
    assert splits.kind == "kaggle"
    assert len(splits.train) == 120 and splits.train.labels.shape == (120, 11)
    assert splits.test is not None and splits.test.labels is None and len(splits.test) == 40
    assert splits.eval is None


def test_reads_semeval_folder_with_dev_as_eval(tmp_path):
    splits = load_dataset(write_semeval(tmp_path / "s"))
    assert splits.kind == "semeval"
    assert (len(splits.train), len(splits.eval), len(splits.test)) == (120, 40, 30)
    assert splits.eval.labels is not None and splits.test.labels is None


def test_semeval_tsv_keeps_quotes_in_tweets(tmp_path):
    header = "\t".join(["ID", "Tweet", *EMOTIONS])
    path = write(tmp_path, f'{header}\n1\t"quoted" start and "end\t{chr(9).join(["1"] + ["0"] * 10)}\n', "2018-E-c-En-train.txt")
    corpus = read_corpus(path)
    assert corpus.texts == ['"quoted" start and "end']
    assert corpus.labels[0, 0] == 1


def test_bom_and_quoted_newlines_and_emoji(tmp_path):
    path = write(tmp_path, "\ufeff" + HEADER + f'\n1,"line one\nline two 😀",{ZEROS}\n2,ünïcödé ✨,{ZEROS}\n')
    corpus = read_corpus(path)
    assert corpus.ids == ["1", "2"]
    assert corpus.texts[0] == "line one\nline two 😀"


def test_test_file_without_label_columns(tmp_path):
    corpus = read_corpus(write(tmp_path, "ID,Tweet\n1,hello there\n", "test.csv"))
    assert corpus.labels is None


@pytest.mark.parametrize(
    "content, fragment, row, column",
    [
        ("ID,Text," + ",".join(EMOTIONS) + f"\n1,hi,{ZEROS}\n", "missing required column", None, "Tweet"),
        ("ID,Tweet," + ",".join(EMOTIONS[:-1]) + ",trusts\n1,hi," + ZEROS + "\n", "did you mean", None, "trust"),
        (HEADER + "\n1,hi,2," + ",".join(["0"] * 10) + "\n", "must be 0 or 1", 1, "anger"),
        (HEADER + "\n1,hi," + ZEROS + "\n2,yo,0,0,0,0,0,0,0,0,0,0,x\n", "must be 0 or 1", 2, "trust"),
        (HEADER + "\n1,   ," + ZEROS + "\n", "empty tweet", 1, "Tweet"),
        (HEADER + "\n1,hi," + ZEROS + "\n1,yo," + ZEROS + "\n", "duplicate ID", 2, "ID"),
        (HEADER + "\n,hi," + ZEROS + "\n", "empty ID", 1, "ID"),
        (HEADER + "\n1,hi,0,0\n", "fields", 1, None),
        (HEADER + "\n", "no data rows", None, None),
        ("", "empty", None, None),
    ],
)
def test_bad_files_name_file_row_and_column(tmp_path, content, fragment, row, column):
    path = write(tmp_path, content)
    with pytest.raises(DataError) as info:
        read_corpus(path, require_labels=True)
    message = str(info.value)
    assert fragment in message and str(path) in message
    assert info.value.row == row
    if column:
        assert info.value.column == column and f"'{column}'" in message


def test_non_utf8_names_line(tmp_path):
    path = write(tmp_path, (HEADER + "\n1,caf\xe9," + ZEROS + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"not valid UTF-8.*line 2"):
        read_corpus(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(tmp_path / "nope.csv")


def test_long_tweet_truncated_with_warning(tmp_path, caplog):
    path = write(tmp_path, HEADER + f"\n1,{'a' * 100_000}," + ZEROS + "\n")
    corpus = read_corpus(path)
    assert len(corpus.texts[0]) == MAX_TWEET_CHARS
    assert "truncated" in caplog.text


def test_test_ids_must_match_sample_submission(tmp_path):
    folder = write_kaggle(tmp_path / "k")
    lines = (folder / "sample_submission.csv").read_text().splitlines()
    lines[3], lines[4] = lines[4], lines[3]
    (folder / "sample_submission.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="does not match") as info:
        load_dataset(folder)
    assert info.value.row == 3 and info.value.column == "ID"


def test_check_ids_counts(tmp_path):
    folder = write_kaggle(tmp_path / "k")
    test = read_corpus(folder / "test.csv")
    test.ids.pop()
    with pytest.raises(DataError, match="has 40 rows"):
        check_ids_match(test, folder / "sample_submission.csv")


def test_data_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="holds neither"):
        load_dataset(tmp_path)


def test_submission_format_matches_sample(tmp_path):
    folder = write_kaggle(tmp_path / "k")
    test = read_corpus(folder / "test.csv")
    preds = np.random.default_rng(0).integers(0, 2, (len(test), 11))
    out = write_submission(tmp_path / "submission.csv", test.ids, preds)
    lines = out.read_text().splitlines()
    assert lines[0] == (folder / "sample_submission.csv").read_text().splitlines()[0]
    assert [line.split(",")[0] for line in lines[1:]] == test.ids
    assert lines[1].split(",")[1:] == [str(v) for v in preds[0]]


def test_validate_texts():
    assert validate_texts(["a", "b"]) == ["a", "b"]
    assert validate_texts([]) == []
    assert validate_texts("hello") == ["hello"]  # one string is one text (issue 14), not 5 characters
    assert validate_texts(np.array(["x", "y"])) == ["x", "y"]
    with pytest.raises(DataError, match="empty tweet"):
        validate_texts(" ")
    with pytest.raises(DataError, match="got int"):
        validate_texts(3)
    with pytest.raises(DataError, match="row 1.*empty tweet"):
        validate_texts(["ok", " "])
    with pytest.raises(DataError, match="row 0.*must be a string"):
        validate_texts([3])
    with pytest.raises(DataError, match="missing tweet"):
        validate_texts([float("nan")])


def test_download_extracts_and_checks_a_release_zip(tmp_path):
    import zipfile

    from embedensemble.download import download_semeval

    src = write_semeval(tmp_path / "src", n_train=12, n_dev=5, n_test=4)
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"SemEval2018-Task1-all-data/English/E-c/{f.name}")
    rows = {"train": 12, "eval": 5, "test": 4}
    folder = download_semeval(tmp_path / "cache", archive.as_uri(), expected_rows=rows)
    assert load_dataset(folder).kind == "semeval"
    with pytest.raises(DataError, match="expected 13 tweets"):
        download_semeval(tmp_path / "cache", archive.as_uri(), expected_rows={**rows, "train": 13})


# ------------------------------------------------------------ train/eval overlap (issue 10, item 4)


def _edit_tsv(path, edits):
    """Replace the tweet of data row i (0-based) with edits[i](train_text) in a SemEval TSV file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, text in edits.items():
        cells = lines[i + 1].split("\t")
        cells[1] = text
        lines[i + 1] = "\t".join(cells)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_eval_rows_that_are_train_tweets_are_excluded(tmp_path, caplog):
    folder = write_semeval(tmp_path / "s")
    train = read_corpus(folder / "2018-E-c-En-train.txt")
    t = train.texts
    _edit_tsv(folder / "2018-E-c-En-train.txt", {3: f"hi @alice {t[3]}", 4: f"{t[4]} https://t.co/abc"})
    _edit_tsv(
        folder / "2018-E-c-En-dev.txt",
        {
            0: t[0],  # the same tweet under another ID
            1: t[1].upper(),
            2: f"  {t[2].replace(' ', '   ')}\t ".replace("\t", " "),
            3: f"HI @bob {t[3]}",
            4: f"{t[4]} http://t.co/xyz",
            5: f"{t[5]} really",  # a different tweet: kept
        },
    )
    dev_before = read_corpus(folder / "2018-E-c-En-dev.txt")
    with caplog.at_level("WARNING", logger="embedensemble"):
        splits = load_dataset(folder)
    assert len(splits.eval) == 35 and splits.eval.ids == dev_before.ids[5:]
    assert splits.eval.labels.shape == (35, 11)
    np.testing.assert_array_equal(splits.eval.labels, dev_before.labels[5:])
    overlap = splits.overlap["eval"]
    assert (overlap["excluded_rows"], overlap["eval_rows_before"], overlap["eval_rows_after"]) == (5, 40, 35)
    assert "casefold" in overlap["rule"]
    assert "5 of 40 evaluation tweets" in caplog.text and "excluded" in caplog.text
    assert splits.overlap["test"]["overlapping_rows"] == 0
    kept = load_dataset(folder, exclude_eval_overlap=False)
    assert len(kept.eval) == 40 and kept.overlap["eval"]["excluded_rows"] == 0 and kept.overlap["eval"]["overlapping_rows"] == 5


def test_test_rows_that_are_train_tweets_are_kept_with_a_warning(tmp_path, caplog):
    folder = write_kaggle(tmp_path / "k")
    train = read_corpus(folder / "train.csv")
    lines = (folder / "test.csv").read_text().splitlines()
    for k in (1, 2, 3):
        cells = lines[k].split(",")
        cells[1] = train.texts[k].title()
        lines[k] = ",".join(cells)
    (folder / "test.csv").write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING", logger="embedensemble"):
        splits = load_dataset(folder)
    assert len(splits.test) == 40  # a submission needs every test id
    assert splits.overlap["test"] == {"overlapping_rows": 3, "test_rows": 40, "excluded_rows": 0, "rule": splits.overlap["test"]["rule"]}
    assert "3 of 40 test tweets" in caplog.text
    assert "eval" not in splits.overlap


def test_eval_file_made_only_of_train_tweets_leaves_no_eval(tmp_path):
    folder = write_kaggle(tmp_path / "k")
    eval_path = tmp_path / "dev.csv"
    rows = (folder / "train.csv").read_text().splitlines()
    eval_path.write_text("\n".join(r.replace("2017-", "dev-", 1) for r in rows[:21]) + "\n")
    splits = load_dataset(folder, eval_path=eval_path)
    assert splits.eval is None
    assert splits.overlap["eval"]["excluded_rows"] == 20 and splits.overlap["eval"]["eval_rows_after"] == 0


def test_fit_records_eval_overlap_in_run_info(tmp_path):
    import json

    from embedensemble import fit
    from embedensemble._cli import run_cli

    from . import simple_member  # noqa: F401  (registers the tiny "test-bow" member)

    folder = write_semeval(tmp_path / "s", n_train=60, n_dev=12, n_test=6)
    train = read_corpus(folder / "2018-E-c-En-train.txt")
    _edit_tsv(folder / "2018-E-c-En-dev.txt", {0: train.texts[0], 1: train.texts[1]})
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"name": "t", "members": [{"name": "bow", "kind": "test-bow", "features": "w"}], "cv": {"n_folds": 2}}))
    assert run_cli(fit.main, ["--config", str(config), "--data", str(folder), "--run", str(tmp_path / "run"), "-q"]) == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["eval_overlap"]["excluded_rows"] == 2 and info["eval_overlap"]["eval_rows_before"] == 12
    assert info["n_eval"] == 10
    assert np.load(tmp_path / "run" / "eval_labels.npy").shape == (10, 11)


def test_predict_accepts_one_string(tmp_path):
    """Issue 14: ``predict("one tweet")`` is one row, equal to ``predict(["one tweet"])``."""
    from embedensemble import EnsembleConfig
    from embedensemble.config import CVConfig, MemberConfig
    from embedensemble.fitting import fit_members
    from embedensemble.stacking import stack_run

    from . import simple_member  # noqa: F401

    splits = load_dataset(write_kaggle(tmp_path / "k", n_test=5))
    config = EnsembleConfig(name="t", members=[MemberConfig(name="bow", kind="test-bow", features="w")], cv=CVConfig(n_folds=2))
    ensemble = stack_run(fit_members(config, splits.train, tmp_path / "run"), write_report=False)
    one = ensemble.predict_proba("so happy and cheerful today")
    assert one.shape == (1, 11)
    np.testing.assert_array_equal(one.to_numpy(), ensemble.predict_proba(["so happy and cheerful today"]).to_numpy())
    assert ensemble.predict("furious and livid").shape == (1, 11)
