"""Stacker options: which member columns each emotion's meta-learner reads, and their save format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedensemble.config import EnsembleConfig
from embedensemble.errors import ConfigError
from embedensemble.labels import N_LABELS
from embedensemble.stacker import Stacker, feature_columns, stacker_oof
from embedensemble.stacking import nested_threshold_predictions
from embedensemble.thresholds import ThresholdOptimizer


def _member_proba(n: int = 300, members: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Members whose probability of emotion j is a noisy copy of label j."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, N_LABELS)) < 0.3).astype(int)
    noise = rng.normal(0, 1.0, (n, members, N_LABELS))
    proba = 1 / (1 + np.exp(-(2.0 * (labels[:, None, :] - 0.5) + noise)))
    return proba, labels


def test_same_emotion_reads_only_that_emotions_columns() -> None:
    proba, labels = _member_proba()
    stacker = Stacker(features="same_emotion").fit(proba, labels)
    for j in range(N_LABELS):
        outside = np.setdiff1d(np.arange(3 * N_LABELS), feature_columns(j, 3, "same_emotion"))
        assert np.all(stacker.coef_[j, outside] == 0)
        assert np.all(stacker.coef_[j, feature_columns(j, 3, "same_emotion")] > 0)  # every member's own column helps
    # Scrambling other emotions' columns cannot change an emotion's prediction; with "all" it does.
    scrambled = proba.copy()
    scrambled[:, :, 1:] = np.random.default_rng(1).permutation(scrambled[:, :, 1:])
    assert np.allclose(stacker.predict_proba(scrambled)[:, 0], stacker.predict_proba(proba)[:, 0])
    full = Stacker(features="all").fit(proba, labels)
    assert not np.allclose(full.predict_proba(scrambled)[:, 0], full.predict_proba(proba)[:, 0])


def test_same_emotion_stacker_beats_chance_out_of_fold() -> None:
    proba, labels = _member_proba(n=400)
    folds = np.arange(len(labels)) % 4
    oof = stacker_oof(Stacker(features="same_emotion"), proba, labels, folds)
    predicted = nested_threshold_predictions(ThresholdOptimizer(), oof, labels, folds)
    f1 = [2 * (predicted[:, j] & labels[:, j]).sum() / (predicted[:, j].sum() + labels[:, j].sum()) for j in range(N_LABELS)]
    assert np.mean(f1) > 0.8


def test_stacker_oof_refits_with_the_same_features() -> None:
    proba, labels = _member_proba()
    folds = np.arange(len(labels)) % 3
    oof = stacker_oof(Stacker(features="same_emotion"), proba, labels, folds)
    held = folds == 0
    manual = Stacker(features="same_emotion").fit(proba[~held], labels[~held]).predict_proba(proba[held])
    assert np.allclose(oof[held], manual)
    assert not np.allclose(oof[held], Stacker(features="all").fit(proba[~held], labels[~held]).predict_proba(proba[held]))


@pytest.mark.parametrize("features", ["all", "same_emotion"])
def test_save_load_round_trip(tmp_path, features: str) -> None:
    proba, labels = _member_proba()
    stacker = Stacker(features=features, C=0.5).fit(proba, labels)
    stacker.save(tmp_path)
    assert json.loads((tmp_path / "stacker.json").read_text())["features"] == features
    loaded = Stacker.load(tmp_path)
    assert loaded.features == features and loaded.C == 0.5
    assert np.array_equal(loaded.predict_proba(proba), stacker.predict_proba(proba))


def test_stacker_saved_before_the_option_loads_as_all(tmp_path) -> None:
    proba, labels = _member_proba()
    Stacker(features="all").fit(proba, labels).save(tmp_path)
    params = json.loads((tmp_path / "stacker.json").read_text())
    del params["features"]
    (tmp_path / "stacker.json").write_text(json.dumps(params))
    assert Stacker.load(tmp_path).features == "all"


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ValueError, match="features"):
        Stacker(features="diagonal")
    with pytest.raises(ValueError, match="meta_learner"):
        Stacker(meta_learner="forest")
    with pytest.raises(ConfigError, match="meta_features"):
        EnsembleConfig.from_dict({"stack": {"meta_features": "diagonal"}})
    assert EnsembleConfig.from_dict({"stack": {"meta_features": "same_emotion"}}).stack.meta_features == "same_emotion"


def test_nested_thresholds_use_the_optimizers_smoothing() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random((200, N_LABELS)) < 0.2).astype(int)
    proba = np.clip(labels * 0.3 + rng.random(labels.shape) * 0.7, 0, 1)
    folds = np.arange(200) % 2
    for smoothing in (0, 3):
        optimizer = ThresholdOptimizer(smoothing=smoothing)
        expected = np.zeros(labels.shape, dtype=np.int8)
        for k in (0, 1):
            inside = folds == k
            expected[inside] = ThresholdOptimizer(smoothing=smoothing).fit(proba[~inside], labels[~inside]).predict(proba[inside])
        assert np.array_equal(nested_threshold_predictions(optimizer, proba, labels, folds), expected)


def test_lgbm_meta_learner_learns_and_round_trips_in_lightgbm_text_format(tmp_path) -> None:
    proba, labels = _member_proba(n=400)
    labels[:, 10] = 0  # an emotion without positives: a constant, no booster
    folds = np.arange(len(labels)) % 4
    oof = stacker_oof(Stacker("lgbm", features="same_emotion"), proba, labels, folds)
    predicted = nested_threshold_predictions(ThresholdOptimizer(), oof, labels, folds)
    f1 = [2 * (predicted[:, j] & labels[:, j]).sum() / (predicted[:, j].sum() + labels[:, j].sum()) for j in range(N_LABELS - 1)]
    assert np.mean(f1) > 0.8
    stacker = Stacker("lgbm", features="all").fit(proba, labels)
    assert stacker.boosters_[10] is None and np.all(stacker.predict_proba(proba)[:, 10] < 0.01)
    stacker.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl")) and (tmp_path / "stacker_lgbm_0.txt").read_text().startswith("tree")
    loaded = Stacker.load(tmp_path)
    assert np.array_equal(loaded.predict_proba(proba), stacker.predict_proba(proba))
    assert EnsembleConfig.from_dict({"stack": {"meta_learner": "lgbm"}}).stack.meta_learner == "lgbm"
