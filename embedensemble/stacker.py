"""The stacker: a per-emotion meta-learner over members' out-of-fold probabilities.

``features="all"``: each emotion's meta-learner sees all members' probabilities of *all*
emotions (as logits), so it can use label correlations (e.g. joy and optimism rise together).
``features="same_emotion"``: it sees only every member's probability of that emotion, i.e. it
learns one weight per member and emotion (M+1 parameters instead of 11*M+1). It is the default:
on the default config's train OOF it scored +0.005 macro-F1 over "all" (nested thresholds, over
fold and meta-fold seeds; docs/ablation.md): the cross-emotion weights fit noise more than label
correlations.
The meta-learner is trained only on out-of-fold member probabilities, and its own quality is
measured out-of-fold too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import load_tensors, read_json, save_tensors, write_json
from .labels import N_LABELS

_EPS = 1e-4
META_LEARNERS = ("logreg", "lgbm", "mean")
# The LightGBM meta-learner: small, slow-learning trees per emotion (scored on train OOF in docs/ablation.md).
LGBM_PARAMS = {"objective": "binary", "learning_rate": 0.02, "num_leaves": 5, "min_data_in_leaf": 50, "bagging_fraction": 0.8,
               "bagging_freq": 1, "feature_fraction": 0.8, "lambda_l2": 1.0, "num_threads": 1, "deterministic": True, "verbose": -1}
LGBM_ROUNDS = 400
META_FEATURES = ("all", "same_emotion")


def to_logits(member_proba: np.ndarray) -> np.ndarray:
    """[n, M, L] probabilities -> [n, M*L] clipped logits (the meta-learner's features)."""
    p = np.clip(np.asarray(member_proba, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p)).reshape(len(p), -1)


def feature_columns(emotion: int, n_members: int, features: str) -> np.ndarray:
    """Columns of :func:`to_logits`' [n, M*L] matrix that emotion ``emotion``'s meta-learner reads."""
    if features == "all":
        return np.arange(n_members * N_LABELS)
    return np.arange(n_members) * N_LABELS + emotion  # member m's logit of this emotion


class Stacker:
    """``meta_learner="logreg"``: per-emotion L2 logistic regression on standardised logits, reading
    ``features`` (``"all"`` members' logits of all emotions, or only the ``"same_emotion"``'s).
    ``"lgbm"``: per-emotion LightGBM (``LGBM_PARAMS``) on the same standardised logits, saved as
    LightGBM's text model format.
    ``"mean"``: the plain average of members' probabilities (nothing learned).
    """

    def __init__(self, meta_learner: str = "logreg", C: float = 1.0, random_state: int = 42, features: str = "same_emotion") -> None:
        if meta_learner not in META_LEARNERS:
            raise ValueError(f"meta_learner {meta_learner!r} is not one of {list(META_LEARNERS)}")
        if features not in META_FEATURES:
            raise ValueError(f"stacker features {features!r} is not one of {list(META_FEATURES)}")
        self.meta_learner = meta_learner
        self.C = C
        self.random_state = random_state
        self.features = features

    def clone(self) -> Stacker:
        """An unfitted stacker with the same parameters."""
        return Stacker(self.meta_learner, self.C, self.random_state, self.features)

    def fit(self, member_proba: np.ndarray, labels: np.ndarray) -> Stacker:
        member_proba = np.asarray(member_proba)
        self.n_members_ = member_proba.shape[1]
        if self.meta_learner == "mean":
            return self
        from sklearn.linear_model import LogisticRegression

        X = to_logits(member_proba)
        self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-6
        X = (X - self.mean_) / self.scale_
        # Stored as a dense [L, M*L] matrix either way (zeros outside an emotion's columns): one save format.
        self.coef_ = np.zeros((N_LABELS, X.shape[1]))
        self.intercept_ = np.zeros(N_LABELS)
        self.boosters_: list = [None] * N_LABELS  # "lgbm": a Booster per emotion (None: constant intercept_)
        for j in range(N_LABELS):
            columns = feature_columns(j, self.n_members_, self.features)
            y = labels[:, j]
            if y.min() == y.max():  # a fold without positives: predict the constant
                self.intercept_[j] = np.log((y.mean() + _EPS) / (1 - y.mean() + _EPS))
                continue
            if self.meta_learner == "lgbm":
                self.boosters_[j] = self._fit_booster(X[:, columns], y)
                continue
            model = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
            model.fit(X[:, columns], y)
            self.coef_[j, columns], self.intercept_[j] = model.coef_[0], model.intercept_[0]
        return self

    def _fit_booster(self, X: np.ndarray, y: np.ndarray):
        import lightgbm

        params = {**LGBM_PARAMS, "seed": self.random_state}
        return lightgbm.train(params, lightgbm.Dataset(X, y, params={"verbose": -1}), num_boost_round=LGBM_ROUNDS)

    def predict_proba(self, member_proba: np.ndarray) -> np.ndarray:
        member_proba = np.asarray(member_proba)
        if member_proba.shape[1] != self.n_members_:
            raise ValueError(f"stacker was fitted on {self.n_members_} members, got {member_proba.shape[1]}")
        if self.meta_learner == "mean":
            return member_proba.mean(axis=1).astype(np.float32)
        X = (to_logits(member_proba) - self.mean_) / self.scale_
        proba = 1.0 / (1.0 + np.exp(-(X @ self.coef_.T + self.intercept_)))
        if self.meta_learner == "lgbm":
            for j, booster in enumerate(self.boosters_):
                if booster is not None:
                    proba[:, j] = booster.predict(X[:, feature_columns(j, self.n_members_, self.features)])
        return proba.astype(np.float32)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        params = {"meta_learner": self.meta_learner, "C": self.C, "random_state": self.random_state, "features": self.features, "n_members": self.n_members_}
        if self.meta_learner != "mean":
            save_tensors(path / "stacker.safetensors", {"coef": self.coef_, "intercept": self.intercept_, "mean": self.mean_, "scale": self.scale_})
        if self.meta_learner == "lgbm":
            params["lgbm_models"] = [None if b is None else f"stacker_lgbm_{j}.txt" for j, b in enumerate(self.boosters_)]
            for j, booster in enumerate(self.boosters_):
                if booster is not None:
                    (path / f"stacker_lgbm_{j}.txt").write_text(booster.model_to_string(), encoding="utf-8")
        write_json(path / "stacker.json", params)

    @classmethod
    def load(cls, path: str | Path) -> Stacker:
        path = Path(path)
        params = read_json(path / "stacker.json")
        # Stackers saved before ``features`` existed read all members' logits of all emotions.
        stacker = cls(params["meta_learner"], params["C"], params["random_state"], params.get("features", "all"))
        stacker.n_members_ = params["n_members"]
        if stacker.meta_learner != "mean":
            arrays = load_tensors(path / "stacker.safetensors")
            stacker.coef_, stacker.intercept_ = arrays["coef"], arrays["intercept"]
            stacker.mean_, stacker.scale_ = arrays["mean"], arrays["scale"]
        if stacker.meta_learner == "lgbm":
            import lightgbm

            stacker.boosters_ = [None if name is None else lightgbm.Booster(model_str=(path / name).read_text(encoding="utf-8"))
                                 for name in params["lgbm_models"]]
        return stacker


def stacker_oof(stacker: Stacker, member_proba: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """The stacker's own out-of-fold probabilities: refit on all folds but one, predict that one."""

    oof = np.zeros(labels.shape, dtype=np.float32)
    for k in np.unique(folds):
        train, val = folds != k, folds == k
        model = stacker.clone().fit(member_proba[train], labels[train])
        oof[val] = model.predict_proba(member_proba[val])
    return oof
