"""The default CPU configuration (also shipped as ``experiments/default.json``)."""

from __future__ import annotations

from .config import EnsembleConfig, MemberConfig

DEFAULT_MEMBERS = (
    MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg"),
    MemberConfig(name="minilm-logreg", features="minilm", head="logreg"),
    MemberConfig(name="minilm-lgbm", features="minilm", head="lgbm"),
    MemberConfig(name="mpnet-logreg", features="mpnet", head="logreg"),
)


def default_config() -> EnsembleConfig:
    """TF-IDF + frozen MiniLM + frozen mpnet members with LR / LightGBM heads; 5-fold; macro-F1 thresholds."""
    return EnsembleConfig(name="default", members=[MemberConfig(**vars(m)) for m in DEFAULT_MEMBERS])
