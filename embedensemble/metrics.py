"""Multi-label metrics for the 11-emotion task (SemEval-2018 Task 1 E-c).

``evaluate`` returns one plain, JSON-serialisable dict so that ``metrics.json`` can store it
as is. Callers drop rows without predictions (NaN OOF rows in holdout mode) before calling:
a NaN here is a bug upstream, so it raises instead of being silently thresholded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .labels import EMOTIONS, N_LABELS

# The scores a threshold or a stacker can be chosen on (stack.objective, --objective): the one list.
OBJECTIVES: tuple[str, ...] = ("macro_f1", "micro_f1", "jaccard")
# How 0/1 predictions are made from probabilities. "auto": expected_jaccard for the Jaccard objective,
# thresholds otherwise (Jaccard +0.008 over Jaccard-tuned thresholds on Kaggle train OOF: docs/quality.md).
DECISIONS = ("auto", "thresholds", "expected_jaccard")


def resolve_decision(decision: str, objective: str) -> str:
    """``"auto"`` -> the decision rule used for ``objective``; anything else is checked and returned."""
    if decision not in DECISIONS:
        raise ConfigError(f"decision {decision!r} is not one of {list(DECISIONS)}")
    if decision == "auto":
        return "expected_jaccard" if objective == "jaccard" else "thresholds"
    return decision


def _as_binary(name: str, y: Any) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 2 or arr.shape[1] != N_LABELS:
        raise DataError(f"{name} must have shape [n, {N_LABELS}], got {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise DataError(f"{name} has no rows; there is nothing to evaluate")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        bad = int(np.flatnonzero(np.isnan(arr).any(axis=1))[0])
        raise DataError(f"{name} contains NaN (first at row {bad}); drop rows without predictions before evaluating")
    if not np.isin(arr, (0, 1)).all():
        raise DataError(f"{name} must contain only 0/1 values (threshold probabilities first)")
    return arr.astype(np.int8, copy=False)


def _check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _as_binary("y_true", y_true)
    p = _as_binary("y_pred", y_pred)
    if t.shape != p.shape:
        raise DataError(f"y_true has shape {list(t.shape)} but y_pred has {list(p.shape)}")
    return t, p


def jaccard(y_true: Any, y_pred: Any) -> float:
    """SemEval-2018 E-c "accuracy": mean over tweets of |T ∩ P| / |T ∪ P|.

    A tweet with no gold emotion and no predicted emotion counts as 1 (a perfect answer),
    not 0 and not skipped; sklearn's ``jaccard_score(average="samples")`` scores it 0
    under ``zero_division=0``, hence the hand-written version.
    """
    t, p = _check_pair(y_true, y_pred)
    return _jaccard(t.astype(bool), p.astype(bool))


def _jaccard(t: np.ndarray, p: np.ndarray) -> float:
    inter = (t & p).sum(axis=1)
    union = (t | p).sum(axis=1)
    per_row = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(per_row.mean())


def evaluate(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """Score 0/1 predictions against 0/1 gold labels, both shaped [n, 11].

    Returns ``macro_f1``, ``micro_f1``, ``jaccard`` (see :func:`jaccard`), ``subset_accuracy``
    (exact-match ratio), ``per_emotion_f1`` ({emotion: f1}) and ``n`` (rows). F1 of a label
    with neither gold nor predicted positives is 0 (sklearn ``zero_division=0``), matching
    the official scorer's macro average.
    """
    from sklearn.metrics import f1_score

    t, p = _check_pair(y_true, y_pred)
    per_label = f1_score(t, p, average=None, zero_division=0)
    return {
        "macro_f1": float(np.mean(per_label)),
        "micro_f1": float(f1_score(t, p, average="micro", zero_division=0)),
        "jaccard": _jaccard(t.astype(bool), p.astype(bool)),
        "subset_accuracy": float((t == p).all(axis=1).mean()),
        "per_emotion_f1": {emo: float(f) for emo, f in zip(EMOTIONS, per_label, strict=True)},
        "n": int(t.shape[0]),
    }


def objective_score(name: str, y_true: Any, y_pred: Any) -> float:
    """One scalar to maximise: ``"macro_f1"``, ``"micro_f1"`` or ``"jaccard"``."""
    if name not in OBJECTIVES:
        raise DataError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    t, p = _check_pair(y_true, y_pred)
    if name == "jaccard":
        return _jaccard(t.astype(bool), p.astype(bool))
    from sklearn.metrics import f1_score

    return float(f1_score(t, p, average=name.split("_")[0], zero_division=0))


def f1_threshold_curve(y_true: Any, proba: Any, thresholds: Any) -> np.ndarray:
    """F1 of one label at each threshold (predict positive when ``proba >= t``).

    Vectorised over thresholds so a 100-point curve for 11 labels costs one pass each;
    rows with NaN probabilities are dropped (they were never held out).
    """
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(proba, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"y_true has {y.size} values but proba has {s.size}")
    keep = ~np.isnan(s)
    y, s = y[keep], s[keep]
    grid = np.asarray(thresholds, dtype=np.float64).ravel()
    pred = s[None, :] >= grid[:, None]
    tp = (pred & y[None, :]).sum(axis=1)
    fp = (pred & ~y[None, :]).sum(axis=1)
    fn = y.sum() - tp
    denom = 2 * tp + fp + fn
    return np.where(denom == 0, 0.0, 2 * tp / np.maximum(denom, 1))
