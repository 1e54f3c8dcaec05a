"""Cross-fitting: multilabel-stratified folds, and out-of-fold predictions for any member.

Each fold's model is saved in its own folder together with its predictions and a ``DONE``
marker, written last through an atomic rename, so an interrupted run resumes at the first
unfinished fold and a finished fold is never redone.
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
from .io import load_array, read_json, save_array, write_json
from .labels import N_LABELS
from .members.base import MemberContext, build_member

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
) -> CrossFitResult:
    """Train one model per fold; each predicts its held-out rows and every split in ``predict_on``."""
    if train.labels is None:
        raise ValueError("cross-fitting needs a labelled train corpus")
    member_dir = Path(member_dir)
    predict_on = predict_on or {}
    n_folds = fold_count(folds)
    oof = np.full((len(train), N_LABELS), np.nan, dtype=np.float32)
    sums = {split: np.zeros((len(texts), N_LABELS), dtype=np.float64) for split, texts in predict_on.items()}
    started, fitted = time.perf_counter(), 0
    for k in range(n_folds):
        val = np.flatnonzero(folds == k)
        fold_dir = member_dir / f"fold_{k}"
        if not (fold_dir / "DONE").is_file():
            _fit_fold(config, train, folds, k, fold_dir, predict_on, context)
            fitted += 1
        else:
            logger.info("member %s fold %d already done; reusing it", config.name, k)
        oof[val] = load_array(fold_dir / "pred_oof.npy")
        for split in predict_on:
            sums[split] += load_array(fold_dir / f"pred_{split}.npy")
    predictions = {split: (total / n_folds).astype(np.float32) for split, total in sums.items()}
    return CrossFitResult(oof, predictions, time.perf_counter() - started, fitted)


def _fit_fold(
    config: MemberConfig,
    train: Corpus,
    folds: np.ndarray,
    k: int,
    fold_dir: Path,
    predict_on: dict[str, list[str]],
    context: MemberContext | None,
) -> None:
    train_rows, val_rows = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
    logger.info("member %s fold %d: training on %d rows, predicting %d", config.name, k, len(train_rows), len(val_rows))
    # Checkpoints of an interrupted fit live in workdir, kept until the fold is complete.
    workdir = fold_dir.with_name(fold_dir.name + ".work")
    partial = fold_dir.with_name(fold_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    model = build_member(config, context)
    # By row, not by text: a member fed out-of-fold embeddings looks its training rows up by index.
    model.fit_rows(train, train_rows, workdir=workdir)
    fit_seconds = time.perf_counter() - started
    model.save(partial)
    save_array(partial / "pred_oof.npy", model.predict_rows(train, val_rows))
    for split, texts in predict_on.items():
        save_array(partial / f"pred_{split}.npy", model.predict_split(split, texts))
    if hasattr(model, "release"):  # fine-tuned members free GPU memory before the next fold loads
        model.release()
    write_json(partial / "DONE", {"fold": k, "fit_seconds": fit_seconds, "n_train": len(train_rows)})
    shutil.rmtree(fold_dir, ignore_errors=True)
    os.replace(partial, fold_dir)
    shutil.rmtree(workdir, ignore_errors=True)


def fold_dirs(member_dir: str | os.PathLike) -> list[Path]:
    """The finished fold folders of a member, in fold order."""
    member_dir = Path(member_dir)
    found = [p.parent for p in member_dir.glob("fold_*/DONE") if p.parent.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def read_fold_info(fold_dir: Path) -> dict:
    return read_json(fold_dir / "DONE")
