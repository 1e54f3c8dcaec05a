"""``python -m embedensemble.predict`` and the streaming readers/writers of ``embedensemble.text_io``.

One tiny TF-IDF ensemble (tests/tiny_ensemble.py) is shared by the session; most tests call the
CLI's ``main`` in-process, two run it as a subprocess (stdin piping, exit code without traceback).
"""

import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest

from embedensemble import EMOTIONS, EmotionEnsemble
from embedensemble import predict as predict_cli
from embedensemble._cli import run_cli
from embedensemble.errors import DataError
from embedensemble.text_io import PredictionWriter, iter_text_chunks

from .synthetic import make_tweets
from .tiny_ensemble import shared_tiny_ensemble

TEXTS, _ = make_tweets(40, seed=7)
IDS = [f"id-{i:03d}" for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    return shared_tiny_ensemble(tmp_path_factory)


@pytest.fixture(scope="module")
def expected(ensemble_dir):
    ensemble = EmotionEnsemble.load(ensemble_dir, use_cache=False)
    return ensemble.predict_proba(TEXTS).to_numpy(), ensemble.predict(TEXTS).to_numpy()


def write_csv(path, texts=TEXTS, ids=IDS, text_column="Tweet"):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ID", text_column, "extra"])
        for i, t in zip(ids, texts):
            w.writerow([i, t, "x"])
    return path


def run(*argv):
    return run_cli(predict_cli.main, [str(a) for a in argv])


def test_csv_in_probabilities_out_match_the_library(ensemble_dir, expected, tmp_path):
    out = tmp_path / "scores.csv"
    assert run("--ensemble", ensemble_dir, "--input", write_csv(tmp_path / "in.csv"), "--output", out, "--proba", "--chunk-size", 16) == 0
    frame = pd.read_csv(out, dtype={"ID": str})
    assert list(frame.columns) == ["ID", *EMOTIONS]
    assert frame["ID"].tolist() == IDS
    np.testing.assert_allclose(frame[list(EMOTIONS)].to_numpy(), expected[0], atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_jsonl_in_decisions_out_in_small_chunks(ensemble_dir, expected, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "n": k}) + "\n" + ("\n" if k == 3 else "") for k, t in enumerate(TEXTS)))
    out = tmp_path / "out.jsonl"
    assert run("--ensemble", ensemble_dir, "--input", src, "--output", out, "--text-column", "text", "--chunk-size", 7) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(TEXTS) and set(records[0]) == set(EMOTIONS)  # no ID column in, none out
    np.testing.assert_array_equal([[r[e] for e in EMOTIONS] for r in records], expected[1])


def test_parquet_in_and_out_with_named_columns(ensemble_dir, expected, tmp_path):
    pytest.importorskip("pyarrow")
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pd.DataFrame({"tweet_id": IDS, "body": TEXTS}).to_parquet(src)
    argv = ["--ensemble", ensemble_dir, "--input", src, "--output", out, "--text-column", "body", "--id-column", "tweet_id", "--proba"]
    assert run(*argv) == 0
    frame = pd.read_parquet(out)
    assert frame["tweet_id"].tolist() == IDS
    np.testing.assert_allclose(frame[list(EMOTIONS)].to_numpy(), expected[0], atol=1e-6)


def test_stdin_to_stdout_in_process(ensemble_dir, expected, tmp_path, monkeypatch, capsys):
    data = write_csv(tmp_path / "in.csv").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert run("--ensemble", ensemble_dir, "--input", "-") == 0
    captured = capsys.readouterr()
    frame = pd.read_csv(io.StringIO(captured.out), dtype={"ID": str})
    assert frame["ID"].tolist() == IDS
    np.testing.assert_array_equal(frame[list(EMOTIONS)].to_numpy(), expected[1])
    assert "Predicting" not in captured.err  # stderr is not a terminal here: no progress bar


class RecordingEnsemble:
    """Stands in for an EmotionEnsemble and records the batch sizes it is asked to score."""

    def __init__(self):
        self.batches = []

    def predict(self, texts):
        self.batches.append(len(texts))
        return pd.DataFrame(np.zeros((len(texts), len(EMOTIONS)), np.int8), columns=list(EMOTIONS))


