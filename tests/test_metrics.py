from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from embedensemble.errors import DataError
from embedensemble.labels import EMOTIONS, N_LABELS
from embedensemble.metrics import evaluate, f1_threshold_curve, jaccard, objective_score


def _rand(n: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, (n, N_LABELS)).astype(np.int8), rng.integers(0, 2, (n, N_LABELS)).astype(np.int8)


def test_evaluate_keys_and_perfect_score() -> None:
    y, _ = _rand()
    out = evaluate(y, y)
    assert set(out) == {"macro_f1", "micro_f1", "jaccard", "subset_accuracy", "per_emotion_f1", "n"}
    assert out["micro_f1"] == out["jaccard"] == out["subset_accuracy"] == 1.0
    assert list(out["per_emotion_f1"]) == list(EMOTIONS)
    assert out["n"] == 50
    json.dumps(out)  # stored in metrics.json as is


def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    """Five tweets whose scores are worked out by hand below (labels 5-10 never occur)."""
    t = np.zeros((5, N_LABELS), dtype=np.int8)
    p = np.zeros((5, N_LABELS), dtype=np.int8)
    t[:, 0], p[:, 0] = [1, 1, 0, 0, 0], [1, 0, 1, 0, 0]  # anger: tp 1, fp 1, fn 1 -> F1 2/4
    t[:, 1], p[:, 1] = [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]  # anticipation: perfect -> 1
    # disgust (2): never gold, never predicted -> 0 (zero_division=0)
    t[:, 3] = [1, 0, 0, 0, 0]  # fear: one miss, nothing predicted -> 0
    t[:, 4], p[:, 4] = [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]  # joy: tp 2, fp 2 -> F1 4/6
    return t, p


# Hand-computed: macro = (1/2 + 1 + 0 + 0 + 2/3 + 6 * 0) / 11; micro over all labels: tp 6, fp 3, fn 2;
# Jaccard per tweet: {0,1,3,4} vs {0,1,4} = 3/4, {0,1,4} vs {1,4} = 2/3, {1} vs {0,1,4} = 1/3,
# {} vs {4} = 0, {} vs {} = 1; only the last tweet is an exact match.
HAND = {
    "macro_f1": (1 / 2 + 1 + 2 / 3) / 11,
    "micro_f1": 2 * 6 / (2 * 6 + 3 + 2),
    "jaccard": (3 / 4 + 2 / 3 + 1 / 3 + 0 + 1) / 5,
    "subset_accuracy": 1 / 5,
}


def test_evaluate_matches_hand_computed_scores() -> None:
    t, p = _hand_case()
    out = evaluate(t, p)
    for key, expected in HAND.items():
        assert out[key] == pytest.approx(expected), key
    assert out["n"] == 5
    expected_per_emotion = {e: 0.0 for e in EMOTIONS} | {"anger": 0.5, "anticipation": 1.0, "joy": 2 / 3}
    assert out["per_emotion_f1"] == pytest.approx(expected_per_emotion)


def test_jaccard_hand_computed_and_empty_rows_count_as_one() -> None:
    t = np.zeros((3, N_LABELS), dtype=np.int8)
    p = np.zeros((3, N_LABELS), dtype=np.int8)
    t[0, [0, 1]] = 1
    p[0, [1, 2]] = 1  # 1 / 3
    t[1, 4] = 1  # predicted nothing: 0
    # row 2: nothing gold, nothing predicted: 1
    assert jaccard(t, p) == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert evaluate(t, p)["jaccard"] == pytest.approx((1 / 3 + 0 + 1) / 3)


def test_zero_division_is_zero() -> None:
    t = np.zeros((4, N_LABELS), dtype=np.int8)
    out = evaluate(t, t)
    assert out["macro_f1"] == 0.0 and out["micro_f1"] == 0.0
    assert out["jaccard"] == 1.0 and out["subset_accuracy"] == 1.0


def test_objective_score_matches_hand_computed_scores() -> None:
    t, p = _hand_case()
    for name in ("macro_f1", "micro_f1", "jaccard"):
        assert objective_score(name, t, p) == pytest.approx(HAND[name]), name
    with pytest.raises(DataError, match="unknown objective"):
        objective_score("accuracy", t, p)


@pytest.mark.parametrize(
    "t, p, msg",
    [
        (np.zeros((3, 5)), np.zeros((3, 5)), "shape"),
        (np.zeros((3, N_LABELS)), np.zeros((4, N_LABELS)), "shape"),
        (np.zeros((3, N_LABELS)), np.full((3, N_LABELS), np.nan), "NaN"),
        (np.zeros((3, N_LABELS)), np.full((3, N_LABELS), 0.4), "0/1"),
        (np.zeros((0, N_LABELS)), np.zeros((0, N_LABELS)), "no rows"),
    ],
)
def test_bad_inputs_raise(t: np.ndarray, p: np.ndarray, msg: str) -> None:
    with pytest.raises(DataError, match=msg):
        evaluate(t, p)


def test_f1_threshold_curve_matches_sklearn_and_skips_nan() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    s = np.clip(y * 0.4 + rng.random(100) * 0.6, 0, 1)
    s_nan = np.concatenate([s, [np.nan, np.nan]])
    y_nan = np.concatenate([y, [1, 0]])
    grid = np.linspace(0.05, 0.95, 7)
    curve = f1_threshold_curve(y_nan, s_nan, grid)
    expected = [f1_score(y, (s >= g).astype(int), zero_division=0) for g in grid]
    np.testing.assert_allclose(curve, expected)


def test_f1_threshold_curve_hand_computed() -> None:
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.1, np.nan])  # the NaN row was never held out: dropped
    # t=0.05: all 4 positive -> tp 2, fp 2 -> 4/6; t=0.5: {0.9, 0.6} -> tp 1, fp 1, fn 1 -> 2/4;
    # t=0.95: nothing predicted -> 0
    np.testing.assert_allclose(f1_threshold_curve(y, s, [0.05, 0.5, 0.95]), [4 / 6, 2 / 4, 0.0])
