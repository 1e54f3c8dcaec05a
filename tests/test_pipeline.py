"""Cross-fitting, stacking, thresholds and the EmotionEnsemble, with a tiny in-process member."""

import json
import pickle

import numpy as np
import pytest

from embedensemble import EmotionEnsemble, EnsembleConfig
from embedensemble.config import CVConfig, MemberConfig
from embedensemble.cv import cross_fit, make_folds
from embedensemble.data import load_dataset
from embedensemble.errors import ArtifactError, FormatVersionError, UnsafeArtifactError
from embedensemble.fileio import read_json, write_json
from embedensemble.fitting import fit_members
from embedensemble.stacking import stack_run
from embedensemble.thresholds import ThresholdOptimizer
from embedensemble.training import fit_ensemble

from . import simple_member
from .synthetic import make_tweets, write_kaggle, write_semeval


def bow_config(n_members=2, **kw):
    members = [MemberConfig(name=f"bow{i}", kind="test-bow", features="words") for i in range(n_members)]
    return EnsembleConfig(name="t", members=members, cv=CVConfig(n_folds=3), **kw)


def test_folds_are_stratified_and_cover_every_row():
    _, labels = make_tweets(300)
    folds = make_folds(labels, CVConfig(n_folds=5))
    assert sorted(np.unique(folds)) == list(range(5))
    per_fold = np.array([labels[folds == k].mean(0) for k in range(5)])
    assert np.abs(per_fold - labels.mean(0)).max() < 0.06
    holdout = make_folds(labels, CVConfig(holdout_fraction=0.25), "holdout")
    assert abs((holdout == 0).mean() - 0.25) < 0.02 and set(np.unique(holdout)) == {-1, 0}


def test_cross_fit_no_row_predicts_itself(tmp_path):
    splits = load_dataset(write_kaggle(tmp_path / "d"))
    folds = make_folds(splits.train.labels, CVConfig(n_folds=4))
    simple_member.TRAINED_ON.clear()
    result = cross_fit(MemberConfig(name="b", kind="test-bow", features="w"), splits.train, folds, tmp_path / "m", predict_on={"test": splits.test.texts})
    assert len(simple_member.TRAINED_ON) == 4
    for k, seen in enumerate(simple_member.TRAINED_ON):
        held_out = {splits.train.texts[i] for i in np.flatnonzero(folds == k)}
        assert not held_out & seen
    assert not np.isnan(result.oof).any() and result.predictions["test"].shape == (40, 11)
    # A finished fold is never redone.
    simple_member.TRAINED_ON.clear()
    again = cross_fit(MemberConfig(name="b", kind="test-bow", features="w"), splits.train, folds, tmp_path / "m", predict_on={"test": splits.test.texts})
    assert simple_member.TRAINED_ON == [] and again.folds_fitted == 0
    np.testing.assert_array_equal(again.oof, result.oof)


def test_thresholds_maximise_f1_and_shrink_rare_labels():
    rng = np.random.default_rng(0)
    labels = (rng.random((2000, 11)) < 0.3).astype(int)
    proba = np.clip(labels * 0.35 + rng.random((2000, 11)) * 0.6, 0, 1)
    opt = ThresholdOptimizer(shrinkage=0.0).fit(proba, labels)
    f1_at_opt = opt.curves_.max(axis=1)
    grid_index = np.searchsorted(opt.grid, opt.thresholds_)
    assert np.all(opt.curves_[np.arange(11), grid_index] >= f1_at_opt - 0.02)
    assert np.all((opt.thresholds_ > 0.3) & (opt.thresholds_ < 0.7))
    rare = labels.copy()
    rare[:, 0] = 0
    rare[:5, 0] = 1
    shrunk = ThresholdOptimizer(shrinkage=1.0, prior_count=30).fit(proba, rare)
    free = ThresholdOptimizer(shrinkage=0.0).fit(proba, rare)
    pooled = ThresholdOptimizer(shrinkage=1.0, prior_count=1e9).fit(proba, rare).thresholds_[0]
    # Five positives give the rare label a threshold of its own far from the pooled one (no escape
    # when they coincide: the fixture must make them differ, or shrinkage would go untested).
    assert abs(free.thresholds_[0] - pooled) >= 0.1, (free.thresholds_[0], pooled)
    assert abs(shrunk.thresholds_[0] - pooled) < abs(free.thresholds_[0] - pooled)
    assert min(free.thresholds_[0], pooled) <= shrunk.thresholds_[0] <= max(free.thresholds_[0], pooled)


