"""The command-line entry points on a small synthetic fixture (real TF-IDF members, subprocesses)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedensemble import EmotionEnsemble
from embedensemble.data import read_corpus

from .synthetic import write_kaggle, write_semeval

TFIDF_CONFIG = {
    "name": "tiny",
    "members": [
        {"name": "tfidf-logreg", "features": "tfidf", "head": "logreg"},
        {"name": "tfidf-ridge", "features": "tfidf", "head": "ridge"},
    ],
    "cv": {"n_folds": 3},
}


def cli(*args, cwd=None, check=True):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture()
def tiny_config(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TFIDF_CONFIG))
    return path


def test_help():
    for module in ("embedensemble.fit", "embedensemble.stack"):
        out = cli(module, "--help").stdout
        assert "--run" in out


def test_fit_then_stack_on_kaggle_fixture(tmp_path, tiny_config):
    data = write_kaggle(tmp_path / "data", n_train=150, n_test=50)
    run = tmp_path / "run"
    cli("embedensemble.fit", "--config", str(tiny_config), "--data", str(data), "--run", str(run), "-q")
    assert json.loads((run / "members" / "tfidf-logreg" / "member.json").read_text())["status"] == "done"
    out = cli("embedensemble.stack", "--run", str(run), "--no-report", "-q").stdout
    assert "STACK" in out
    submission = (run / "submission.csv").read_text().splitlines()
    assert submission[0] == (data / "sample_submission.csv").read_text().splitlines()[0]
    assert [line.split(",")[0] for line in submission[1:]] == read_corpus(data / "test.csv").ids
    assert all(set(line.split(",")[1:]) <= {"0", "1"} for line in submission[1:])
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("macro_f1", "micro_f1", "jaccard", "subset_accuracy", "per_emotion_f1"):
        assert key in metrics["stack"]["oof"]
    ensemble = EmotionEnsemble.load(run / "ensemble")
    assert ensemble.predict(["so happy and cheerful"]).shape == (1, 11)

    # objective jaccard: the submission is each test tweet's expected-Jaccard-best set of the stacked probabilities.
    from embedensemble.jaccard_decoding import decode_expected_jaccard

    cli("embedensemble.stack", "--run", str(run), "--objective", "jaccard", "--no-report", "-q")
    decoded = decode_expected_jaccard(np.load(run / "stack_test.npy"))
    assert [[int(v) for v in line.split(",")[1:]] for line in (run / "submission.csv").read_text().splitlines()[1:]] == decoded.tolist()
    assert EmotionEnsemble.load(run / "ensemble").decision == "expected_jaccard"
    cli("embedensemble.stack", "--run", str(run), "--objective", "jaccard", "--decision", "thresholds", "--no-report", "-q")
    assert EmotionEnsemble.load(run / "ensemble").decision == "thresholds"


def test_semeval_fixture_uses_dev_as_eval_and_env_var(tmp_path, tiny_config):
    data = write_semeval(tmp_path / "data")
    run = tmp_path / "run"
    env_run = subprocess.run(
        [sys.executable, "-m", "embedensemble.fit", "--config", str(tiny_config), "--run", str(run), "-q", "--stack", "--folds", "2"],
        capture_output=True, text=True, env={**os.environ, "EMBEDENSEMBLE_DATA": str(data)}, timeout=600,
    )
    assert env_run.returncode == 0, env_run.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stack"]["eval"]["n"] == 40
    assert "eval" in metrics["members"]["tfidf-ridge"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("embedensemble.stack", "--run", "/nonexistent/run"), "/nonexistent/run"),
        (("embedensemble.fit", "--data", "/nonexistent/data"), "/nonexistent/data"),
        (("embedensemble.fit", "--config", "/nonexistent/c.json"), "/nonexistent/c.json"),
    ],
)
def test_cli_errors_are_one_clear_line(args, fragment):
    result = cli(*args, check=False)
    assert result.returncode == 2
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_cli_unknown_config_key(tmp_path):
    bad = dict(TFIDF_CONFIG, members=[{"name": "x", "features": "tfidf", "haed": "logreg"}])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = cli("embedensemble.fit", "--config", str(tmp_path / "bad.json"), "--data", str(write_kaggle(tmp_path / "d")), check=False)
    assert result.returncode == 2 and "haed" in result.stderr and "Traceback" not in result.stderr


def test_cli_bad_data_names_file_row_column(tmp_path, tiny_config):
    data = write_kaggle(tmp_path / "d")
    lines = (data / "train.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[2] = "7"
    lines[5] = ",".join(cells)
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    result = cli("embedensemble.fit", "--config", str(tiny_config), "--data", str(data), "--run", str(tmp_path / "r"), check=False)
    assert result.returncode == 2
    assert "train.csv" in result.stderr and "row 5" in result.stderr and "'anger'" in result.stderr
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_default_config_file_matches_builtin():
    from embedensemble.config import EnsembleConfig
    from embedensemble.defaults import default_config

    shipped = Path(__file__).parents[1] / "experiments" / "default.json"
    assert EnsembleConfig.load(shipped) == default_config()
