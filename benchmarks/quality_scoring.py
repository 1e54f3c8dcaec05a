"""Nested scores of stacks over subsets of one run's members (the ``quality`` benchmark's yardstick), and the gain rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .ablation import METRICS, _kept_rows, _library_stacker, _member_oof, nested_scores, stack_oof

MIN_GAIN = 0.003
TARGETS = {"macro_f1": 0.62, "jaccard": 0.62, "micro_f1_with_jaccard": 0.72, "cold_minutes": 90}
STACKERS = {"logreg": {"features": "same_emotion"}, "lgbm": {"meta_learner": "lgbm", "features": "all"}}


class Scorer:
    """Nested scores of stacks over subsets of one run's members, on the kept rows, per meta seed (memoised)."""

    def __init__(self, run: Path, meta_seeds: list[int], held_out: Path | None) -> None:
        from embedensemble.config import CVConfig
        from embedensemble.cv import make_folds
        from embedensemble.fileio import read_json

        self.names = [m["name"] for m in read_json(run / "config.json")["members"]]
        keep, self.dev_rows_removed = _kept_rows(run, held_out)
        self.proba = _member_oof(run, self.names)[keep]
        self.labels = np.load(run / "train_labels.npy")[keep].astype(int)
        self.run_folds = np.load(run / "folds_kfold.npy")[keep]
        self.meta_folds = [make_folds(self.labels, CVConfig(seed=s)) for s in meta_seeds]
        self._memo: dict[tuple, list[dict[str, float]]] = {}

    def member(self, name: str) -> dict[str, float]:
        return nested_scores(self.proba[:, self.names.index(name)], self.labels, self.run_folds, {})

    def stack(self, members: list[str], stacker: str = "logreg", objective: str = "macro_f1", decision: str = "auto") -> list[dict[str, Any]]:
        key = (tuple(sorted(members)), stacker, objective, decision)
        if key not in self._memo:
            cols = [self.names.index(m) for m in members]
            fit_predict = _library_stacker(**STACKERS[stacker])
            self._memo[key] = [
                nested_scores(stack_oof(fit_predict, self.proba[:, cols], self.labels, folds), self.labels, folds, {"decision": decision}, objective)
                for folds in self.meta_folds
            ]
        return self._memo[key]


def _mean(scores: list[dict[str, Any]], metric: str = "macro_f1") -> float:
    return float(np.mean([s[metric] for s in scores]))


def _gains(better: list[dict[str, Any]], base: list[dict[str, Any]], metric: str = "macro_f1") -> list[float]:
    return [b[metric] - a[metric] for b, a in zip(better, base)]


def _passes(gains: list[float]) -> bool:
    return float(np.mean(gains)) >= MIN_GAIN and min(gains) > 0


def _summary(scores: list[dict[str, Any]]) -> dict[str, Any]:
    return {m: {"mean": round(_mean(scores, m), 4), "sd": round(float(np.std([s[m] for s in scores], ddof=1)), 4) if len(scores) > 1 else None,
                "per_meta_seed": [round(s[m], 4) for s in scores]} for m in METRICS}


def nested_scores_row(scores: dict[str, Any]) -> dict[str, float]:
    return {m: round(float(scores[m]), 4) for m in METRICS}