@pytest.mark.parametrize("objective", ["micro_f1", "jaccard"])
def test_other_objectives_do_not_lose_to_macro_thresholds(objective):
    # The threshold search itself (the Jaccard objective's default decision decodes per tweet instead,
    # which only pays on calibrated probabilities: tests/test_jaccard_decoding.py).
    from embedensemble.metrics import objective_score

    rng = np.random.default_rng(1)
    labels = (rng.random((500, 11)) < 0.25).astype(int)
    proba = np.clip(labels * 0.3 + rng.random((500, 11)) * 0.7, 0, 1)
    macro = ThresholdOptimizer("macro_f1", shrinkage=0).fit(proba, labels)
    other = ThresholdOptimizer(objective, shrinkage=0, decision="thresholds").fit(proba, labels)
    assert objective_score(objective, labels, other.predict(proba)) >= objective_score(objective, labels, macro.predict(proba)) - 1e-9


def test_fit_stack_save_load_round_trip(tmp_path):
    splits = load_dataset(write_semeval(tmp_path / "d", n_train=240))
    run = fit_members(bow_config(), splits.train, tmp_path / "run", test=splits.test, eval=splits.eval)
    ensemble = stack_run(run, write_report=False)
    metrics = read_json(run / "metrics.json")
    assert set(metrics["members"]) == {"bow0", "bow1"}
    assert metrics["stack"]["eval"]["macro_f1"] > 0.5  # synthetic cues are learnable
    assert (run / "submission.csv").read_text().count("\n") == len(splits.test) + 1
    proba = ensemble.predict_proba(splits.eval.texts)
    reloaded = EmotionEnsemble.load(run / "ensemble")
    np.testing.assert_array_equal(reloaded.predict_proba(splits.eval.texts).to_numpy(), proba.to_numpy())
    assert list(reloaded.predict(["so happy and cheerful today"]).columns)[0] == "anger"
    saved = ensemble.save(tmp_path / "copy")
    np.testing.assert_array_equal(EmotionEnsemble.load(saved).predict(splits.eval.texts).to_numpy(), reloaded.predict(splits.eval.texts).to_numpy())
    # The submission is exactly what the loaded ensemble predicts for the test tweets.
    sub = np.loadtxt(run / "submission.csv", delimiter=",", skiprows=1, usecols=range(1, 12), dtype=int)
    np.testing.assert_array_equal(sub, reloaded.predict(splits.test.texts).to_numpy())
    assert reloaded.predict([]).shape == (0, 11)
    # One member alone (how benchmarks time a member) is that member's column of all members.
    every = reloaded.member_proba(splits.eval.texts)
    np.testing.assert_array_equal(reloaded.member_proba(splits.eval.texts, members=["bow1"])[:, 0], every[:, 1])
    with pytest.raises(ValueError, match=r"no member\(s\) \['nope'\]"):
        reloaded.member_proba(["x"], members=["nope"])


def test_rerun_fit_recomputes_nothing(tmp_path):
    splits = load_dataset(write_kaggle(tmp_path / "d"))
    fit_members(bow_config(), splits.train, tmp_path / "run", test=splits.test)
    simple_member.TRAINED_ON.clear()
    fit_members(bow_config(), splits.train, tmp_path / "run", test=splits.test)
    assert simple_member.TRAINED_ON == []
    status = read_json(tmp_path / "run" / "members" / "bow0" / "member.json")
    assert status["status"] == "done"


