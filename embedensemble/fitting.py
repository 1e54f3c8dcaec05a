"""Fit every member of a run: cross-fitted out-of-fold and test probabilities on disk.

Run folder (see README "Run folders"): ``config.json``, ``run.json``, ``train_labels.npy``,
``folds.npy``, ``members/<name>/{member.json, oof.npy, test.npy, eval.npy, fold_<k>/}``.
A member whose ``member.json`` says ``done`` with the same config is not recomputed, so an
interrupted ``fit`` resumes where it stopped. A head on ``finetuned:<source>`` features first
makes (or reuses) the source's embedding tables in ``members/<source>/`` and is refitted when
they change (see :mod:`embedensemble.members.finetuned_head`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ._logging import get_logger
from .config import EnsembleConfig, MemberConfig
from .cv import cross_fit, fold_dirs, make_folds
from .data import Corpus
from .errors import ArtifactError
from .io import load_array, read_json, save_array, write_json
from .manifest import library_versions
from .members.base import MemberContext

logger = get_logger(__name__)


def corpus_fingerprint(corpus: Corpus) -> str:
    digest = hashlib.sha256()
    for tweet_id, text in zip(corpus.ids, corpus.texts):
        digest.update(f"{tweet_id}\t{text}\n".encode())
    if corpus.labels is not None:
        digest.update(np.ascontiguousarray(corpus.labels, dtype=np.int8).tobytes())
    return digest.hexdigest()[:16]


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
    from .members.base import member_class, member_kind

    for member in config.members:  # fail on an unknown kind before any work is done
        member_class(member_kind(member))
    config.check_feature_sources()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _start_run(config, train, run_dir, test, eval, data_info or {})
    context = MemberContext(cache_dir=config.cache_dir, seed=config.seed, device=config.device)
    splits = {name: corpus.texts for name, corpus in (("test", test), ("eval", eval)) if corpus is not None}
    for member in config.members:
        fit_member(member, config, train, run_dir, splits, context)
    logger.info("all %d members fitted in %s", len(config.members), run_dir)
    return run_dir


def _start_run(config: EnsembleConfig, train: Corpus, run_dir: Path, test: Corpus | None, eval: Corpus | None, data_info: dict) -> None:
    fingerprints = {"train": corpus_fingerprint(train)}
    fingerprints.update({name: corpus_fingerprint(c) for name, c in (("test", test), ("eval", eval)) if c is not None})
    if (run_dir / "run.json").is_file():
        previous = read_json(run_dir / "run.json").get("fingerprints", {})
        if previous and previous != fingerprints:
            raise ArtifactError(
                f"run folder {run_dir} was made with different data ({previous} != {fingerprints}); "
                "choose a new --run folder or delete this one"
            )
    config.save(run_dir / "config.json")
    write_json(
        run_dir / "run.json",
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
    save_array(run_dir / "train_labels.npy", train.labels.astype(np.int8))
    if eval is not None:
        save_array(run_dir / "eval_labels.npy", eval.labels.astype(np.int8))
    if test is not None:
        write_json(run_dir / "test_ids.json", test.ids)
    for mode in ("kfold", "holdout"):
        save_array(run_dir / f"folds_{mode}.npy", make_folds(train.labels, config.cv, mode))


def fit_member(
    member: MemberConfig,
    config: EnsembleConfig,
    train: Corpus,
    run_dir: Path,
    splits: dict[str, list[str]],
    context: MemberContext,
) -> Path:
    """Cross-fit one member unless it is already done with the same config."""
    member_dir = run_dir / "members" / member.name
    record = dataclasses.asdict(member)
    mode = member.cv or config.cv.mode
    source: dict = {}
    if member.feature_source is not None:
        context, source = _feature_source(member, train, run_dir, splits, context)
    status_file = member_dir / "member.json"
    if status_file.is_file():
        status = read_json(status_file)
        same = status.get("config") == record and status.get("source_embeddings") == source.get("source_embeddings")
        if same and status.get("status") == "done" and status.get("cv_mode") == mode:
            logger.info("member %s is already fitted; skipping", member.name)
            return member_dir
        if not same:
            logger.info("member %s (or the member it reads) changed since the last fit; refitting it", member.name)
            shutil.rmtree(member_dir)
    member_dir.mkdir(parents=True, exist_ok=True)
    write_json(status_file, {"config": record, "status": "running", "cv_mode": mode, **source})
    folds = load_array(run_dir / f"folds_{mode}.npy")
    result = cross_fit(member, train, folds, member_dir, predict_on=splits, context=context)
    save_array(member_dir / "oof.npy", result.oof)
    for split, proba in result.predictions.items():
        save_array(member_dir / f"{split}.npy", proba)
    write_json(
        status_file,
        {
            "config": record,
            "status": "done",
            "cv_mode": mode,
            "fit_seconds": round(result.fit_seconds, 2),
            "folds_fitted_now": result.folds_fitted,
            **source,
        },
    )
    logger.info("member %s done in %.1fs", member.name, result.fit_seconds)
    return member_dir


def _feature_source(
    member: MemberConfig, train: Corpus, run_dir: Path, splits: dict[str, list[str]], context: MemberContext
) -> tuple[MemberContext, dict]:
    """Make (or reuse) the embedding tables of ``member``'s source; a context that finds its folds."""
    from .members.finetuned_head import ensure_embedding_tables

    source_dir = run_dir / "members" / member.feature_source
    status_file = source_dir / "member.json"
    if not status_file.is_file() or read_json(status_file).get("status") != "done":
        raise ArtifactError(f"member '{member.name}' reads member '{member.feature_source}', which is not fitted in {run_dir}")
    source_folds = fold_dirs(source_dir)
    folds = load_array(run_dir / "folds_kfold.npy")
    table = ensure_embedding_tables(source_dir, source_folds, train.texts, folds, splits, context)
    context = dataclasses.replace(context, member_folds={**context.member_folds, member.feature_source: source_folds})
    return context, {"source_embeddings": table}
