"""A small saved ensemble for prediction and serving tests: one TF-IDF + logistic-regression member,
two folds, fitted in-process on synthetic tweets (a few seconds; no backbone weights)."""

from __future__ import annotations

from pathlib import Path

from embedensemble import Corpus, EnsembleConfig
from embedensemble.config import CVConfig, MemberConfig
from embedensemble.fitting import fit_members
from embedensemble.stacking import stack_run

from .synthetic import make_tweets


def build_tiny_ensemble(folder: Path, n: int = 160, seed: int = 0) -> Path:
    """Fit (in ``folder / "run"``) and stack; returns the saved ensemble folder ``run/ensemble``."""
    texts, labels = make_tweets(n, seed)
    config = EnsembleConfig(
        name="tiny", members=[MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg")], cv=CVConfig(n_folds=2)
    )
    train = Corpus([f"t{i}" for i in range(n)], texts, labels)
    run = fit_members(config, train, folder / "run")
    stack_run(run, write_report=False)
    return run / "ensemble"


_BUILT: dict[str, Path] = {}


def shared_tiny_ensemble(tmp_path_factory) -> Path:
    """One tiny ensemble per test session (pass pytest's ``tmp_path_factory``), shared by the predict and serve tests."""
    if "path" not in _BUILT:
        _BUILT["path"] = build_tiny_ensemble(tmp_path_factory.mktemp("tiny-ensemble"))
    return _BUILT["path"]
