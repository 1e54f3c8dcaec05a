"""The default CPU configuration (also shipped as ``experiments/default.json``)."""

from __future__ import annotations

from .config import EnsembleConfig, MemberConfig

DEFAULT_MEMBERS = (
    MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg"),
    MemberConfig(name="minilm-logreg", features="minilm", head="logreg"),
    # A small, fast LightGBM: its non-linear view adds diversity to the stack at little cost.
    # One thread: on 2 cores OpenMP threads spin-wait and run ~9x slower when anything else is busy.
    MemberConfig(
        name="minilm-lgbm",
        features="minilm",
        head="lgbm",
        head_params={"n_estimators": 120, "learning_rate": 0.1, "num_leaves": 15, "feature_fraction": 0.3, "n_jobs": 1},
    ),
    MemberConfig(name="mpnet-logreg", features="mpnet", head="logreg"),
)


def default_config() -> EnsembleConfig:
    """TF-IDF + frozen MiniLM + frozen mpnet members with LR / LightGBM heads; 5-fold; macro-F1 thresholds."""
    return EnsembleConfig(name="default", members=[MemberConfig(**vars(m)) for m in DEFAULT_MEMBERS])