def test_input_is_streamed_in_chunks(tmp_path):
    fake = RecordingEnsemble()
    rows = predict_cli.predict_file(fake, write_csv(tmp_path / "in.csv"), tmp_path / "out.csv", chunk_size=16)
    assert rows == 40 and fake.batches == [16, 16, 8]
    # a reader yields the first chunks before it has seen the bad row at the end of the file
    texts = TEXTS[:30] + [" "]
    chunks = iter_text_chunks(write_csv(tmp_path / "bad.csv", texts, IDS[:31]), chunk_size=10)
    assert [len(next(chunks).texts) for _ in range(3)] == [10, 10, 10]
    with pytest.raises(DataError, match=r"row 31, column 'Tweet': empty tweet"):
        next(chunks)


def test_a_failure_keeps_the_old_output_and_leaves_no_temp_file(ensemble_dir, tmp_path, capsys):
    out = tmp_path / "out.csv"
    out.write_text("previous results\n")
    bad = write_csv(tmp_path / "in.csv", TEXTS[:25] + [""], IDS[:26])
    assert run("--ensemble", ensemble_dir, "--input", bad, "--output", out, "--chunk-size", 10) == 2
    assert f"file {bad}, row 26, column 'Tweet': empty tweet" in capsys.readouterr().err
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


