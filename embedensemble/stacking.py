"""Stack a fitted run: meta-learner on out-of-fold probabilities, thresholds, metrics, ensemble.

Writes into the run folder: ``stack_oof.npy``, ``thresholds.json``, ``metrics.json``,
``submission.csv`` (when the run has a test split), ``ensemble/`` and ``report/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._logging import get_logger
from .config import EnsembleConfig
from .cv import fold_dirs
from .ensemble import EmotionEnsemble
from .errors import RunNotFoundError
from .io import load_array, read_json, save_array, write_json
from .metrics import evaluate
from .stacker import Stacker, stacker_oof
from .thresholds import ThresholdOptimizer

logger = get_logger(__name__)


def finished_members(run_dir: Path, config: EnsembleConfig, only: list[str] | None = None) -> list[str]:
    """Names of members whose cross-fit is done, in config order; ``only`` restricts them."""
    names = []
    for member in config.members:
        status_file = run_dir / "members" / member.name / "member.json"
        if status_file.is_file() and read_json(status_file).get("status") == "done":
            names.append(member.name)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise RunNotFoundError(f"run {run_dir} has no finished member(s) {unknown}; finished: {names}")
        names = [n for n in names if n in only]
    if not names:
        raise RunNotFoundError(f"run {run_dir} has no finished members: run `python -m embedensemble.fit --run {run_dir}` first")
    return names


def _member_stack(run_dir: Path, names: list[str], split: str) -> np.ndarray:
    return np.stack([load_array(run_dir / "members" / n / f"{split}.npy") for n in names], axis=1)


def stack_run(
    run_dir: str | os.PathLike,
    *,
    objective: str | None = None,
    members: list[str] | None = None,
    write_report: bool = True,
) -> EmotionEnsemble:
    """Fit the stacker and thresholds on out-of-fold probabilities; save ensemble, metrics, submission."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise RunNotFoundError(f"run folder {run_dir} does not exist or has no config.json; run `python -m embedensemble.fit` first")
    config = EnsembleConfig.load(run_dir / "config.json")
    stack_cfg = config.stack
    names = finished_members(run_dir, config, members or stack_cfg.members)
    labels = load_array(run_dir / "train_labels.npy").astype(int)
    oof = _member_stack(run_dir, names, "oof")
    # Holdout members predict only their held-out rows: the stacker learns where all members have OOF.
    rows = np.flatnonzero(~np.isnan(oof).any(axis=(1, 2)))
    holdout_only = len(rows) < len(labels)
    kfold = load_array(run_dir / "folds_kfold.npy")[rows]
    stacker = Stacker(stack_cfg.meta_learner, stack_cfg.meta_C, config.seed)
    meta_folds = _meta_folds(kfold, rows, run_dir, config)
    stack_oof_rows = stacker_oof(stacker, oof[rows], labels[rows], meta_folds)
    stacker.fit(oof[rows], labels[rows])
    thresholds = ThresholdOptimizer(
        objective or stack_cfg.objective, stack_cfg.threshold_step, stack_cfg.threshold_shrinkage, stack_cfg.threshold_prior_count
    ).fit(stack_oof_rows, labels[rows])
    stack_oof = np.full(labels.shape, np.nan, dtype=np.float32)
    stack_oof[rows] = stack_oof_rows
    save_array(run_dir / "stack_oof.npy", stack_oof)
    thresholds.save(run_dir / "thresholds.json")

    ensemble = EmotionEnsemble.from_parts(
        _stacked_config(config, names), {n: fold_dirs(run_dir / "members" / n) for n in names}, stacker, thresholds
    )
    metrics = _metrics(run_dir, names, oof, labels, rows, stack_oof, thresholds, stacker)
    metrics.update(objective=thresholds.objective, stacker_rows=len(rows), holdout_only=bool(holdout_only), members_stacked=names)
    write_json(run_dir / "metrics.json", metrics)
    _write_submission(run_dir, names, stacker, thresholds)
    ensemble.save(run_dir / "ensemble")
    ensemble = EmotionEnsemble.load(run_dir / "ensemble")
    if write_report:
        _report(run_dir)
    logger.info("stack OOF %s = %.4f", thresholds.objective, metrics["stack"]["oof"][thresholds.objective])
    return ensemble


def _meta_folds(kfold: np.ndarray, rows: np.ndarray, run_dir: Path, config: EnsembleConfig) -> np.ndarray:
    if len(np.unique(kfold)) >= 2:
        return kfold
    from .cv import make_folds

    return make_folds(load_array(run_dir / "train_labels.npy")[rows], config.cv, "kfold")


def _stacked_config(config: EnsembleConfig, names: list[str]) -> EnsembleConfig:
    data = config.to_dict()
    data["members"] = [m for m in data["members"] if m["name"] in names]
    return EnsembleConfig.from_dict(data)


def _metrics(
    run_dir: Path,
    names: list[str],
    oof: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    stack_oof: np.ndarray,
    thresholds: ThresholdOptimizer,
    stacker: Stacker,
) -> dict:
    """Members are scored at 0.5 and at their own OOF-tuned thresholds; the stack at its thresholds."""
    result: dict = {"members": {}, "stack": {"oof": evaluate(labels[rows], thresholds.predict(stack_oof[rows]))}}
    eval_labels = load_array(run_dir / "eval_labels.npy").astype(int) if (run_dir / "eval_labels.npy").is_file() else None
    for i, name in enumerate(names):
        own = ThresholdOptimizer(thresholds.objective, thresholds.step, thresholds.shrinkage, thresholds.prior_count)
        member_rows = np.flatnonzero(~np.isnan(oof[:, i]).any(axis=1))
        own.fit(oof[member_rows, i], labels[member_rows])
        entry = {"oof": evaluate(labels[member_rows], own.predict(oof[member_rows, i])), "oof_at_0.5": evaluate(labels[member_rows], (oof[member_rows, i] >= 0.5).astype(int))}
        if eval_labels is not None:
            member_eval = load_array(run_dir / "members" / name / "eval.npy")
            entry["eval"] = evaluate(eval_labels, own.predict(member_eval))
            entry["eval_at_0.5"] = evaluate(eval_labels, (member_eval >= 0.5).astype(int))
        result["members"][name] = entry
    if eval_labels is not None:
        stack_eval = stacker.predict_proba(_member_stack(run_dir, names, "eval"))
        save_array(run_dir / "stack_eval.npy", stack_eval)
        result["stack"]["eval"] = evaluate(eval_labels, thresholds.predict(stack_eval))
    return result


def _write_submission(run_dir: Path, names: list[str], stacker: Stacker, thresholds: ThresholdOptimizer) -> None:
    from .data import write_submission

    if not (run_dir / "test_ids.json").is_file():
        return
    ids = read_json(run_dir / "test_ids.json")
    test_proba = stacker.predict_proba(_member_stack(run_dir, names, "test"))
    save_array(run_dir / "stack_test.npy", test_proba)
    write_submission(run_dir / "submission.csv", ids, thresholds.predict(test_proba))


def _report(run_dir: Path) -> None:
    try:
        from .report import build_report
    except ImportError as exc:  # plotting is optional (matplotlib)
        logger.warning("report skipped: %s", exc)
        return
    build_report(run_dir)
