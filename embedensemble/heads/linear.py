"""Linear one-vs-rest heads (``logreg``, ``ridge``): state is ``coef_`` [L, d] and ``intercept_`` [L], saved as safetensors."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import ArtifactError, ConfigError
from ..fileio import load_tensors, save_tensors
from .base import Head, register_head


class _LinearHead(Head):
    """A head whose state is ``coef_`` [L, d] and ``intercept_`` [L], turned into probabilities by ``_link``."""

    def _predict_labels(self, X: np.ndarray | sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
        # Predict from the stored float64 arrays (not an sklearn object) so a reloaded head
        # gives exactly the probabilities of the one that was saved.
        scores = np.asarray(X @ self.coef_[labels].T, dtype=np.float64) + self.intercept_[labels]
        return self._link(scores)

    @staticmethod
    @abstractmethod
    def _link(scores: np.ndarray) -> np.ndarray: ...

    def _init_state(self) -> None:
        self.coef_ = np.zeros((self.n_labels_, self.n_features_in_), dtype=np.float64)
        self.intercept_ = np.zeros(self.n_labels_, dtype=np.float64)

    def _save_state(self, path: Path) -> None:
        save_tensors(path / "head.safetensors", {"coef": self.coef_, "intercept": self.intercept_})

    def _load_state(self, path: Path) -> None:
        tensors = load_tensors(path / "head.safetensors")
        self.coef_ = tensors["coef"].astype(np.float64)
        self.intercept_ = tensors["intercept"].astype(np.float64)
        if self.coef_.shape != (self.n_labels_, self.n_features_in_):
            raise ArtifactError(f"{path}: coef shape {self.coef_.shape} does not match head.json")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Written through exp(-|z|) so that large scores of either sign never overflow.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


_LOGREG_SOLVERS = ("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga")


@register_head("logreg")
class LogRegHead(_LinearHead):
    """L2 logistic regression per label (sklearn ``LogisticRegression``), stored as arrays.

    C=1: on Kaggle train 5-fold OOF with nested per-label thresholds over 3 seeds
    (``benchmarks/selection.py``) no C in [0.25, 4] beat it in every seed for TF-IDF, MiniLM or
    mpnet features. ``newton-cg`` gave the same models as
    ``lbfgs`` at a fraction of the CPU time, on dense and sparse input alike.
    ``class_weight="balanced"`` lifts F1 at the 0.5 threshold, not at tuned thresholds.
    ``standardize``: fit on features scaled to zero mean and unit variance (dense features only), the
    scaling then folded into ``coef_``/``intercept_``; for features whose dimensions differ in scale by
    orders of magnitude, as a decoder's hidden states do, where one C cannot suit them all.
    """

    def __init__(
        self,
        C: float = 1.0,
        class_weight: str | None = None,
        max_iter: int = 1000,
        tol: float = 1e-4,
        solver: str = "newton-cg",
        random_state: int | None = None,
        standardize: bool = False,
    ) -> None:
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.random_state = random_state

    def _validate_params(self) -> None:
        super()._validate_params()
        self._check_positive("C", "tol")
        self._check_positive("max_iter", integer=True)
        self._require("class_weight", self.class_weight in (None, "balanced"), "None or 'balanced'")
        self._require("solver", self.solver in _LOGREG_SOLVERS, f"one of {list(_LOGREG_SOLVERS)}")
        self._require("standardize", isinstance(self.standardize, bool), "true or false")

    def _fit_labels(self, X: np.ndarray | sp.csr_matrix, Y: np.ndarray, labels: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self._init_state()
        if self.standardize:
            if sp.issparse(X):
                raise ConfigError(f"head {self.name!r}: standardize needs dense features, not sparse ones (TF-IDF)")
            mean = X.mean(axis=0, dtype=np.float64)
            scale = X.std(axis=0, dtype=np.float64)
            scale[scale == 0] = 1.0
            X = (X - mean) / scale
        for j in labels:
            model = LogisticRegression(
                C=self.C,
                class_weight=self.class_weight,
                max_iter=self.max_iter,
                tol=self.tol,
                solver=self.solver,
                random_state=self.random_state,
            ).fit(X, Y[:, j])
            self.coef_[j] = model.coef_[0]
            self.intercept_[j] = model.intercept_[0]
        if self.standardize:  # w.(x - m)/s + b = (w/s).x + (b - (w/s).m): one linear model on raw features
            self.coef_[labels] /= scale
            self.intercept_[labels] -= self.coef_[labels] @ mean

    @staticmethod
    def _link(scores: np.ndarray) -> np.ndarray:
        return _sigmoid(scores)


_RIDGE_SOFT_EDGE = 0.05


@register_head("ridge")
class RidgeHead(_LinearHead):
    """Ridge regression on the 0/1 targets (all labels in one solve): the cheapest head.

    ``alpha=3`` scored well on both MiniLM embeddings and TF-IDF (alpha in 1..30 tried).
    Its scores estimate probabilities directly but stray outside [0, 1]. They pass through
    unchanged inside [0.05, 0.95] and are squeezed exponentially beyond, so the output stays
    in (0, 1) yet keeps the order of the scores (a hard clip would tie every negative row).
    """

    def __init__(self, alpha: float = 3.0, random_state: int | None = None) -> None:
        self.alpha = alpha
        self.random_state = random_state

    def _validate_params(self) -> None:
        super()._validate_params()
        self._check_positive("alpha")

    def _fit_labels(self, X: np.ndarray | sp.csr_matrix, Y: np.ndarray, labels: np.ndarray) -> None:
        from sklearn.linear_model import Ridge

        self._init_state()
        if len(labels) == 0:
            return
        model = Ridge(alpha=self.alpha, random_state=self.random_state).fit(X, Y[:, labels].astype(np.float64))
        self.coef_[labels] = np.atleast_2d(model.coef_)
        self.intercept_[labels] = model.intercept_

    @staticmethod
    def _link(scores: np.ndarray) -> np.ndarray:
        d = _RIDGE_SOFT_EDGE
        low = d * np.exp((np.minimum(scores, d) - d) / d)
        high = 1.0 - d * np.exp((1.0 - d - np.maximum(scores, 1.0 - d)) / d)
        return np.where(scores < d, low, np.where(scores > 1.0 - d, high, scores))