def test_run_with_other_data_is_refused(tmp_path):
    a = load_dataset(write_kaggle(tmp_path / "a", seed=0))
    b = load_dataset(write_kaggle(tmp_path / "b", seed=5))
    fit_members(bow_config(1), a.train, tmp_path / "run")
    with pytest.raises(ArtifactError, match="different data"):
        fit_members(bow_config(1), b.train, tmp_path / "run")


@pytest.fixture()
def saved_ensemble(tmp_path):
    splits = load_dataset(write_kaggle(tmp_path / "d"))
    run = fit_members(bow_config(1), splits.train, tmp_path / "run")
    stack_run(run, write_report=False)
    return run / "ensemble"


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/embedensemble-pwned",))


def test_planted_pickle_is_refused_without_running(saved_ensemble, tmp_path):
    import os

    marker = "/tmp/embedensemble-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    (saved_ensemble / "members" / "bow0" / "fold_0" / "weights.safetensors").unlink()
    (saved_ensemble / "members" / "bow0" / "fold_0" / "extra.json").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        EmotionEnsemble.load(saved_ensemble)
    assert not os.path.exists(marker)


def test_tampered_or_unlisted_files_are_refused(saved_ensemble):
    thresholds = saved_ensemble / "thresholds.json"
    thresholds.write_text(thresholds.read_text().replace("0.", "0.0", 1))
    with pytest.raises(UnsafeArtifactError, match="checksum"):
        EmotionEnsemble.load(saved_ensemble)


def test_unlisted_file_refused(saved_ensemble):
    (saved_ensemble / "notes.txt").write_text("hello")
    with pytest.raises(UnsafeArtifactError, match="not listed"):
        EmotionEnsemble.load(saved_ensemble)


@pytest.mark.parametrize("version", [0, 99])
def test_other_format_versions_get_a_clear_message(saved_ensemble, version):
    manifest = read_json(saved_ensemble / "manifest.json")
    manifest["format_version"] = version
    write_json(saved_ensemble / "manifest.json", manifest)
    with pytest.raises(FormatVersionError, match=f"format version {version}"):
        EmotionEnsemble.load(saved_ensemble)


def test_not_an_ensemble_folder(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        EmotionEnsemble.load(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        EmotionEnsemble.load(tmp_path)


def test_unfitted_ensemble_says_so():
    with pytest.raises(ArtifactError, match="not fitted"):
        EmotionEnsemble().predict(["hello"])


def test_config_round_trip_and_unknown_keys(tmp_path):
    from embedensemble.errors import ConfigError

    config = bow_config()
    config.save(tmp_path / "c.json")
    assert EnsembleConfig.load(tmp_path / "c.json") == config
    data = config.to_dict()
    data["members"][0]["heads"] = "logreg"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"members\[0\].*unknown key.*heads"):
        EnsembleConfig.load(tmp_path / "bad.json")


def test_fit_from_texts_and_labels(tmp_path):
    texts, labels = make_tweets(90)
    ensemble = fit_ensemble(bow_config(1), texts, labels, run_dir=tmp_path / "run")
    assert ensemble.predict(texts[:3]).shape == (3, 11)


@pytest.mark.parametrize(
    "labels, fragment",
    [
        (None, "needs labels"),
        (np.zeros((5, 11)), "shape"),
        (np.full((90, 11), 2), "must be 0 or 1"),
    ],
)
def test_fit_bad_labels(tmp_path, labels, fragment):
    from embedensemble.errors import DataError

    texts, _ = make_tweets(90)
    with pytest.raises(DataError, match=fragment):
        fit_ensemble(bow_config(1), texts, labels, run_dir=tmp_path / "run")


def test_fit_unlabelled_corpus_is_refused(tmp_path):
    from embedensemble.errors import DataError

    splits = load_dataset(write_kaggle(tmp_path / "d"))
    with pytest.raises(DataError, match="no labels"):
        fit_ensemble(bow_config(1), splits.test)
