"""End to end on the real shared data (../shared/data): fit + stack -> a valid submission.

Small members (TF-IDF and frozen MiniLM, 3 folds) keep this inside CI time; the embedding
cache is shared between the two tests, which read the same tweets.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from embedensemble import EmotionEnsemble
from embedensemble.labels import EMOTIONS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Real MiniLM weights and the whole shared data: slow, so `-m "not slow"` skips it as the README says.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data not found at {SHARED}")]

CONFIG = {
    "name": "e2e",
    "members": [
        {"name": "tfidf-logreg", "features": "tfidf", "head": "logreg"},
        {"name": "minilm-logreg", "features": "minilm", "head": "logreg"},
    ],
    "cv": {"n_folds": 3},
}


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    config = dict(CONFIG, cache_dir=str(folder / "cache"))
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def _fit_and_stack(config: Path, data: Path, run: Path) -> dict:
    cmd = [sys.executable, "-m", "embedensemble.fit", "--config", str(config), "--data", str(data), "--run", str(run), "--stack", "-q"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run / "metrics.json").read_text())


def test_kaggle_submission_for_every_test_tweet(config_file, tmp_path):
    data = SHARED / "kaggle-emotion"
    metrics = _fit_and_stack(config_file, data, tmp_path / "run")
    with open(tmp_path / "run" / "submission.csv", newline="") as f, open(data / "sample_submission.csv", newline="") as s:
        rows, sample = list(csv.reader(f)), list(csv.reader(s))
    assert rows[0] == sample[0] == ["ID", *EMOTIONS]
    assert len(rows) == 3260 and [r[0] for r in rows] == [r[0] for r in sample]
    assert all(cell in ("0", "1") for r in rows[1:] for cell in r[1:])
    # 3-fold OOF quality of two cheap members: a floor far above chance (~0.3) catches broken pipelines.
    assert metrics["stack"]["oof"]["macro_f1"] > 0.45
    assert (tmp_path / "run" / "report" / "report.html").is_file()


def test_semeval_dev_is_scored_and_ensemble_reloads(config_file, tmp_path):
    metrics = _fit_and_stack(config_file, SHARED / "semeval2018-ec", tmp_path / "run")
    assert metrics["stack"]["eval"]["n"] == 886
    best_member = max(m["eval"]["macro_f1"] for m in metrics["members"].values())
    assert metrics["stack"]["eval"]["macro_f1"] > 0.45
    assert metrics["stack"]["eval"]["macro_f1"] >= best_member - 0.02
    ensemble = EmotionEnsemble.load(tmp_path / "run" / "ensemble")
    assert ensemble.predict(["What a wonderful surprise, I love you all!"]).shape == (1, 11)
