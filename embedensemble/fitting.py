"""Fit every member of a run: cross-fitted out-of-fold and test probabilities on disk.

The run folder's layout belongs to :class:`~embedensemble.run_folder.RunFolder`. A member whose
``member.json`` says ``done`` with the same config, cv mode and inputs (digests of the training
data and of the fold assignment, and of the members it reads) is not recomputed, so an
interrupted ``fit`` resumes where it stopped; one made from other folds or data is refitted,
fold by fold (see :func:`embedensemble.cv.cross_fit`). A member that reads other members
(``MemberConfig.requires``, e.g. a head on ``finetuned:<source>`` features) gets their fold
folders in its context and first asks its kind to prepare what it reads from them (see
:meth:`~embedensemble.members.base.FoldModel.prepare_requirements`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ._logging import get_logger
from .config import EnsembleConfig, MemberConfig
from .context import MemberContext
from .cv import cross_fit, make_folds
from .data import Corpus
from .errors import ArtifactError
from .fileio import save_array, write_json
from .locking import run_lock
from .manifest import library_versions
from .members.base import check_requirements
from .run_folder import RunFolder, data_digest, folds_digest

logger = get_logger(__name__)


def corpus_fingerprint(corpus: Corpus) -> str:
    """Digest of a corpus's ids, texts and labels (``run.json``'s ``fingerprints``)."""
    return data_digest(corpus.ids, corpus.texts, corpus.labels)


def fit_members(
    config: EnsembleConfig,
    train: Corpus,
    run_dir: str | os.PathLike,
    *,
    test: Corpus | None = None,
    eval: Corpus | None = None,
    data_info: dict | None = None,
) -> Path:
    """Cross-fit all members of ``config`` on ``train``; returns the run folder."""
    check_requirements(config)  # unknown kinds, bad parameters and dependencies fail before any work
    run = RunFolder(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    with run_lock(run):
        start_run(config, train, run, test, eval, data_info or {})
        context = MemberContext(cache_dir=config.cache_dir, seed=config.seed, device=config.device)
        splits = {name: corpus.texts for name, corpus in (("test", test), ("eval", eval)) if corpus is not None}
        for member in config.members:
            fit_member(member, config, train, run, splits, context)
            context.resources.clear()  # loaded encoders and models live as long as one member's fit
    logger.info("all %d members fitted in %s", len(config.members), run.path)
    return run.path


def start_run(config: EnsembleConfig, train: Corpus, run: RunFolder, test: Corpus | None, eval: Corpus | None, data_info: dict) -> None:
    fingerprints = {"train": corpus_fingerprint(train)}
    fingerprints.update({name: corpus_fingerprint(c) for name, c in (("test", test), ("eval", eval)) if c is not None})
    previous = run.run_info().get("fingerprints", {})
    if previous and previous != fingerprints:
        raise ArtifactError(
            f"run folder {run.path} was made with different data ({previous} != {fingerprints}); "
            "choose a new --run folder or delete this one"
        )
    config.save(run.config_file)
    write_json(
        run.run_file,
        {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "fingerprints": fingerprints,
            "n_train": len(train),
            "n_test": len(test) if test is not None else 0,
            "n_eval": len(eval) if eval is not None else 0,
            "versions": library_versions(),
            **data_info,
        },
    )
    save_array(run.train_labels_file, train.labels.astype(np.int8))
    if eval is not None:
        save_array(run.eval_labels_file, eval.labels.astype(np.int8))
    if test is not None:
        write_json(run.test_ids_file, test.ids)
    for mode in ("kfold", "holdout"):
        save_array(run.folds_file(mode), make_folds(train.labels, config.cv, mode))


def member_inputs(train: Corpus, folds: np.ndarray) -> dict[str, str]:
    """What a member's fold models were made from: the training data and the fold assignment."""
    return {"train": corpus_fingerprint(train), "folds": folds_digest(folds)}


def fit_member(
    member: MemberConfig,
    config: EnsembleConfig,
    train: Corpus,
    run: RunFolder | str | os.PathLike,
    splits: dict[str, list[str]],
    context: MemberContext,
) -> Path:
    """Cross-fit one member unless it is already done with the same config and inputs."""
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    folder = run.member(member.name)
    record = dataclasses.asdict(member)
    mode = member.cv or config.cv.mode
    folds = run.folds(mode)
    inputs = member_inputs(train, folds)
    required: dict[str, str] = {}
    if member.requires:
        context, required = _requirements(member, train, run, splits, context)
        inputs.update(required)
    status = folder.status()
    if status is not None:
        same_config = status.get("config") == record and status.get("cv_mode") == mode
        if same_config and status.get("status") == "done" and status.get("inputs") == inputs:
            logger.info("member %s is already fitted; skipping", member.name)
            return folder.path
        if not same_config:
            logger.info("member %s changed since the last fit; refitting it", member.name)
            shutil.rmtree(folder.path)
        elif status.get("inputs") != inputs:
            stale = sorted(k for k in {*inputs, *(status.get("inputs") or {})} if inputs.get(k) != (status.get("inputs") or {}).get(k))
            logger.info("member %s was fitted on other %s; refitting its stale folds", member.name, ", ".join(stale))
    folder.path.mkdir(parents=True, exist_ok=True)
    write_json(folder.status_file, {"config": record, "status": "running", "cv_mode": mode, "inputs": inputs, **required})
    result = cross_fit(member, train, folds, folder.path, predict_on=splits, context=context, inputs=inputs)
    save_array(folder.array_file("oof"), result.oof)
    for split, proba in result.predictions.items():
        save_array(folder.array_file(split), proba)
    for split in ("test", "eval"):  # a split the run no longer has must not be stacked from an old array
        if split not in result.predictions:
            folder.array_file(split).unlink(missing_ok=True)
    write_json(
        folder.status_file,
        {
            "config": record,
            "status": "done",
            "cv_mode": mode,
            "inputs": inputs,
            "fit_seconds": round(result.fit_seconds, 2),
            "folds_fitted_now": result.folds_fitted,
            **required,
        },
    )
    logger.info("member %s done in %.1fs", member.name, result.fit_seconds)
    return folder.path


def _requirements(
    member: MemberConfig, train: Corpus, run: RunFolder, splits: dict[str, list[str]], context: MemberContext
) -> tuple[MemberContext, dict[str, str]]:
    """Fold folders of the members ``member`` reads, and digests of what its kind made from them."""
    from .members.base import member_class, member_kind

    found = {}
    for name in member.requires:
        if not run.is_member_done(name):
            raise ArtifactError(f"member '{member.name}' reads member '{name}', which is not fitted in {run.path}")
        found[name] = run.finished_folds(name)
    context = context.with_member_folds(found)
    prepared = member_class(member_kind(member)).prepare_requirements(member, run, train, splits, context)
    return context, prepared
