"""One decision threshold per emotion, chosen on out-of-fold probabilities.

Guards against over-fitting rare emotions, whose F1-vs-threshold curve is jagged:
a coarse grid, a smoothed curve (moving average over neighbouring grid points), and
shrinkage of each emotion's threshold toward the threshold that is best for all
emotions pooled, weighted by ``prior_count / (prior_count + n_positives)``.

``decision="expected_jaccard"`` (the default for the Jaccard objective, see ``metrics.DECISIONS``) replaces the
thresholds at prediction time by each tweet's label set of highest expected Jaccard
(:mod:`embedensemble.jaccard_decoding`); the thresholds are still fitted and saved, for reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError
from .fileio import read_json, write_json
from .labels import EMOTIONS, N_LABELS
from .metrics import OBJECTIVES, f1_threshold_curve, objective_score, resolve_decision

if TYPE_CHECKING:
    from .config import StackConfig


def _smooth(curve: np.ndarray, width: int) -> np.ndarray:
    if width <= 0:
        return curve
    padded = np.pad(curve, width, mode="edge")
    return np.convolve(padded, np.ones(2 * width + 1) / (2 * width + 1), mode="valid")


class ThresholdOptimizer:
    """Fit per-emotion thresholds maximising ``objective`` (macro_f1, micro_f1 or jaccard)."""

    def __init__(
        self,
        objective: str = "macro_f1",
        step: float = 0.02,
        shrinkage: float = 1.0,
        prior_count: float = 30.0,
        smoothing: int = 1,
        decision: str = "auto",
    ) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective {objective!r} is not one of {list(OBJECTIVES)}")
        self.objective = objective
        self.step = step
        self.shrinkage = shrinkage
        self.prior_count = prior_count
        self.smoothing = smoothing
        self.decision = resolve_decision(decision, objective)

    @classmethod
    def from_stack(cls, stack: StackConfig, objective: str | None = None, decision: str | None = None) -> ThresholdOptimizer:
        """The unfitted optimizer a config's ``stack`` section describes (``objective``, ``decision`` override its own).

        Another objective than the config's gets that objective's own rule unless ``decision`` is given."""
        objective = objective or stack.objective
        decision = decision or (stack.decision if objective == stack.objective else "auto")
        return cls(objective, stack.threshold_step, stack.threshold_shrinkage, stack.threshold_prior_count, decision=decision)

    def clone(self) -> ThresholdOptimizer:
        """An unfitted optimizer with the same parameters."""
        return ThresholdOptimizer(self.objective, self.step, self.shrinkage, self.prior_count, self.smoothing, self.decision)

    @property
    def grid(self) -> np.ndarray:
        return np.round(np.arange(self.step, 1.0, self.step), 6)

    def fit(self, proba: np.ndarray, labels: np.ndarray) -> ThresholdOptimizer:
        proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels).astype(int)
        grid = self.grid
        self.curves_ = np.stack([f1_threshold_curve(labels[:, j], proba[:, j], grid) for j in range(N_LABELS)])
        smoothed = np.stack([_smooth(c, self.smoothing) for c in self.curves_])
        pooled = grid[int(np.argmax(smoothed.mean(0)))]
        own = grid[np.argmax(smoothed, axis=1)]
        weight = self.shrinkage * self.prior_count / (self.prior_count + labels.sum(0))
        thresholds = own + np.clip(weight, 0, 1) * (pooled - own)
        # Expected-Jaccard decoding uses no thresholds: they stay the per-emotion F1 ones (reported, never applied)
        # rather than paying for a coordinate ascent whose result nothing reads.
        if self.objective != "macro_f1" and self.decision != "expected_jaccard":
            thresholds = self._coordinate_ascent(proba, labels, thresholds)
        self.thresholds_ = np.round(thresholds, 4)
        return self

    def _coordinate_ascent(self, proba: np.ndarray, labels: np.ndarray, start: np.ndarray) -> np.ndarray:
        # micro-F1 and Jaccard couple the labels, so improve one threshold at a time.
        thresholds = start.copy()
        for _ in range(2):
            for j in range(N_LABELS):
                scores = []
                for t in self.grid:
                    trial = thresholds.copy()
                    trial[j] = t
                    scores.append(objective_score(self.objective, labels, (proba >= trial).astype(int)))
                thresholds[j] = self.grid[int(np.argmax(scores))]
        return thresholds

    def predict(self, proba: np.ndarray) -> np.ndarray:
        if self.decision == "expected_jaccard":
            from .jaccard_decoding import decode_expected_jaccard

            return decode_expected_jaccard(proba)
        return (np.asarray(proba) >= self.thresholds_).astype(np.int8)

    def to_dict(self) -> dict:
        return {
            "objective": self.objective,
            "thresholds": dict(zip(EMOTIONS, map(float, self.thresholds_))),
            "params": {"step": self.step, "shrinkage": self.shrinkage, "prior_count": self.prior_count, "smoothing": self.smoothing,
                       "decision": self.decision},
        }

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ThresholdOptimizer:
        data = read_json(path)
        # Files saved before ``decision`` existed always thresholded.
        optimizer = cls(data["objective"], **{"decision": "thresholds", **data["params"]})
        optimizer.thresholds_ = np.array([data["thresholds"][e] for e in EMOTIONS])
        return optimizer
