"""Refitting a run folder never leaves an out-of-fold row predicted by a model that trained on it.

A memorising member ("test-memo") answers, for each text: was I trained on it (column 0), which
text is it (column 1), and the positive rate of the labels I was trained on (column 2). Its
fold models also embed texts (the same three numbers), so a head can read them through
``features: "finetuned:memo"`` and the run's out-of-fold embedding tables can be checked the
same way. After every refit (other seed, other fold count, an interrupted member, changed
labels) every OOF row must come from the model of its current fold: not trained on it, and
trained on the current labels of the other folds' rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from embedensemble.config import CVConfig, EnsembleConfig, MemberConfig
from embedensemble.cv import cross_fit, make_folds
from embedensemble.data import Corpus
from embedensemble.errors import ArtifactError
from embedensemble.fileio import load_array, read_json, write_json
from embedensemble.fitting import fit_members
from embedensemble.labels import N_LABELS
from embedensemble.members.base import FoldModel, register_member

from .synthetic import make_tweets

NOT_TRAINED, TRAINED = 0.1, 0.9


def _code(text: str) -> float:
    return (int(hashlib.sha256(text.encode()).hexdigest()[:6], 16) % 997 + 1) / 1000.0


@register_member("test-memo")
class MemoMember(FoldModel):
    """Remembers its training texts and the positive rate of its training labels."""

    def _fit(self, texts, labels, *, workdir):
        self.seen_ = sorted(set(texts))
        self.rate_ = float(np.asarray(labels).mean())

    def embed(self, texts):
        seen = set(self.seen_)
        return np.array([[1.0 if t in seen else 0.0, _code(t), self.rate_] for t in texts], dtype=np.float32)

    def _predict_proba(self, texts):
        E = self.embed(texts)
        out = np.full((len(texts), N_LABELS), 0.5, dtype=np.float32)
        out[:, 0] = np.where(E[:, 0] > 0, TRAINED, NOT_TRAINED)
        out[:, 1], out[:, 2] = E[:, 1], E[:, 2]
        return out

    def _save(self, path: Path):
        write_json(path / "memo.json", {"seen": self.seen_, "rate": self.rate_})

    @classmethod
    def _load(cls, path, config, context):
        model = cls(config, context)
        saved = read_json(path / "memo.json")
        model.seen_, model.rate_ = saved["seen"], saved["rate"]
        return model


def _corpus(n: int = 60, seed: int = 0) -> Corpus:
    texts, labels = make_tweets(n, seed)
    return Corpus([f"id{i}" for i in range(n)], texts, labels)


def _config(seed: int = 42, n_folds: int = 3) -> EnsembleConfig:
    return EnsembleConfig(
        name="leaks",
        members=[
            MemberConfig(name="memo", kind="test-memo", features="memo"),
            MemberConfig(name="memo-head", features="finetuned:memo", head="logreg"),
        ],
        cv=CVConfig(n_folds=n_folds, seed=seed),
        seed=seed,
    )


def _expected_rates(labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    return np.array([labels[folds != folds[i]].mean() for i in range(len(folds))])


def _assert_honest(columns: np.ndarray, train: Corpus, folds: np.ndarray, what: str) -> None:
    # column 0 is 0.9 (probabilities) or 1.0 (embeddings) where the model trained on the row
    leaked = np.flatnonzero(np.isclose(columns[:, 0], TRAINED) | np.isclose(columns[:, 0], 1.0))
    assert not len(leaked), f"{what}: {len(leaked)} of {len(folds)} rows predicted by a model that trained on them"
    np.testing.assert_allclose(columns[:, 1], [_code(t) for t in train.texts], rtol=1e-6, err_msg=f"{what}: rows out of place")
    np.testing.assert_allclose(
        columns[:, 2], _expected_rates(train.labels, folds), rtol=1e-5,
        err_msg=f"{what}: a row's model was not trained on the other folds' current rows and labels",
    )


def _assert_run_honest(run: Path, train: Corpus) -> None:
    folds = load_array(run / "folds_kfold.npy")
    _assert_honest(load_array(run / "members" / "memo" / "oof_embeddings.npy"), train, folds, "finetuned:memo OOF embeddings")
    _assert_honest(load_array(run / "members" / "memo" / "oof.npy"), train, folds, "memo OOF")
    assert read_json(run / "members" / "memo-head" / "member.json")["status"] == "done"


def test_refitting_a_run_with_other_seeds_and_folds_never_leaks(tmp_path):
    train = _corpus()
    test = _corpus(12, seed=5)
    run = tmp_path / "run"
    fit_members(_config(42), train, run, test=test)
    _assert_run_honest(run, train)

    fit_members(_config(7), train, run, test=test)  # another seed: other folds
    _assert_run_honest(run, train)

    fit_members(_config(7, n_folds=4), train, run, test=test)  # other fold count
    _assert_run_honest(run, train)

    # An interrupted member (some folds done, member not) resumed under yet another seed.
    status = read_json(run / "members" / "memo" / "member.json")
    write_json(run / "members" / "memo" / "member.json", {**status, "status": "running"})
    for path in (run / "members" / "memo" / "fold_1").iterdir():
        path.unlink()
    (run / "members" / "memo" / "fold_1").rmdir()
    fit_members(_config(11, n_folds=4), train, run, test=test)
    _assert_run_honest(run, train)


def test_changed_labels_refuse_the_run_and_refit_cross_fit(tmp_path):
    train = _corpus()
    run = tmp_path / "run"
    fit_members(_config(), train, run)
    relabelled = Corpus(train.ids, train.texts, 1 - train.labels)
    with pytest.raises(ArtifactError, match="different data"):
        fit_members(_config(), relabelled, run)

    # cross_fit on its own (no run folder to refuse): a fold made from other labels is refitted.
    folds = make_folds(train.labels, CVConfig(n_folds=3))
    member = MemberConfig(name="m", kind="test-memo", features="memo")
    cross_fit(member, train, folds, tmp_path / "m")
    result = cross_fit(member, relabelled, folds, tmp_path / "m")
    _assert_honest(result.oof, relabelled, folds, "cross_fit after a label change")
    other = make_folds(train.labels, CVConfig(n_folds=3, seed=1))
    result = cross_fit(member, relabelled, other, tmp_path / "m")
    _assert_honest(result.oof, relabelled, other, "cross_fit after a fold change")
