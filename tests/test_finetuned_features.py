"""Heads on a cross-fitted fine-tune's embeddings (``features: "finetuned:<source>"``): no leakage, save/load, config checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_semeval
from tiny_models import make_tiny_st_encoder

from embedensemble import EmotionEnsemble
from embedensemble.config import CVConfig, EnsembleConfig, MemberConfig, StackConfig
from embedensemble.data import Corpus, load_dataset
from embedensemble.errors import ConfigError
from embedensemble.fileio import load_array, read_json
from embedensemble.fitting import fit_members
from embedensemble.heads import Head
from embedensemble.members.base import MemberContext, check_requirements, load_member
from embedensemble.stacking import stack_run

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "tiny-ft"
SOURCE_PARAMS = {
    "adapter": "none",
    "lr": 2e-3,
    "max_steps": 4,
    "batch_size": 8,
    "warmup_ratio": 0.0,
    "save_every_steps": 1000,
    "predict_batch_size": 16,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(encoder: Path, cache: Path, **stack) -> EnsembleConfig:
    return EnsembleConfig(
        name="ft-features",
        members=[
            MemberConfig(name=SOURCE, kind="pooled-finetune", backbone=str(encoder), params=SOURCE_PARAMS),
            MemberConfig(name="ft-logreg", features=f"finetuned:{SOURCE}", head="logreg"),
            MemberConfig(
                name="ft-lgbm",
                features=f"finetuned:{SOURCE}",
                head="lgbm",
                head_params={"n_estimators": 15, "min_child_samples": 5, "num_leaves": 4},
            ),
        ],
        cv=CVConfig(n_folds=3),
        stack=StackConfig(**stack),
        cache_dir=str(cache),
        device="cpu",
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A fitted run (source + two dependent heads); records every head fit's features."""
    root = tmp_path_factory.mktemp("ftfeat")
    encoder = make_tiny_st_encoder(root / "encoder")
    splits = load_dataset(write_semeval(root / "data", n_train=60, n_dev=15, n_test=15, seed=3))
    config = _config(encoder, root / "cache", members=["ft-logreg", "ft-lgbm"])  # the source itself is not stacked
    fits: list[tuple[str, np.ndarray]] = []
    original = Head.fit

    def recording_fit(self, X, Y):
        fits.append((self.name, np.array(X)))
        return original(self, X, Y)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Head, "fit", recording_fit)
        run = fit_members(config, splits.train, root / "run", test=splits.test, eval=splits.eval)
        first = list(fits)
        fit_members(config, splits.train, root / "run", test=splits.test, eval=splits.eval)  # resumes: nothing to redo
    return {"run": run, "splits": splits, "config": config, "fits": first, "refits": fits[len(first) :]}


def test_train_rows_get_only_their_out_of_fold_embedding(fitted):
    run, train = fitted["run"], fitted["splits"].train
    source_dir = run / "members" / SOURCE
    folds = load_array(run / "folds_kfold.npy")
    oof = load_array(source_dir / "oof_embeddings.npy")
    context = MemberContext(device="cpu")
    by_model = [load_member(source_dir / f"fold_{m}", context).embed(train.texts) for m in range(3)]
    assert oof.shape == (len(train), by_model[0].shape[1])
    for i, fold in enumerate(folds):
        np.testing.assert_allclose(oof[i], by_model[fold][i], rtol=1e-5, atol=1e-6)  # the model that held row i out
        for m in set(range(3)) - {fold}:
            assert np.abs(oof[i] - by_model[m][i]).max() > 1e-3, (i, m)  # models that trained on row i differ
    # Fold k's head trained on exactly the OOF embeddings of the rows outside fold k ...
    logreg_fits = [X for name, X in fitted["fits"] if name == "logreg"]
    assert len(logreg_fits) == 3
    for k, X in enumerate(logreg_fits):
        np.testing.assert_array_equal(X, oof[folds != k])
    # ... and predicted fold k's rows from model k's embeddings of them.
    member_dir = run / "members" / "ft-logreg"
    member_oof = load_array(member_dir / "oof.npy")
    for k in range(3):
        head = load_member(member_dir / f"fold_{k}", context).head_
        np.testing.assert_allclose(member_oof[folds == k], head.predict_proba(by_model[k][folds == k]), rtol=1e-5, atol=1e-6)
    # The test split was embedded by every fold model.
    assert all((source_dir / f"test_embeddings_fold{m}.npy").is_file() for m in range(3))
    assert read_json(source_dir / "embeddings.json")["complete"]
    assert read_json(source_dir / "embeddings.json")["seconds"] > 0  # the pass's cost, for cold-time estimates


def test_refit_reuses_tables_and_folds(fitted):
    assert fitted["refits"] == []
    status = read_json(fitted["run"] / "members" / "ft-lgbm" / "member.json")
    assert (
        status["status"] == "done"
        and status["source_embeddings"] == read_json(fitted["run"] / "members" / SOURCE / "embeddings.json")["oof_sha256"]
    )


