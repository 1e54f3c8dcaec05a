"""Stack a fitted run in three steps: fit, score, write.

* :func:`fit_stack`: the stacker on members' out-of-fold (OOF) probabilities, its own OOF
  probabilities (refitted per meta-fold), per-emotion thresholds tuned on them, and the
  stacked probabilities of the run's eval/test splits.
* :func:`score_stack`: metrics of members and stack, each number named by the rows it is
  measured on and where its thresholds were tuned (see ``SCORE_KEYS``).
* :func:`write_stack`: ``ensemble/``, ``stack_{oof,eval,test}.npy``, ``thresholds.json``,
  ``submission.csv`` (when the run has a test split), ``metrics.json`` (last) and ``report/``.

:func:`stack_run` runs the three and returns the :class:`EmotionEnsemble`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._logging import get_logger
from .config import EnsembleConfig
from .cv import make_folds
from .ensemble import EmotionEnsemble
from .fileio import save_array, write_json
from .locking import run_lock
from .manifest import check_library_versions
from .metrics import evaluate
from .run_folder import RunFolder
from .stacker import Stacker, stacker_oof
from .thresholds import ThresholdOptimizer

logger = get_logger(__name__)

# What each score in metrics.json is measured on, and where its thresholds come from.
SCORE_KEYS = {
    "oof": "train rows, out-of-fold probabilities; thresholds tuned on the other (meta-)folds' rows, "
    "never on the rows scored (nested: the honest train estimate)",
    "oof_thresholds_tuned_on_same_rows": "train rows, out-of-fold probabilities; thresholds tuned on these same rows "
    "(optimistic: the thresholds have seen the rows they are scored on)",
    "oof_at_0.5": "train rows, out-of-fold probabilities; a fixed 0.5 threshold (nothing tuned)",
    "eval": "eval split (held out); thresholds tuned on all train OOF rows",
    "eval_at_0.5": "eval split (held out); a fixed 0.5 threshold",
}
DATA_INFO_KEYS = ("eval_overlap", "test_overlap")  # copied from run.json when the data loader reported them


@dataclass
class StackFit:
    """What :func:`fit_stack` learns: stacker, thresholds and the probabilities they are scored on."""

    config: EnsembleConfig
    names: list[str]  # stacked members, in config order
    labels: np.ndarray  # train labels [n, 11]
    rows: np.ndarray  # train rows every stacked member has OOF probabilities for
    member_oof: np.ndarray  # [n, members, 11], NaN where a member never held a row out
    meta_folds: np.ndarray  # fold of each of ``rows`` for the stacker's OOF and nested thresholds
    stacker: Stacker
    thresholds: ThresholdOptimizer
    stack_oof: np.ndarray  # [n, 11], NaN outside ``rows``
    split_proba: dict[str, np.ndarray] = field(default_factory=dict)  # stacked eval/test probabilities

    @property
    def holdout_only(self) -> bool:
        return len(self.rows) < len(self.labels)


def finished_members(run_dir: str | os.PathLike | RunFolder, config: EnsembleConfig, only: list[str] | None = None) -> list[str]:
    """Names of members whose cross-fit is done, in config order; ``only`` restricts them."""
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    return run.finished_members([m.name for m in config.members], only)


def fit_stack(run: RunFolder, *, objective: str | None = None, members: list[str] | None = None, decision: str | None = None) -> StackFit:
    """Fit the stacker and thresholds on the run's out-of-fold probabilities (``objective``/``decision``: see ``stack.*``)."""
    run.require_config()
    # Members fitted under other library versions are stacked as they are, but the user is told (as on load).
    check_library_versions(run.run_info().get("versions"), run.run_file)
    config = EnsembleConfig.load(run.config_file)
    names = finished_members(run, config, members or config.stack.members)
    labels = run.train_labels()
    oof = run.member_stack(names, "oof")
    # Holdout members predict only their held-out rows: the stacker learns where all members have OOF.
    rows = np.flatnonzero(~np.isnan(oof).any(axis=(1, 2)))
    meta_folds = _folds_of(rows, run, config, labels)
    stacker = Stacker(config.stack.meta_learner, config.stack.meta_C, config.seed, config.stack.meta_features)
    stack_oof_rows = stacker_oof(stacker, oof[rows], labels[rows], meta_folds)
    stacker.fit(oof[rows], labels[rows])
    thresholds = ThresholdOptimizer.from_stack(config.stack, objective, decision).fit(stack_oof_rows, labels[rows])
    stack_oof = np.full(labels.shape, np.nan, dtype=np.float32)
    stack_oof[rows] = stack_oof_rows
    split_proba = {}
    for split in ("eval", "test"):
        if all(run.member_array_file(n, split).is_file() for n in names) and _run_has(run, split):
            split_proba[split] = stacker.predict_proba(run.member_stack(names, split))
    return StackFit(config, names, labels, rows, oof, meta_folds, stacker, thresholds, stack_oof, split_proba)


