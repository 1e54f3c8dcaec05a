"""embedensemble: multi-label emotion detection in tweets with stacked embedding ensembles."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import CVConfig, EnsembleConfig, MemberConfig, StackConfig
from .data import Corpus, load_dataset, read_corpus, write_submission
from .ensemble import EmotionEnsemble
from .labels import EMOTIONS

__all__ = [
    "EMOTIONS",
    "CVConfig",
    "Corpus",
    "EmotionEnsemble",
    "EnsembleConfig",
    "MemberConfig",
    "StackConfig",
    "__version__",
    "load_dataset",
    "read_corpus",
    "write_submission",
]
