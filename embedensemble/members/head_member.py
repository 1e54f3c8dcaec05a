"""The ``head`` member kind: a feature source (TF-IDF or cached embeddings) feeding a one-vs-rest head.

Saved folder: ``fold.json`` (base class), ``head_member.json`` (feature count and, for embeddings,
the encoder identity), ``features/`` (TF-IDF only; embeddings are rebuilt from the config)
and ``head/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._logging import get_logger
from ..config import MemberConfig
from ..errors import ArtifactError, ConfigError
from ..features import FeatureSource, TfidfFeatures, make_features
from ..fileio import read_json, write_json
from ..heads import Head, load_head, make_head
from .base import FoldModel, MemberContext, register_member

logger = get_logger(__name__)

# What a head member's ``params`` may set: all of it is about its feature source.
FEATURE_PARAMS = ("normalise", "precision", "backbone_options")


@register_member("head")
class HeadMember(FoldModel):
    """Features from ``config.features`` + head ``config.head`` with ``config.head_params``.

    The head's ``random_state`` defaults to ``context.seed`` so that a run's seed fixes every member.
    """

    def __init__(self, config: MemberConfig, context: MemberContext | None = None) -> None:
        super().__init__(config, context)
        if not isinstance(config.head_params, dict):
            raise ConfigError(f"member '{config.name}': head_params must be an object, got {type(config.head_params).__name__}")
        # Built now, untrained, so a bad head name or parameter fails before any embedding is computed.
        try:
            self.head_: Head = make_head(config.head, **self._head_params())
        except ConfigError as exc:
            raise ConfigError(f"member '{config.name}': {exc}") from None
        self.features_: FeatureSource = self._make_features()
        self._feature_identity: str | None = None

    def _make_features(self) -> FeatureSource:
        """The member's feature source; ``params`` may set ``normalise`` (bool), ``precision``
        ("fp32"/"bf16"/"int8") and ``backbone_options`` (BackboneSpec overrides, e.g. ``hidden_layer``)."""
        normalise = self._normalise()
        unknown = sorted(set(self.config.params) - set(FEATURE_PARAMS))
        if unknown:
            raise ConfigError(
                f"member '{self.config.name}': params: unknown key(s) {unknown}; a head member's params are {list(FEATURE_PARAMS)}"
            )
        precision = self.config.params.get("precision", "fp32")
        options = self.config.params.get("backbone_options")
        try:
            return make_features(self.config.features, self.context, normalise, precision, options)
        except ConfigError as exc:
            raise ConfigError(f"member '{self.config.name}': params: {exc}") from None

    def _normalise(self) -> bool:
        """``params: {"normalise": true}``: features read normalised tweets (embedensemble.normalise)."""
        if not isinstance(self.config.params, dict):
            raise ConfigError(f"member '{self.config.name}': params must be an object, got {type(self.config.params).__name__}")
        value = self.config.params.get("normalise", False)
        if not isinstance(value, bool):
            raise ConfigError(f"member '{self.config.name}': params.normalise must be true or false, got {value!r}")
        return value

    def _head_params(self) -> dict[str, Any]:
        params = dict(self.config.head_params)
        params.setdefault("random_state", int(self.context.seed))
        return params

    def _fit(self, texts: list[str], labels: np.ndarray, *, workdir: Path | None) -> None:
        features = self._make_features()
        X = features.fit_transform(texts)
        logger.info(
            "member '%s': fitting %s head on %d x %d %s features",
            self.config.name,
            self.config.head,
            X.shape[0],
            X.shape[1],
            self.config.features,
        )
        head = make_head(self.config.head, **self._head_params()).fit(X, labels)
        self.features_, self.head_ = features, head
        if not features.trainable:
            self._feature_identity = features.identity

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        X = self.features_.transform(texts)
        if self._feature_identity is not None and self.features_.identity != self._feature_identity:
            # Same backbone name, different weights: the head's coefficients no longer mean anything.
            raise ArtifactError(
                f"member '{self.config.name}' was trained on embeddings from {self._feature_identity!r} "
                f"but backbone {self.config.features!r} now resolves to {self.features_.identity!r}"
            )
        return self.head_.predict_proba(X)

    def _save(self, path: Path) -> None:
        if not hasattr(self.head_, "constant_"):
            raise RuntimeError(f"member '{self.config.name}' is not fitted; nothing to save")
        if self.features_.trainable:
            self.features_.save(path / "features")
        self.head_.save(path / "head")
        write_json(
            path / "head_member.json",
            {
                "features": self.config.features,
                "feature_identity": self._feature_identity,
                "n_features": self.head_.n_features_in_,
            },
        )

    @classmethod
    def _load(cls, path: Path, config: MemberConfig, context: MemberContext) -> HeadMember:
        if not (path / "head_member.json").is_file():
            raise ArtifactError(f"{path} is not a saved head member (no head_member.json)")
        meta = read_json(path / "head_member.json")
        member = cls(config, context)
        if member.features_.trainable:
            member.features_ = TfidfFeatures.load(path / "features")
        member.head_ = load_head(path / "head")
        if meta.get("features") != config.features or member.head_.n_features_in_ != meta.get("n_features"):
            raise ArtifactError(f"{path}: head_member.json does not match fold.json and head/ (a partial or mixed save)")
        member._feature_identity = meta.get("feature_identity")
        return member