def _run_has(run: RunFolder, split: str) -> bool:
    return run.eval_labels_file.is_file() if split == "eval" else run.test_ids_file.is_file()


def _folds_of(rows: np.ndarray, run: RunFolder, config: EnsembleConfig, labels: np.ndarray) -> np.ndarray:
    """The run's k-fold assignment of ``rows``, or new folds over them when they all share one fold."""
    kfold = run.folds("kfold")[rows]
    if len(np.unique(kfold)) >= 2:
        return kfold
    return make_folds(labels[rows], config.cv, "kfold")


def nested_threshold_predictions(optimizer: ThresholdOptimizer, proba: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """0/1 predictions of every row with thresholds tuned on the other folds' rows only.

    Scoring these gives an estimate in which no row's own label chose its threshold. (For the
    stack, the other folds' probabilities come from stackers that saw this fold's rows: a
    second-order effect the estimate does not remove.)
    """
    predicted = np.zeros(labels.shape, dtype=np.int8)
    for k in np.unique(folds):
        inside = folds == k
        fold_optimizer = optimizer.clone()
        fold_optimizer.fit(proba[~inside], labels[~inside])
        predicted[inside] = fold_optimizer.predict(proba[inside])
    return predicted


def score_stack(run: RunFolder, fit: StackFit) -> dict:
    """Metrics of every stacked member and of the stack (see ``SCORE_KEYS`` for what each is measured on)."""
    labels, rows = fit.labels, fit.rows
    stack = {
        "oof": evaluate(labels[rows], nested_threshold_predictions(fit.thresholds, fit.stack_oof[rows], labels[rows], fit.meta_folds)),
        "oof_thresholds_tuned_on_same_rows": evaluate(labels[rows], fit.thresholds.predict(fit.stack_oof[rows])),
    }
    eval_labels = run.eval_labels() if "eval" in fit.split_proba else None
    if eval_labels is not None:
        stack["eval"] = evaluate(eval_labels, fit.thresholds.predict(fit.split_proba["eval"]))
    members = {}
    for i, name in enumerate(fit.names):
        member_rows = np.flatnonzero(~np.isnan(fit.member_oof[:, i]).any(axis=1))
        proba, y = fit.member_oof[member_rows, i], labels[member_rows]
        own = fit.thresholds.clone().fit(proba, y)
        entry = {
            "oof": evaluate(y, nested_threshold_predictions(own, proba, y, _folds_of(member_rows, run, fit.config, labels))),
            "oof_thresholds_tuned_on_same_rows": evaluate(y, own.predict(proba)),
            "oof_at_0.5": evaluate(y, (proba >= 0.5).astype(int)),
        }
        if eval_labels is not None:
            member_eval = run.member_array(name, "eval")
            entry["eval"] = evaluate(eval_labels, own.predict(member_eval))
            entry["eval_at_0.5"] = evaluate(eval_labels, (member_eval >= 0.5).astype(int))
        members[name] = entry
    metrics = {
        "members": members,
        "stack": stack,
        "scores": {key: SCORE_KEYS[key] for key in SCORE_KEYS if key in stack or any(key in m for m in members.values())},
        "objective": fit.thresholds.objective,
        "stacker_rows": len(rows),
        "holdout_only": bool(fit.holdout_only),
        "members_stacked": fit.names,
    }
    info = run.run_info()
    metrics.update({key: info[key] for key in DATA_INFO_KEYS if info.get(key) is not None})
    return metrics


def write_stack(run: RunFolder, fit: StackFit, metrics: dict, *, write_report: bool = True) -> EmotionEnsemble:
    """Write the ensemble and every stack artifact (each atomically; metrics.json last); return the ensemble."""
    ensemble = EmotionEnsemble.from_parts(
        _stacked_config(fit.config, fit.names), {n: run.finished_folds(n) for n in fit.names}, fit.stacker, fit.thresholds
    )
    ensemble.save(run.ensemble_dir)
    save_array(run.stack_file("oof"), fit.stack_oof)
    for split, proba in fit.split_proba.items():
        save_array(run.stack_file(split), proba)
    fit.thresholds.save(run.thresholds_file)
    if "test" in fit.split_proba:
        from .data import write_submission

        write_submission(run.submission_file, run.test_ids(), fit.thresholds.predict(fit.split_proba["test"]))
    write_json(run.metrics_file, metrics)
    if write_report:
        _report(run)
    return EmotionEnsemble.load(run.ensemble_dir)


def stack_run(
    run_dir: str | os.PathLike,
    *,
    objective: str | None = None,
    members: list[str] | None = None,
    write_report: bool = True,
    decision: str | None = None,
) -> EmotionEnsemble:
    """Fit the stacker and thresholds on out-of-fold probabilities; save ensemble, metrics, submission."""
    run = RunFolder(run_dir)
    run.require_config()
    with run_lock(run):
        fit = fit_stack(run, objective=objective, members=members, decision=decision)
        metrics = score_stack(run, fit)
        ensemble = write_stack(run, fit, metrics, write_report=write_report)
    logger.info("stack OOF %s = %.4f (thresholds tuned on other folds)", fit.thresholds.objective, metrics["stack"]["oof"][fit.thresholds.objective])
    return ensemble


def _stacked_config(config: EnsembleConfig, names: list[str]) -> EnsembleConfig:
    data = config.to_dict()
    data["members"] = [m for m in data["members"] if m["name"] in names]
    return EnsembleConfig.from_dict(data)


def _report(run: RunFolder) -> None:
    try:
        from .report import build_report
    except ImportError as exc:  # plotting is optional (matplotlib)
        logger.warning("report skipped: %s", exc)
        return
    build_report(run.path)


def print_summary(run_dir: str | os.PathLike) -> None:
    """Print a stacked run's scores (eval split when it has one, else nested OOF) and where its outputs are."""
    from .fileio import read_json

    run = RunFolder(run_dir)
    metrics = read_json(run.metrics_file)
    split = "eval" if "eval" in metrics["stack"] else "oof"
    print(f"{'member':<28} {'macro-F1':>9} {'micro-F1':>9} {'Jaccard':>9}   ({split}: {SCORE_KEYS[split]})")
    rows = [(name, m[split]) for name, m in metrics["members"].items()] + [("STACK", metrics["stack"][split])]
    for name, m in rows:
        print(f"{name:<28} {m['macro_f1']:>9.4f} {m['micro_f1']:>9.4f} {m['jaccard']:>9.4f}")
    if run.submission_file.is_file():
        print(f"submission: {run.submission_file}")
    print(f"ensemble:   {run.ensemble_dir}")


def stack_and_print(run_dir: str | os.PathLike | Path, objective: str | None = None, members: list[str] | None = None, report: bool = True,
                    decision: str | None = None) -> None:
    """``stack`` as the command line runs it: stack, then :func:`print_summary`."""
    stack_run(run_dir, objective=objective, members=members, write_report=report, decision=decision)
    print_summary(run_dir)
