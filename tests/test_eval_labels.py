"""The evaluation (dev) split is a final check only: its labels never reach a choice the fit makes.

A run with an eval split is fitted twice, the second time with the eval labels shuffled among the
eval tweets. Every threshold, the stacker's weights, the ensemble's probabilities and every
out-of-fold number must be identical; only the eval scores may move.
"""

from __future__ import annotations

import numpy as np
from synthetic import write_semeval

from embedensemble import EnsembleConfig
from embedensemble.config import CVConfig, MemberConfig
from embedensemble.data import Corpus, load_dataset
from embedensemble.fileio import read_json
from embedensemble.run_folder import RunFolder
from embedensemble.training import fit_ensemble

from . import simple_member  # noqa: F401  registers the "test-bow" member kind


def _config() -> EnsembleConfig:
    members = [
        MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg"),
        MemberConfig(name="bow", kind="test-bow", features="words"),
    ]
    return EnsembleConfig(name="eval-labels", members=members, cv=CVConfig(n_folds=3))


def _permuted(corpus: Corpus, seed: int = 0) -> Corpus:
    rows = np.random.default_rng(seed).permutation(len(corpus))
    return Corpus(list(corpus.ids), list(corpus.texts), corpus.labels[rows].copy(), corpus.source)


def test_permuting_eval_labels_changes_no_choice(tmp_path):
    splits = load_dataset(write_semeval(tmp_path / "d", n_train=120, n_dev=50, n_test=10))
    shuffled = _permuted(splits.eval)
    assert not np.array_equal(shuffled.labels, splits.eval.labels)
    fitted = {}
    for name, eval_split in (("true", splits.eval), ("permuted", shuffled)):
        run = RunFolder(tmp_path / name)
        ensemble = fit_ensemble(_config(), splits.train, run_dir=run.path, eval=eval_split, test=splits.test)
        fitted[name] = (ensemble, read_json(run.metrics_file))
    (a, metrics_a), (b, metrics_b) = fitted["true"], fitted["permuted"]

    assert a.thresholds == b.thresholds
    for attr in ("coef_", "intercept_", "mean_", "scale_"):
        np.testing.assert_array_equal(getattr(a.stacker_, attr), getattr(b.stacker_, attr), err_msg=attr)
    texts = splits.train.texts[:30] + splits.eval.texts + splits.test.texts
    np.testing.assert_array_equal(a.predict_proba(texts).to_numpy(), b.predict_proba(texts).to_numpy())
    assert metrics_a["stack"]["oof"] == metrics_b["stack"]["oof"]
    for member in metrics_a["members"]:
        for split in ("oof", "oof_at_0.5"):
            assert metrics_a["members"][member][split] == metrics_b["members"][member][split], (member, split)
    # The permutation did reach the run: the dev score is what changes.
    assert metrics_a["stack"]["eval"]["macro_f1"] != metrics_b["stack"]["eval"]["macro_f1"]
