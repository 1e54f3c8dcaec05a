"""The run folder's layout: the one place that knows where ``fit`` and ``stack`` keep things.

::

    <run>/config.json              the EnsembleConfig the run was fitted with
    <run>/run.json                 data fingerprints, sizes, library versions, data info
    <run>/train_labels.npy         train labels [n, 11] (int8)
    <run>/eval_labels.npy          eval labels (when the run has an eval split)
    <run>/test_ids.json            test ids (when the run has a test split)
    <run>/folds_kfold.npy          fold of every train row (k-fold); folds_holdout.npy: -1 = never held out
    <run>/members/<name>/member.json   status ("running"/"done"), config, cv mode, digests
    <run>/members/<name>/{oof,test,eval}.npy   out-of-fold / fold-mean probabilities [n, 11]
    <run>/members/<name>/fold_<k>/     one fold's model, pred_oof.npy, pred_<split>.npy, DONE (last)
    <run>/members/<name>/fold_<k>.work     checkpoints of an unfinished fold (resumed, then removed)
    <run>/members/<name>/fold_<k>.work.json   the inputs those checkpoints were made from
    <run>/members/<name>/fold_<k>.partial  a fold being written (renamed to fold_<k> when complete)
    <run>/stack_{oof,eval,test}.npy    the stacker's probabilities
    <run>/thresholds.json, metrics.json, submission.csv
    <run>/ensemble/                the saved EmotionEnsemble
    <run>/members/<name>/full/         the member refitted once on all train rows (refit), DONE last
    <run>/ensemble_full/, metrics_full.json   the ensemble of refitted members, and its metrics
    <run>/student/, student.distill.json      a distilled student (an ensemble folder) and its report
    <run>/report/                  plots and report.html

Markers: a fold is finished when ``fold_<k>/DONE`` exists (written last, then the folder is
renamed into place); a member is finished when ``member.json`` says ``"status": "done"``.
Both record digests of the data and fold assignment they were made from (see
:func:`data_digest` and :func:`folds_digest`) so a rerun can tell what is stale.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, RunNotFoundError
from .fileio import load_array, read_json

MEMBER_SPLITS = ("oof", "test", "eval")
CV_MODES = ("kfold", "holdout")
DONE = "DONE"
# Files of a run's fold folder that a saved ensemble does not copy (predictions and the run's marker).
RUN_ONLY_FOLD_FILES = ("pred_*.npy", DONE)


def folds_digest(folds: np.ndarray) -> str:
    """Digest of a fold assignment (the fold index of every train row)."""
    return hashlib.sha256(np.ascontiguousarray(folds, dtype=np.int64).tobytes()).hexdigest()[:16]


def data_digest(ids: Sequence[str], texts: Sequence[str], labels: np.ndarray | None) -> str:
    """Digest of a corpus: ids, texts and (when given) labels, in order."""
    digest = hashlib.sha256()
    for tweet_id, text in zip(ids, texts):
        digest.update(f"{tweet_id}\t{text}\n".encode())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype=np.int8).tobytes())
    return digest.hexdigest()[:16]


def fold_prediction_file(fold_dir: Path, split: str) -> Path:
    """``pred_oof.npy`` (the fold's held-out train rows) or ``pred_<split>.npy`` inside a fold folder."""
    return Path(fold_dir) / f"pred_{split}.npy"


def fold_done_file(fold_dir: Path) -> Path:
    return Path(fold_dir) / DONE


def read_fold_done(fold_dir: Path) -> dict[str, Any] | None:
    """The ``DONE`` marker's record, or ``None`` when the fold is not finished."""
    marker = fold_done_file(fold_dir)
    return read_json(marker) if marker.is_file() else None


class MemberFolder:
    """``members/<name>/`` of a run: status, arrays and fold folders of one member."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status_file(self) -> Path:
        return self.path / "member.json"

    def array_file(self, split: str) -> Path:
        """``oof.npy`` / ``test.npy`` / ``eval.npy``."""
        return self.path / f"{split}.npy"

    def fold_dir(self, k: int) -> Path:
        return self.path / f"fold_{k}"

    def fold_work_dir(self, k: int) -> Path:
        return self.path / f"fold_{k}.work"

    def fold_partial_dir(self, k: int) -> Path:
        return self.path / f"fold_{k}.partial"

    @property
    def full_dir(self) -> Path:
        """``full/``: the member refitted once on all train rows, its ``pred_<split>.npy`` and ``DONE`` (refit)."""
        return self.path / "full"

    def fold_work_inputs_file(self, k: int) -> Path:
        """``fold_<k>.work.json``: the inputs the checkpoints in ``fold_<k>.work`` were made from."""
        return self.path / f"fold_{k}.work.json"

    def status(self) -> dict[str, Any] | None:
        return read_json(self.status_file) if self.status_file.is_file() else None

    def is_done(self) -> bool:
        status = self.status()
        return status is not None and status.get("status") == "done"

    def finished_folds(self) -> list[Path]:
        """The finished fold folders (``fold_<k>/DONE``), in fold order."""
        found = [p.parent for p in self.path.glob(f"fold_*/{DONE}") if p.parent.name[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.name[5:]))

    def load(self, split: str) -> np.ndarray:
        return load_array(self.array_file(split))


class RunFolder:
    """Every path and marker of a run folder (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- run-level files ----------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def run_file(self) -> Path:
        return self.path / "run.json"

    @property
    def train_labels_file(self) -> Path:
        return self.path / "train_labels.npy"

    @property
    def eval_labels_file(self) -> Path:
        return self.path / "eval_labels.npy"

    @property
    def test_ids_file(self) -> Path:
        return self.path / "test_ids.json"

    def folds_file(self, mode: str) -> Path:
        if mode not in CV_MODES:
            raise ValueError(f"cv mode {mode!r} is not one of {list(CV_MODES)}")
        return self.path / f"folds_{mode}.npy"

    def stack_file(self, split: str) -> Path:
        """``stack_oof.npy`` / ``stack_eval.npy`` / ``stack_test.npy``."""
        return self.path / f"stack_{split}.npy"

    @property
    def thresholds_file(self) -> Path:
        return self.path / "thresholds.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def submission_file(self) -> Path:
        return self.path / "submission.csv"

    @property
    def ensemble_dir(self) -> Path:
        return self.path / "ensemble"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def student_dir(self) -> Path:
        """The distilled student (``python -m embedensemble.distill``); its report is beside it."""
        return self.path / "student"

    @property
    def full_ensemble_dir(self) -> Path:
        """The ensemble of members refitted on all train rows (``python -m embedensemble.refit``)."""
        return self.path / "ensemble_full"

    @property
    def full_metrics_file(self) -> Path:
        return self.path / "metrics_full.json"

    def member_full_dir(self, name: str) -> Path:
        return self.member(name).full_dir

    @property
    def members_dir(self) -> Path:
        return self.path / "members"

    @property
    def lock_file(self) -> Path:
        """Held (``fcntl.flock``) by a process fitting or stacking this run."""
        return self.path / ".lock"

    # -- members ------------------------------------------------------------------------------
    def member(self, name: str) -> MemberFolder:
        return MemberFolder(self.members_dir / name)

    def member_dir(self, name: str) -> Path:
        return self.member(name).path

    def member_file(self, name: str) -> Path:
        """``members/<name>/member.json``."""
        return self.member(name).status_file

    def member_array_file(self, name: str, split: str) -> Path:
        return self.member(name).array_file(split)

    def member_oof(self, name: str) -> np.ndarray:
        return self.member(name).load("oof")

    def member_array(self, name: str, split: str) -> np.ndarray:
        return self.member(name).load(split)

    def member_stack(self, names: Sequence[str], split: str) -> np.ndarray:
        """Members' ``split`` probabilities stacked as [n, members, 11]."""
        return np.stack([self.member_array(n, split) for n in names], axis=1)

    def fold_dir(self, name: str, k: int) -> Path:
        return self.member(name).fold_dir(k)

    def finished_folds(self, name: str) -> list[Path]:
        return self.member(name).finished_folds()

    def member_status(self, name: str) -> dict[str, Any] | None:
        return self.member(name).status()

    def is_member_done(self, name: str) -> bool:
        return self.member(name).is_done()

    def member_folder_names(self) -> list[str]:
        """Names of every folder under ``members/`` (sorted), fitted or not."""
        return sorted(p.name for p in self.members_dir.iterdir() if p.is_dir()) if self.members_dir.is_dir() else []

    def finished_members(self, names: Iterable[str], only: Sequence[str] | None = None) -> list[str]:
        """Those of ``names`` (in order) whose cross-fit is done; ``only`` restricts them."""
        done = [n for n in names if self.is_member_done(n)]
        if only:
            unknown = sorted(set(only) - set(done))
            if unknown:
                raise RunNotFoundError(f"run {self.path} has no finished member(s) {unknown}; finished: {done}")
            done = [n for n in done if n in only]
        if not done:
            raise RunNotFoundError(f"run {self.path} has no finished members: run `python -m embedensemble.fit --run {self.path}` first")
        return done

    # -- readers ------------------------------------------------------------------------------
    def has_config(self) -> bool:
        return self.config_file.is_file()

    def require_config(self) -> None:
        if not self.has_config():
            raise RunNotFoundError(
                f"run folder {self.path} does not exist or has no config.json; run `python -m embedensemble.fit` first"
            )

    def run_info(self) -> dict[str, Any]:
        return read_json(self.run_file) if self.run_file.is_file() else {}

    def train_labels(self) -> np.ndarray:
        return load_array(self.train_labels_file).astype(int)

    def eval_labels(self) -> np.ndarray | None:
        return load_array(self.eval_labels_file).astype(int) if self.eval_labels_file.is_file() else None

    def test_ids(self) -> list[str] | None:
        return read_json(self.test_ids_file) if self.test_ids_file.is_file() else None

    def folds(self, mode: str) -> np.ndarray:
        path = self.folds_file(mode)
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; refit the run with `python -m embedensemble.fit --run {self.path}`")
        return load_array(path)
