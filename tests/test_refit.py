"""Refit on all rows: one model per member, trained on every train row, with the run's stacker and thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_semeval

from embedensemble.config import EnsembleConfig
from embedensemble.data import read_corpus
from embedensemble.ensemble import EmotionEnsemble
from embedensemble.errors import RunNotFoundError
from embedensemble.fileio import load_array, read_json
from embedensemble.fit import main as fit_main
from embedensemble.members.base import MemberContext, build_member
from embedensemble.refit import refit_full
from embedensemble.run_folder import RunFolder, fold_done_file, fold_prediction_file

MEMBERS = [
    {"name": "tfidf-logreg", "features": "tfidf", "head": "logreg"},
    {"name": "tfidf-logreg-c03", "features": "tfidf", "head": "logreg", "head_params": {"C": 0.3}},
]


@pytest.fixture(scope="module")
def refitted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("refit")
    data = write_semeval(root / "data", n_train=120, n_dev=40, n_test=30)
    config = root / "config.json"
    config.write_text(json.dumps({"name": "tiny", "members": MEMBERS, "cv": {"n_folds": 3}}))
    run = root / "run"
    assert fit_main(["--data", str(data), "--config", str(config), "--run", str(run), "--stack", "-q"]) == 0
    metrics = refit_full(run)
    return {"data": data, "run": RunFolder(run), "metrics": metrics}


def test_full_ensemble_holds_one_model_per_member_with_the_runs_stacker(refitted):
    run = refitted["run"]
    manifest = read_json(run.full_ensemble_dir / "manifest.json")
    assert {m["name"]: len(m["folds"]) for m in manifest["members"]} == {m["name"]: 1 for m in MEMBERS}
    assert refitted["metrics"]["models_per_prediction"] == {m["name"]: 1 for m in MEMBERS}
    kfold, full = EmotionEnsemble.load(run.ensemble_dir), EmotionEnsemble.load(run.full_ensemble_dir)
    assert full.thresholds == kfold.thresholds
    dev = read_corpus(refitted["data"] / "2018-E-c-En-dev.txt", require_labels=True)
    # The saved ensemble predicts what the refitted members predicted for the eval split, stacked by the run's stacker.
    member_eval = np.stack([load_array(fold_prediction_file(run.member_full_dir(m["name"]), "eval")) for m in MEMBERS], axis=1)
    np.testing.assert_allclose(full.predict_proba(dev.texts).to_numpy(), kfold.stacker_.predict_proba(member_eval), atol=1e-6)


def test_refitted_member_is_trained_on_every_train_row(refitted):
    run = refitted["run"]
    train = read_corpus(refitted["data"] / "2018-E-c-En-train.txt", require_labels=True)
    dev = read_corpus(refitted["data"] / "2018-E-c-En-dev.txt", require_labels=True)
    config = EnsembleConfig.load(run.config_file)
    direct = build_member(config.member("tfidf-logreg"), MemberContext(seed=config.seed)).fit(train.texts, train.labels)
    saved = load_array(fold_prediction_file(run.member_full_dir("tfidf-logreg"), "eval"))
    np.testing.assert_allclose(saved, direct.predict_proba(dev.texts), atol=1e-6)
    assert read_json(fold_done_file(run.member_full_dir("tfidf-logreg")))["n_train"] == len(train)
    # ... and differs from the K-fold average, which no fold model trained on every row
    assert np.abs(saved - run.member_array("tfidf-logreg", "eval")).max() > 1e-4


def test_metrics_put_refitted_quality_next_to_k_fold(refitted):
    metrics = read_json(refitted["run"].full_metrics_file)
    for split in ("eval", "test"):
        assert 0.0 <= metrics["stack"][split]["label_agreement"] <= 1.0
    assert set(metrics["stack"]["eval"]) >= {"kfold", "full"}
    kfold_f1 = read_json(refitted["run"].metrics_file)["stack"]["eval"]["macro_f1"]
    assert metrics["stack"]["eval"]["kfold"]["macro_f1"] == pytest.approx(kfold_f1, abs=1e-9)
    assert set(metrics["members"]) == {m["name"] for m in MEMBERS}


def test_rerun_reuses_refitted_members(refitted):
    run = refitted["run"]
    marker = fold_done_file(run.member_full_dir("tfidf-logreg"))
    before = marker.stat().st_mtime_ns
    refit_full(run.path, members=["tfidf-logreg"])
    assert marker.stat().st_mtime_ns == before


def test_refit_refuses_unstacked_runs_and_unknown_members(refitted, tmp_path):
    with pytest.raises(RunNotFoundError):
        refit_full(tmp_path / "nothing")
    with pytest.raises(RunNotFoundError, match="not among"):
        refit_full(refitted["run"].path, members=["nope"])


def test_refit_cli_prints_where_it_wrote(refitted, capsys):
    from embedensemble.refit import main

    assert main(["--run", str(refitted["run"].path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "eval macro-F1: K-fold" in out and str(Path(refitted["run"].full_ensemble_dir)) in out


def test_stack_refit_full_flag_writes_the_full_ensemble(refitted):
    import shutil

    from embedensemble.stack import main as stack_main

    run = refitted["run"]
    shutil.rmtree(run.full_ensemble_dir)
    assert stack_main(["--run", str(run.path), "--no-report", "--refit-full", "-q"]) == 0
    assert (run.full_ensemble_dir / "manifest.json").is_file()
