"""Cross-fitting: multilabel-stratified folds, and out-of-fold predictions for any member.

Each fold's model is saved in its own folder together with its predictions and a ``DONE``
marker, written last through an atomic rename, so an interrupted run resumes at the first
unfinished fold and a finished fold is not redone. The marker records the fold's inputs
(digests of the training data, the fold assignment and the texts it predicted): a fold made
from other inputs is refitted, so no out-of-fold row is ever predicted by a model that
trained on it (a rerun with another seed or fold count changes the fold assignment).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._logging import get_logger
from .config import CVConfig, MemberConfig
from .data import Corpus
from .fileio import load_array, read_json, save_array, texts_digest, write_json
from .labels import N_LABELS
from .members.base import MemberContext, build_member
from .run_folder import MemberFolder, data_digest, fold_done_file, fold_prediction_file, folds_digest, read_fold_done

logger = get_logger(__name__)
NOT_HELD_OUT = -1


def make_folds(labels: np.ndarray, cv: CVConfig, mode: str | None = None) -> np.ndarray:
    """Fold index of every row; ``-1`` marks rows never held out (holdout mode's training rows)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

    labels = np.asarray(labels)
    mode = mode or cv.mode
    folds = np.full(len(labels), NOT_HELD_OUT, dtype=np.int64)
    dummy = np.zeros((len(labels), 1))
    if mode == "holdout":
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=cv.holdout_fraction, random_state=cv.seed)
        _, held_out = next(splitter.split(dummy, labels))
        folds[held_out] = 0
        return folds
    if len(labels) < cv.n_folds:
        raise ValueError(f"cannot make {cv.n_folds} folds from {len(labels)} rows")
    splitter = MultilabelStratifiedKFold(n_splits=cv.n_folds, shuffle=True, random_state=cv.seed)
    for k, (_, val) in enumerate(splitter.split(dummy, labels)):
        folds[val] = k
    return folds


def fold_count(folds: np.ndarray) -> int:
    return int(folds.max()) + 1


@dataclass
class CrossFitResult:
    """Out-of-fold probabilities on train (NaN where a row was never held out) and fold-mean predictions."""

    oof: np.ndarray
    predictions: dict[str, np.ndarray]
    fit_seconds: float
    folds_fitted: int


def cross_fit(
    config: MemberConfig,
    train: Corpus,
    folds: np.ndarray,
    member_dir: str | os.PathLike,
    *,
    predict_on: dict[str, list[str]] | None = None,
    context: MemberContext | None = None,
    inputs: dict[str, str] | None = None,
) -> CrossFitResult:
    """Train one model per fold; each predicts its held-out rows and every split in ``predict_on``.

    ``inputs``: digests of what the models are made from (default: of ``train`` and ``folds``);
    a finished fold with other inputs is refitted.
    """
    if train.labels is None:
        raise ValueError("cross-fitting needs a labelled train corpus")
    member = MemberFolder(member_dir)
    predict_on = predict_on or {}
    n_folds = fold_count(folds)
    fold_inputs = dict(inputs or {"train": data_digest(train.ids, train.texts, train.labels), "folds": folds_digest(folds)})
    fold_inputs["splits"] = {split: texts_digest(texts) for split, texts in sorted(predict_on.items())}
    _remove_extra_folds(member, n_folds)
    oof = np.full((len(train), N_LABELS), np.nan, dtype=np.float32)
    sums = {split: np.zeros((len(texts), N_LABELS), dtype=np.float64) for split, texts in predict_on.items()}
    started, fitted = time.perf_counter(), 0
    for k in range(n_folds):
        val = np.flatnonzero(folds == k)
        fold_dir = member.fold_dir(k)
        done = read_fold_done(fold_dir)
        if done is not None and done.get("inputs") == fold_inputs:
            logger.info("member %s fold %d already done; reusing it", config.name, k)
        else:
            if done is not None:
                logger.info("member %s fold %d was made from other %s; refitting it", config.name, k, _changed(done.get("inputs"), fold_inputs))
            fit_fold(config, train, folds, k, member, predict_on, context, fold_inputs)
            fitted += 1
        oof[val] = load_array(fold_prediction_file(fold_dir, "oof"))
        for split in predict_on:
            sums[split] += load_array(fold_prediction_file(fold_dir, split))
    predictions = {split: (total / n_folds).astype(np.float32) for split, total in sums.items()}
    return CrossFitResult(oof, predictions, time.perf_counter() - started, fitted)


def _changed(before: dict | None, now: dict) -> str:
    before = before or {}
    return ", ".join(sorted(k for k in {*before, *now} if before.get(k) != now.get(k))) or "inputs"


def _remove_extra_folds(member: MemberFolder, n_folds: int) -> None:
    """Folds past ``n_folds`` (a run refitted with fewer folds) must not be averaged into predictions."""
    for fold_dir in member.finished_folds():
        k = int(fold_dir.name[5:])
        if k >= n_folds:
            logger.info("removing %s: the run now has %d folds", fold_dir, n_folds)
            shutil.rmtree(fold_dir)
            shutil.rmtree(member.fold_work_dir(k), ignore_errors=True)


def fit_fold(
    config: MemberConfig,
    train: Corpus,
    folds: np.ndarray,
    k: int,
    member: MemberFolder,
    predict_on: dict[str, list[str]],
    context: MemberContext | None,
    inputs: dict,
) -> None:
    train_rows, val_rows = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
    logger.info("member %s fold %d: training on %d rows, predicting %d", config.name, k, len(train_rows), len(val_rows))
    # Checkpoints of an interrupted fit live in workdir, kept until the fold is complete, and are
    # resumed only by a fit of the same inputs.
    fold_dir, workdir, partial = member.fold_dir(k), member.fold_work_dir(k), member.fold_partial_dir(k)
    work_inputs = member.fold_work_inputs_file(k)
    if workdir.exists() and (not work_inputs.is_file() or read_json(work_inputs) != inputs):
        shutil.rmtree(workdir)
    write_json(work_inputs, inputs)
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    model = build_member(config, context)
    # By row, not by text: a member fed out-of-fold embeddings looks its training rows up by index.
    model.fit_rows(train, train_rows, workdir=workdir)
    fit_seconds = time.perf_counter() - started
    model.save(partial)
    save_array(fold_prediction_file(partial, "oof"), model.predict_rows(train, val_rows))
    for split, texts in predict_on.items():
        save_array(fold_prediction_file(partial, split), model.predict_split(split, texts))
    if hasattr(model, "release"):  # fine-tuned members free GPU memory before the next fold loads
        model.release()
    write_json(fold_done_file(partial), {"fold": k, "fit_seconds": fit_seconds, "n_train": len(train_rows), "inputs": inputs})
    shutil.rmtree(fold_dir, ignore_errors=True)
    os.replace(partial, fold_dir)
    shutil.rmtree(workdir, ignore_errors=True)
    work_inputs.unlink(missing_ok=True)


def fold_dirs(member_dir: str | os.PathLike) -> list[Path]:
    """The finished fold folders of a member, in fold order."""
    return MemberFolder(member_dir).finished_folds()