def test_stack_save_load_and_submission(fitted, tmp_path):
    run, splits = fitted["run"], fitted["splits"]
    ensemble = stack_run(run, write_report=False)
    assert ensemble.member_names == ["ft-logreg", "ft-lgbm"] and list(ensemble.dependency_folds_) == [SOURCE]
    manifest = read_json(run / "ensemble" / "manifest.json")
    assert [d["name"] for d in manifest["dependencies"]] == [SOURCE]
    assert (run / "ensemble" / "members" / SOURCE / "fold_2" / "backbone.safetensors").is_file()
    # Live embeddings of the test tweets give the probabilities cross-fitting stored.
    member_test = np.stack([load_array(run / "members" / n / "test.npy") for n in ensemble.member_names], axis=1)
    np.testing.assert_allclose(ensemble.member_proba(splits.test.texts), member_test, rtol=1e-5, atol=1e-6)
    proba = ensemble.predict_proba(splits.eval.texts).to_numpy()
    submission = np.loadtxt(run / "submission.csv", delimiter=",", skiprows=1, usecols=range(1, 12), dtype=int)
    np.testing.assert_array_equal(ensemble.predict(splits.test.texts).to_numpy(), submission)

    # A copy of the ensemble works without the run folder.
    alone = shutil.copytree(run / "ensemble", tmp_path / "alone")
    moved = run.rename(run.with_name(run.name + "-moved"))
    try:
        reloaded = EmotionEnsemble.load(alone)
        np.testing.assert_array_equal(reloaded.predict_proba(splits.eval.texts).to_numpy(), proba)
        np.testing.assert_array_equal(reloaded.predict(splits.test.texts).to_numpy(), submission)
        resaved = EmotionEnsemble.load(reloaded.save(tmp_path / "resaved"))
        np.testing.assert_array_equal(resaved.predict_proba(splits.eval.texts).to_numpy(), proba)
    finally:
        moved.rename(run)


def _members(*extra: MemberConfig, source_kind: str = "pooled-finetune", source_cv: str | None = None) -> list[MemberConfig]:
    source = MemberConfig(name="src", kind=source_kind, backbone="minilm", features="tfidf", cv=source_cv)
    return [source, *extra]


@pytest.mark.parametrize(
    "members,match",
    [
        (_members(MemberConfig(name="dep", features="finetuned:nope")), "'dep'.*no member named 'nope'"),
        (_members(MemberConfig(name="dep", features="finetuned:src"), source_kind="head"), "'dep'.*'src' is of kind 'head'"),
        (
            _members(MemberConfig(name="dep", features="finetuned:src"), source_kind="seqcls-finetune"),
            "'dep'.*'src'.*'seqcls-finetune'",
        ),
        ([MemberConfig(name="dep", features="finetuned:src"), *_members()], "'dep'.*'src' must be listed before 'dep'"),
        (_members(MemberConfig(name="dep", features="finetuned:src"), source_cv="holdout"), "'dep'.*'src' has cv 'holdout'"),
        (_members(MemberConfig(name="dep", features="finetuned:src", cv="holdout")), "'dep'.*'dep' has cv 'holdout'"),
    ],
)
def test_bad_feature_source_is_refused_when_the_run_starts(members, match, tmp_path):
    config = EnsembleConfig(members=members, cv=CVConfig(n_folds=3))
    train = Corpus(["a", "b", "c"], ["x", "y", "z"], np.zeros((3, 11), dtype=np.int8))
    with pytest.raises(ConfigError, match=match):
        fit_members(config, train, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before any work
    with pytest.raises(ConfigError, match="must name a member"):
        MemberConfig(name="dep", features="finetuned:")


def test_example_config_is_valid():
    config = EnsembleConfig.load(ROOT / "experiments" / "finetune-cpu-features.json")
    check_requirements(config)
    assert {m.feature_source for m in config.members} == {None, "minilm-ft"}


def test_stacked_source_and_its_heads_share_fold_models_and_backbone_passes(fitted, tmp_path, monkeypatch):
    from embedensemble.members.pooled_finetune import PooledFinetuneMember

    run = shutil.copytree(fitted["run"], tmp_path / "run")
    stack_run(run, members=[SOURCE, "ft-logreg", "ft-lgbm"], write_report=False)
    texts = fitted["splits"].eval.texts
    loads, encoded = [], []
    original_load, original_run = PooledFinetuneMember._load.__func__, PooledFinetuneMember._run
    monkeypatch.setattr(PooledFinetuneMember, "_load", classmethod(lambda cls, *a: loads.append(a[0]) or original_load(cls, *a)))
    monkeypatch.setattr(PooledFinetuneMember, "_run", lambda self, fn, batch: encoded.append(len(batch)) or original_run(self, fn, batch))
    ensemble = EmotionEnsemble.load(run / "ensemble")
    member_proba = ensemble.member_proba(texts)
    n_folds = fitted["config"].cv.n_folds
    assert len(loads) == n_folds and len(set(loads)) == n_folds  # each source fold loaded once, not once per reader
    assert sum(encoded) == n_folds * len(texts)  # one backbone pass per fold model for the member and both heads
    # The stacked source still gives what cross-fitting stored for it.
    stored = load_array(run / "members" / SOURCE / "eval.npy")
    np.testing.assert_allclose(member_proba[:, ensemble.member_names.index(SOURCE)], stored, rtol=1e-5, atol=1e-6)
