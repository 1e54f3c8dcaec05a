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


def test_evaluate_matches_sklearn() -> None:
    t, p = _rand(200, seed=3)
    out = evaluate(t, p)
    assert out["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    assert out["micro_f1"] == pytest.approx(f1_score(t, p, average="micro", zero_division=0))
    assert out["per_emotion_f1"]["joy"] == pytest.approx(f1_score(t[:, 4], p[:, 4], zero_division=0))
    assert out["subset_accuracy"] == pytest.approx(np.mean((t == p).all(axis=1)))


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


def test_objective_score() -> None:
    t, p = _rand(80, seed=5)
    out = evaluate(t, p)
    for name in ("macro_f1", "micro_f1", "jaccard"):
        assert objective_score(name, t, p) == pytest.approx(out[name])
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
