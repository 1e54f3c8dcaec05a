"""A small saved ensemble for prediction and serving tests: one TF-IDF + logistic-regression member,
two folds, fitted in-process on synthetic tweets (a few seconds; no backbone weights)."""

from __future__ import annotations

from pathlib import Path

from embedensemble import EmotionEnsemble, EnsembleConfig
from embedensemble.config import CVConfig, MemberConfig

from .synthetic import make_tweets


def build_tiny_ensemble(folder: Path, n: int = 160, seed: int = 0) -> Path:
    """Fit and save the ensemble into ``folder / "ensemble"`` and return that path."""
    texts, labels = make_tweets(n, seed)
    config = EnsembleConfig(
        name="tiny", members=[MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg")], cv=CVConfig(n_folds=2)
    )
    ensemble = EmotionEnsemble(config, use_cache=False).fit(texts, labels, run_dir=folder / "run")
    return ensemble.save(folder / "ensemble")
