"""Expected-Jaccard decoding: exact expectation, the top-k shortcut, and its place in ThresholdOptimizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedensemble.config import StackConfig
from embedensemble.errors import ConfigError
from embedensemble.jaccard_decoding import decode_expected_jaccard, expected_jaccard
from embedensemble.labels import N_LABELS
from embedensemble.metrics import jaccard
from embedensemble.thresholds import ThresholdOptimizer

ALL_SETS = ((np.arange(2**N_LABELS)[:, None] >> np.arange(N_LABELS)) & 1).astype(np.float64)


def _random_proba(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-rng.normal(-1.0, 2.0, size=(n, N_LABELS))))


def test_expectation_matches_sampling() -> None:
    proba = _random_proba(3, 0)
    candidates = ALL_SETS[[0, 1, 5, 1023, 2047]][None].repeat(3, axis=0)
    exact = expected_jaccard(proba, candidates)
    rng = np.random.default_rng(1)
    gold = (rng.random((40_000, 3, N_LABELS)) < proba).astype(int)
    for i in range(3):
        for c in range(candidates.shape[1]):
            guess = np.broadcast_to(candidates[i, c].astype(int), (len(gold), N_LABELS))
            assert exact[i, c] == pytest.approx(jaccard(gold[:, i], guess), abs=0.01)


def test_top_k_sets_are_optimal_among_all_sets() -> None:
    proba = _random_proba(12, 2)
    best_any = expected_jaccard(proba, ALL_SETS[None].repeat(len(proba), axis=0)).max(axis=1)
    chosen = decode_expected_jaccard(proba)
    assert np.allclose(expected_jaccard(proba, chosen[:, None, :].astype(float))[:, 0], best_any)


def test_obvious_cases() -> None:
    proba = np.full((3, N_LABELS), 0.01)
    proba[1, 4] = 0.95
    proba[2, [0, 2]] = 0.9
    assert decode_expected_jaccard(proba).tolist() == (proba > 0.5).astype(int).tolist()  # row 0: the empty set


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="shape"):
        decode_expected_jaccard(np.zeros((2, 3)))


def test_optimizer_decision_and_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random((200, N_LABELS)) < 0.3).astype(int)
    proba = np.clip(labels * 0.5 + rng.random(labels.shape) * 0.5, 0, 1)
    auto = ThresholdOptimizer("jaccard").fit(proba, labels)
    assert auto.decision == "expected_jaccard"
    assert ThresholdOptimizer("macro_f1").decision == "thresholds"
    assert np.array_equal(auto.predict(proba), decode_expected_jaccard(proba))
    thresholded = ThresholdOptimizer("jaccard", decision="thresholds").fit(proba, labels)
    assert np.array_equal(thresholded.predict(proba), (proba >= thresholded.thresholds_).astype(int))
    auto.save(tmp_path / "t.json")
    assert np.array_equal(ThresholdOptimizer.load(tmp_path / "t.json").predict(proba), auto.predict(proba))
    # A file written before ``decision`` existed keeps thresholding.
    data = json.loads((tmp_path / "t.json").read_text())
    del data["params"]["decision"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert ThresholdOptimizer.load(tmp_path / "old.json").decision == "thresholds"


def test_stack_config_decision() -> None:
    with pytest.raises(ConfigError, match="stack.decision"):
        StackConfig(decision="argmax")
    assert ThresholdOptimizer.from_stack(StackConfig(objective="jaccard")).decision == "expected_jaccard"
    assert ThresholdOptimizer.from_stack(StackConfig(objective="jaccard", decision="thresholds")).decision == "thresholds"
    # Another objective than the config's (``stack --objective``) uses that objective's own rule.
    assert ThresholdOptimizer.from_stack(StackConfig(decision="thresholds"), "jaccard").decision == "expected_jaccard"


def test_expected_jaccard_decoding_skips_the_threshold_search_it_never_applies(monkeypatch) -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random((120, N_LABELS)) < 0.3).astype(int)
    proba = np.clip(labels * 0.4 + rng.random(labels.shape) * 0.6, 0, 1)
    f1_thresholds = ThresholdOptimizer("macro_f1").fit(proba, labels).thresholds_
    monkeypatch.setattr(ThresholdOptimizer, "_coordinate_ascent", lambda *a: pytest.fail("searched thresholds"))
    decoding = ThresholdOptimizer("jaccard").fit(proba, labels)
    assert np.array_equal(decoding.thresholds_, f1_thresholds)  # reported, per-emotion F1 ones
    with pytest.raises(pytest.fail.Exception, match="searched"):
        ThresholdOptimizer("jaccard", decision="thresholds").fit(proba, labels)
