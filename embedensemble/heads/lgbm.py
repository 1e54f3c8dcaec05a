"""The LightGBM one-vs-rest head (``make_head("lgbm")``), saved in LightGBM's own text format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import ArtifactError
from ..fileio import atomic_write_text
from .base import Head, is_number, register_head


@register_head("lgbm")
class LGBMHead(Head):
    """LightGBM binary booster per label; saved as LightGBM's own text model, one file per label.

    Defaults suit ~7k tweets x 384-1024 embedding dims on 2 cores: shallow trees, column
    subsampling and a fixed number of rounds (no early stopping: a fold has no validation split
    of its own). ``n_jobs=1`` by default: on a busy 2-core machine LightGBM's OpenMP threads
    spin-wait, and 2 threads took over 6x the CPU time of one (``None`` or <= 0: all cores).
    ``class_weight="balanced"`` (positives up-weighted by negatives/positives): re-selected on
    Kaggle train 5-fold OOF with nested thresholds over 3 seeds (``benchmarks/selection.py``,
    ``benchmarks/results/selection.json``), where it ties ``None`` at tuned thresholds and lifts
    F1 at the 0.5 threshold; kept.
    On sparse TF-IDF it is slow (~25 s CPU per label) and weaker than ``logreg``.
    """

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        feature_fraction: float = 0.5,
        bagging_fraction: float = 1.0,
        min_child_samples: int = 20,
        reg_lambda: float = 1.0,
        class_weight: str | None = "balanced",
        n_jobs: int | None = 1,
        random_state: int | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _validate_params(self) -> None:
        super()._validate_params()
        self._check_positive("n_estimators", "num_leaves", "min_child_samples", integer=True)
        self._check_positive("learning_rate")
        for param in ("feature_fraction", "bagging_fraction"):
            value = getattr(self, param)
            self._require(param, is_number(value) and 0.0 < value <= 1.0, "a number in (0, 1]")
        self._require("reg_lambda", is_number(self.reg_lambda) and self.reg_lambda >= 0, "a number >= 0")
        self._require("class_weight", self.class_weight in (None, "balanced"), "None or 'balanced'")
        self._require("n_jobs", self.n_jobs is None or is_number(self.n_jobs, integer=True), "an integer or None")

    def _lgb_params(self, y: np.ndarray) -> dict[str, Any]:
        params: dict[str, Any] = {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "feature_fraction": self.feature_fraction,
            "min_data_in_leaf": self.min_child_samples,
            "lambda_l2": self.reg_lambda,
            "seed": 0 if self.random_state is None else int(self.random_state),
            # With deterministic and a fixed histogram layout, equal seeds and data give equal trees.
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": self._num_threads(),
            "verbosity": -1,
        }
        if self.bagging_fraction < 1.0:
            params.update(bagging_fraction=self.bagging_fraction, bagging_freq=1)
        if self.class_weight == "balanced":
            params["scale_pos_weight"] = float((y == 0).sum()) / float(y.sum())
        return params

    def _fit_labels(self, X: np.ndarray | sp.csr_matrix, Y: np.ndarray, labels: np.ndarray) -> None:
        import lightgbm as lgb

        self.boosters_: list[Any] = [None] * self.n_labels_
        for j in labels:
            y = Y[:, j].astype(np.float64)
            dataset = lgb.Dataset(X, label=y, params={"verbosity": -1, "max_bin": 255})
            booster = lgb.train(self._lgb_params(y), dataset, num_boost_round=self.n_estimators)
            # Predict through a booster rebuilt from its text model, exactly what load() gives.
            self.boosters_[j] = lgb.Booster(model_str=booster.model_to_string())

    def _predict_labels(self, X: np.ndarray | sp.csr_matrix, labels: np.ndarray) -> np.ndarray:
        return np.column_stack([self.boosters_[j].predict(X, num_threads=self._num_threads()) for j in labels])

    def _num_threads(self) -> int:
        return 0 if self.n_jobs is None or self.n_jobs <= 0 else int(self.n_jobs)  # 0: LightGBM's OpenMP default

    def _save_state(self, path: Path) -> None:
        for j, booster in enumerate(self.boosters_):
            if booster is not None:
                atomic_write_text(path / f"lgbm_{j:02d}.txt", booster.model_to_string())

    def _load_state(self, path: Path) -> None:
        import lightgbm as lgb

        self.boosters_ = [None] * self.n_labels_
        for j in np.flatnonzero(np.isnan(self.constant_)):
            file = path / f"lgbm_{j:02d}.txt"
            if not file.is_file():
                raise ArtifactError(f"{path}: missing LightGBM model {file.name} for label {j}")
            self.boosters_[j] = lgb.Booster(model_str=file.read_text(encoding="utf-8"))