@pytest.mark.parametrize(
    "content, name, argv, message",
    [
        ("ID,text\n1,hello\n", "a.csv", [], "column 'Tweet': has no text column 'Tweet'; columns are ['ID', 'text']"),
        ("ID,Tweet\n1,hello\n2,\n", "a.csv", [], "row 2, column 'Tweet': empty tweet"),
        ("ID,Tweet\n1,hello,extra\n", "a.csv", [], "row 1: has 3 fields but the header has 2"),
        ('{"Tweet": "hi"}\n{"Tweet": "hi"\n', "a.jsonl", [], "row 2: is not valid JSON"),
        ('{"Tweet": 5}\n', "a.jsonl", [], "row 1, column 'Tweet': tweet must be a string, got int"),
        ('{"ID": 1, "Tweet": "a"}\n{"Tweet": "b"}\n', "a.jsonl", [], "row 2, column 'ID': has no ID key 'ID'"),
        ("ID,Tweet\n1,hello\n", "a.xlsx", [], "cannot tell the format from the extension '.xlsx'"),
        ("ID,Tweet\n1,hello\n", "a.csv", ["--id-column", "key"], "column 'key': has no ID column 'key'"),
        ("ID,Tweet\n1,hello\n", "a.csv", ["--chunk-size", "0"], "--chunk-size must be at least 1"),
    ],
)
def test_bad_input_names_file_row_and_column(ensemble_dir, tmp_path, capsys, content, name, argv, message):
    src = tmp_path / name
    src.write_text(content)
    assert run("--ensemble", ensemble_dir, "--input", src, "--output", tmp_path / "out.csv", *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")
    assert not (tmp_path / "out.csv").exists()


def test_invalid_utf8_is_named(tmp_path):
    src = tmp_path / "a.csv"
    src.write_bytes(b"ID,Tweet\n1,ok\n2,caf\xe9\n")
    with pytest.raises(DataError, match=r"a\.csv.*is not valid UTF-8"):
        list(iter_text_chunks(src))


@pytest.mark.parametrize(
    "name, data",
    [
        ("excel.csv", "\ufeffID;Tweet;\r\n1;\"so happy; really\";\r\n;;\r\n2;sad\r\n".encode()),  # ; separator, BOM, empty rows
        ("unicode.csv", "ID\tTweet\r\n1\t\"so happy; really\"\r\n2\tsad\r\n".encode("utf-16")),  # Excel "Unicode Text"
        ("semeval.txt", b'ID\tTweet\n1\t"so happy; really\n2\tsad\n'),  # tab-separated, quotes are text
    ],
)
def test_spreadsheet_csv_variants_read_like_the_clean_file(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    chunks = list(iter_text_chunks(tmp_path / name))
    expected = '"so happy; really' if name.endswith(".txt") else "so happy; really"
    assert [(c.ids, c.texts) for c in chunks] == [(["1", "2"], [expected, "sad"])]


def test_empty_input_writes_a_header_only(tmp_path):
    with PredictionWriter(tmp_path / "out.csv", proba=True) as writer:
        pass
    assert (tmp_path / "out.csv").read_text().strip() == ",".join(EMOTIONS)
    assert writer.rows == 0


def test_ray_engine_without_ray_says_how_to_install(ensemble_dir, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert run("--ensemble", ensemble_dir, "--input", write_csv(tmp_path / "in.csv"), "--output", tmp_path / "o", "--engine", "ray") == 2
    assert "pip install embedensemble[ray]" in capsys.readouterr().err


def test_ray_engine_passes_the_options_to_predict_with_ray(ensemble_dir, tmp_path, monkeypatch):
    calls = []
    module = types.ModuleType("embedensemble.distributed.ray_predict")
    module.predict_with_ray = lambda *args, **kwargs: calls.append((args, kwargs))
    monkeypatch.setitem(sys.modules, "embedensemble.distributed", types.ModuleType("embedensemble.distributed"))
    monkeypatch.setitem(sys.modules, "embedensemble.distributed.ray_predict", module)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "ray" else real(name, *a))
    src = write_csv(tmp_path / "in.csv")
    argv = ["--ensemble", ensemble_dir, "--input", src, "--output", tmp_path / "shards", "--engine", "ray", "--proba",
            "--address", "ray://head:10001", "--num-workers", "2", "--chunk-size", "64", "--id-column", "ID"]
    assert run(*argv) == 0
    assert calls == [((ensemble_dir, str(src), str(tmp_path / "shards")), {
        "text_column": "Tweet", "id_column": "ID", "proba": True, "address": "ray://head:10001", "num_workers": 2, "batch_size": 64,
        "num_gpus": 0, "resume": True,
    })]


def _cli(*args, stdin=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "embedensemble.predict", *map(str, args)], input=stdin, check=False,
                          capture_output=True, text=True, env=env, timeout=300)


def test_subprocess_pipes_stdin_to_stdout(ensemble_dir, expected, tmp_path):
    lines = [json.dumps({"ID": i, "Tweet": t}) for i, t in zip(IDS, TEXTS)]
    proc = _cli("--ensemble", ensemble_dir, "--input", "-", "--input-format", "jsonl", "--proba", stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["ID"] for r in records] == IDS
    np.testing.assert_allclose([[r[e] for e in EMOTIONS] for r in records], expected[0], atol=1e-6)
    assert "Predicting" not in proc.stderr  # not a terminal: no progress bar


def test_subprocess_error_exits_2_without_traceback(ensemble_dir, tmp_path):
    src = tmp_path / "a.csv"
    src.write_text("ID,Tweet\n1,hello\n2,\n")
    proc = _cli("--ensemble", ensemble_dir, "--input", src, "--output", tmp_path / "o.csv")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: file {src}, row 2, column 'Tweet': empty tweet"


class FakeTorch(types.ModuleType):
    def __init__(self):
        super().__init__("torch")
        self.threads = 8

    def set_num_threads(self, n):
        self.threads = n

    def get_num_threads(self):
        return self.threads


@pytest.mark.parametrize("torch_loaded", [False, True])
def test_thread_policy_is_set_once_without_importing_torch(monkeypatch, torch_loaded):
    from embedensemble import runtime

    monkeypatch.setattr(runtime, "_policy_set", False)
    monkeypatch.setattr(runtime, "_threads", None)
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    fake = FakeTorch()
    if torch_loaded:
        monkeypatch.setitem(sys.modules, "torch", fake)
    else:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert runtime.set_thread_policy(3) == 3
    assert runtime.set_thread_policy(5) == 3  # the first choice stays
    if torch_loaded:
        assert fake.threads == 3
    else:
        assert os.environ["OMP_NUM_THREADS"] == "3" and "torch" not in sys.modules
