"""Per-tweet label sets that maximise the expected Jaccard score (SemEval-2018 E-c "accuracy").

Per-emotion thresholds cannot express what Jaccard rewards: it is scored per tweet, so whether
to add a second emotion depends on how sure the first one is. Given a tweet's 11 probabilities
``p`` (treated as independent Bernoulli marginals), the label set ``S`` that maximises

    E[J(T, S)] = sum over gold sets T of P(T) * |T & S| / |T | S|     (1 when T and S are both empty)

is one of the 12 "top-k" sets (the k most probable emotions, k = 0..11): swapping a less
probable emotion into S for a more probable one never lowers the expectation. The expectation
is exact: the 2^11 gold sets are enumerated. On Kaggle train OOF (quality config, nested, 3
meta seeds) this rule scored Jaccard +0.008 over thresholds tuned for Jaccard (docs/quality.md).
It trusts the probabilities as they are: a stacker's logistic outputs are roughly calibrated.
"""

from __future__ import annotations

import numpy as np

from .labels import N_LABELS

# Every gold label set as a 0/1 row: [2^11, 11] (bit j of the row index is emotion j).
_GOLD_SETS = ((np.arange(2**N_LABELS)[:, None] >> np.arange(N_LABELS)) & 1).astype(np.float64)
_EPS = 1e-6
_CHUNK = 256  # tweets per vectorised block: [256, 12, 2048] float64 is 48 MB


def _top_k_sets(proba: np.ndarray) -> np.ndarray:
    """[n, 12, 11]: for each tweet, the sets of its k most probable emotions, k = 0..11."""
    ranks = np.argsort(np.argsort(-proba, axis=1, kind="stable"), axis=1)  # 0 = most probable
    return (ranks[:, None, :] < np.arange(N_LABELS + 1)[None, :, None]).astype(np.float64)


def expected_jaccard(proba: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """[n, c]: expected Jaccard of each of ``candidates`` [n, c, 11] under independent marginals ``proba`` [n, 11]."""
    p = np.clip(np.asarray(proba, dtype=np.float64), _EPS, 1 - _EPS)
    prob = np.exp(np.log(p) @ _GOLD_SETS.T + np.log1p(-p) @ (1 - _GOLD_SETS).T)  # [n, 2^11]
    inter = candidates @ _GOLD_SETS.T  # [n, c, 2^11], as matrix products (BLAS), not einsum
    union = candidates.sum(2)[:, :, None] + _GOLD_SETS.sum(1) - inter
    score = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)  # both empty: 1
    return (score @ prob[:, :, None])[:, :, 0]


def decode_expected_jaccard(proba: np.ndarray) -> np.ndarray:
    """0/1 predictions [n, 11]: each tweet's label set with the highest expected Jaccard."""
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape[1] != N_LABELS:
        raise ValueError(f"probabilities must have shape [n, {N_LABELS}], got {list(proba.shape)}")
    p = np.clip(proba.astype(np.float64), _EPS, 1 - _EPS)
    predicted = np.zeros(p.shape, dtype=np.int8)
    for start in range(0, len(p), _CHUNK):
        block = p[start : start + _CHUNK]
        sets = _top_k_sets(block)
        best = expected_jaccard(block, sets).argmax(axis=1)
        predicted[start : start + _CHUNK] = sets[np.arange(len(block)), best]
    return predicted
