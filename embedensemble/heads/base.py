"""The :class:`Head` contract and the head registry: features [n, d] in, probabilities [n, L] (float32) out.

Each head fits one binary model per label on dense embeddings or sparse TF-IDF. A label
that has a single class in the training rows (a rare emotion in a small fold) gets a
constant, smoothed prior instead of a model. ``save``/``load`` write only JSON, safetensors
and LightGBM's native text format, so loading a head never unpickles anything.

The built-in kinds live in :mod:`.linear` and :mod:`.lgbm`; the package ``__init__`` imports
them, so the registry is complete whenever any module of this package has been imported.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from .._logging import get_logger
from ..errors import ArtifactError, ConfigError
from ..fileio import check_format_version, read_json, write_json

logger = get_logger(__name__)

FORMAT_VERSION = 1
_HEADS: dict[str, type[Head]] = {}


def register_head(name: str):
    """Class decorator: make a :class:`Head` subclass buildable by ``name``."""

    def decorate(cls: type[Head]) -> type[Head]:
        cls.name = name
        _HEADS[name] = cls
        return cls

    return decorate


def available_heads() -> list[str]:
    return sorted(_HEADS)


def make_head(name: str, **params: Any) -> Head:
    """An unfitted head ``name`` with ``params``; unknown names, parameters or bad values raise ConfigError."""
    if name not in _HEADS:
        raise ConfigError(f"unknown head {name!r}; known heads are {available_heads()}")
    cls = _HEADS[name]
    allowed = cls._param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"head {name!r}: unknown parameter(s) {unknown}; allowed parameters are {sorted(allowed)}")
    head = cls(**params)
    head._validate_params()
    return head


def load_head(path: str | Path) -> Head:
    """Load a head saved by :meth:`Head.save`, whatever its kind."""
    return Head.load(path)


class Head(ABC):
    """Base of all heads. Subclasses set their params in ``__init__`` and implement the ``_*`` hooks."""

    name: ClassVar[str] = ""

    # -- parameters -----------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values() if p.name != "self"]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def _validate_params(self) -> None:
        """Raise ConfigError naming the first bad parameter; subclasses extend."""
        self._require(
            "random_state", self.random_state is None or is_number(self.random_state, integer=True), "an integer or None"
        )

    def _require(self, param: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ConfigError(f"head {self.name!r}: {param} must be {expected}, got {getattr(self, param)!r}")

    def _check_positive(self, *params: str, integer: bool = False) -> None:
        for param in params:
            value = getattr(self, param)
            self._require(param, is_number(value, integer) and value > 0, "a positive " + ("integer" if integer else "number"))

    # -- fit / predict --------------------------------------------------------------------
    def fit(self, X: np.ndarray | sp.spmatrix, Y: np.ndarray) -> Head:
        """Fit one binary model per column of the 0/1 matrix ``Y`` [n, L]."""
        self._validate_params()
        X = _check_X(X)
        Y = _check_Y(Y, X.shape[0])
        n_rows, n_labels = Y.shape
        positives = Y.sum(axis=0)
        # A label with one class cannot train a classifier; predict its prior, smoothed by
        # half a pseudo-count so the stacker never sees an exact 0 or 1.
        constant = np.full(n_labels, np.nan)
        single = (positives == 0) | (positives == n_rows)
        constant[single] = (positives[single] + 0.5) / (n_rows + 1.0)
        if single.any():
            logger.warning(
                "head %r: label(s) %s have one class in %d rows; predicting their prior",
                self.name,
                np.flatnonzero(single).tolist(),
                n_rows,
            )
        self.n_labels_ = n_labels
        self.n_features_in_ = int(X.shape[1])
        self.constant_ = constant
        self._fit_labels(X, Y, np.flatnonzero(~single))
        return self

    def predict_proba(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Probabilities [n, L] (float32) that each label applies."""
        if not hasattr(self, "constant_"):
            raise RuntimeError(f"head {self.name!r} is not fitted; call fit() first")
        X = _check_X(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"head {self.name!r} was fitted on {self.n_features_in_} features, got {X.shape[1]}")
        proba = np.empty((X.shape[0], self.n_labels_), dtype=np.float64)
        fitted = np.isnan(self.constant_)
        proba[:, ~fitted] = self.constant_[~fitted]
        if fitted.any() and X.shape[0]:
            proba[:, fitted] = self._predict_labels(X, np.flatnonzero(fitted))
        return proba.astype(np.float32)

    @abstractmethod
    def _fit_labels(self, X: np.ndarray | sp.csr_matrix, Y: np.ndarray, labels: np.ndarray) -> None:
        """Fit models for the label indices ``labels`` (each has both classes)."""

    @abstractmethod
    def _predict_labels(self, X: np.ndarray | sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
        """Probabilities [n, len(labels)] for fitted label indices ``labels``."""

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``head.json`` plus the head's arrays or LightGBM text models into folder ``path``."""
        if not hasattr(self, "constant_"):
            raise RuntimeError(f"head {self.name!r} is not fitted; nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save_state(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "head": self.name,
            "params": self.get_params(),
            "n_labels": self.n_labels_,
            "n_features_in": self.n_features_in_,
            "constant": [None if np.isnan(c) else float(c) for c in self.constant_],
        }
        write_json(path / "head.json", meta)  # written last: its presence marks a complete save

    @classmethod
    def load(cls, path: str | Path) -> Head:
        """Load a saved head; on the base class this dispatches on the saved head name."""
        path = Path(path)
        if not (path / "head.json").is_file():
            raise ArtifactError(f"{path} is not a saved head (no head.json)")
        meta = read_json(path / "head.json")
        check_format_version(meta, FORMAT_VERSION, path, "head format")
        name = meta.get("head")
        if name not in _HEADS:
            raise ArtifactError(f"{path}: unknown head {name!r}; known heads are {available_heads()}")
        head_cls = _HEADS[name]
        if not issubclass(head_cls, cls):
            raise ArtifactError(f"{path} holds a {name!r} head, not a {cls.__name__}")
        head = make_head(name, **meta["params"])
        head.n_labels_ = int(meta["n_labels"])
        head.n_features_in_ = int(meta["n_features_in"])
        head.constant_ = np.array([np.nan if c is None else c for c in meta["constant"]], dtype=np.float64)
        head._load_state(path)
        return head

    @abstractmethod
    def _save_state(self, path: Path) -> None: ...

    @abstractmethod
    def _load_state(self, path: Path) -> None: ...


def is_number(value: Any, integer: bool = False) -> bool:
    """A Python or numpy number (an integer one if ``integer``), never a bool: the check every head parameter uses."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    return isinstance(value, kinds) and not isinstance(value, bool)


def _check_X(X: Any) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if not np.issubdtype(X.dtype, np.floating):
            X = X.astype(np.float32)
        return X
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2-D array [n, d], got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    return X


def _check_Y(Y: Any, n_rows: int) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != n_rows:
        raise ValueError(f"labels must have shape ({n_rows}, L), got {Y.shape}")
    if not np.isin(Y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return Y.astype(np.int8)
