"""Write a synthetic run folder in the format ``fit`` + ``stack`` produce, so report/registry
tests need neither the core nor any model.

Labels are drawn from a correlated latent Gaussian with SemEval-like base rates (anger and
disgust co-occur, joy and optimism co-occur, ...); each member's probabilities are the labels
plus a shared noise term (so members correlate) and its own noise term; the stack averages
the members with less noise, so it scores above them like a real stacker would.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedensemble.fileio import atomic_write_text, save_array, write_json
from embedensemble.labels import EMOTIONS, N_LABELS
from embedensemble.metrics import evaluate, f1_threshold_curve
from embedensemble.run_folder import RunFolder

BASE_RATES = np.array([0.37, 0.14, 0.38, 0.18, 0.36, 0.10, 0.29, 0.12, 0.29, 0.05, 0.05])
_PAIRS = [(0, 2, 0.7), (4, 6, 0.6), (4, 5, 0.4), (7, 8, 0.5), (3, 8, 0.3), (0, 4, -0.3)]


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    from scipy.stats import norm

    cov = np.eye(N_LABELS)
    for i, j, r in _PAIRS:
        cov[i, j] = cov[j, i] = r
    z = rng.multivariate_normal(np.zeros(N_LABELS), cov, size=n, method="eigh")
    return (z > norm.ppf(1 - BASE_RATES)).astype(np.int8)


def _proba(y: np.ndarray, shared: np.ndarray, rng: np.random.Generator, strength: float, noise: float) -> np.ndarray:
    logit = strength * (2 * y - 1) + shared + noise * rng.standard_normal(y.shape) - 0.8
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def _best_thresholds(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    grid = np.round(np.arange(0.05, 0.96, 0.02), 2)
    return {e: float(grid[int(np.argmax(f1_threshold_curve(y[:, k], p[:, k], grid)))]) for k, e in enumerate(EMOTIONS)}


def _score(y: np.ndarray, p: np.ndarray, thr: np.ndarray) -> dict:
    keep = ~np.isnan(p).any(axis=1)
    return evaluate(y[keep], (p[keep] >= thr).astype(np.int8))


def _nested_score(y: np.ndarray, p: np.ndarray, n_folds: int = 5) -> dict:
    """Like the core's "oof": each fold scored at thresholds tuned on the other folds."""
    keep = np.flatnonzero(~np.isnan(p).any(axis=1))
    y, p = y[keep], p[keep]
    folds = np.arange(len(keep)) % n_folds
    predicted = np.zeros_like(y)
    for k in range(n_folds):
        tuned = _best_thresholds(y[folds != k], p[folds != k])
        predicted[folds == k] = p[folds == k] >= np.array([tuned[e] for e in EMOTIONS])
    return evaluate(y, predicted)


def make_fake_run(
    path: str | Path,
    n_train: int = 200,
    members: Sequence[str] = ("a", "b"),
    with_eval: bool = True,
    seed: int = 0,
    holdout_member: str | None = None,
    objective: str = "macro_f1",
) -> Path:
    """Write a complete synthetic run into ``path`` (created) and return it.

    ``holdout_member``: that member's OOF has NaN rows (only 30% held out), like a member
    cross-fitted in holdout mode; the stack's OOF then has NaN rows too.
    """
    run = Path(path)
    folder = RunFolder(run)
    rng = np.random.default_rng(seed)
    n_eval, n_test = (max(n_train // 2, 20) if with_eval else 0), 30
    y = _labels(rng, n_train)
    y_eval = _labels(rng, n_eval) if with_eval else None
    shared = 0.8 * rng.standard_normal((n_train, N_LABELS))
    shared_eval = 0.8 * rng.standard_normal((n_eval, N_LABELS))
    holdout_rows = rng.random(n_train) > 0.3

    member_cfgs, member_metrics, oofs, evals = [], {}, [], []
    for i, name in enumerate(members):
        cfg = {"name": name, "kind": "head", "features": ["tfidf", "all-MiniLM-L6-v2", "e5-base"][i % 3],
               "head": ["logreg", "lgbm"][i % 2], "head_params": {}, "backbone": None, "params": {}, "cv": None}
        cv_mode = "kfold"
        oof = _proba(y, shared, rng, 1.0 + 0.3 * i, 1.2)
        if name == holdout_member:
            cfg["cv"] = cv_mode = "holdout"
            oof[holdout_rows] = np.nan
        member = folder.member(name)
        save_array(member.array_file("oof"), oof)
        save_array(member.array_file("test"), _proba(np.zeros((n_test, N_LABELS), np.int8), 0, rng, 0.5, 1.0))
        write_json(member.status_file,
                   {"config": cfg, "status": "done", "fit_seconds": float(3.5 + 10 * i), "cv_mode": cv_mode})
        # like the core: members scored at their own OOF-tuned thresholds and at 0.5
        keep = ~np.isnan(oof).any(axis=1)
        own = _best_thresholds(y[keep], oof[keep])
        own_thr = np.array([own[e] for e in EMOTIONS])
        entry = {"oof": _nested_score(y, oof), "oof_thresholds_tuned_on_same_rows": _score(y, oof, own_thr),
                 "oof_at_0.5": _score(y, oof, np.full(N_LABELS, 0.5))}
        if with_eval:
            ev = _proba(y_eval, shared_eval, rng, 1.0 + 0.3 * i, 1.2)
            save_array(member.array_file("eval"), ev)
            entry["eval"] = _score(y_eval, ev, own_thr)
            entry["eval_at_0.5"] = _score(y_eval, ev, np.full(N_LABELS, 0.5))
            evals.append(ev)
        member_metrics[name] = entry
        member_cfgs.append(cfg)
        oofs.append(oof)

    stack_oof = _proba(y, shared, rng, 1.0 + 0.3 * len(members), 1.1)
    stack_oof[np.isnan(np.stack(oofs)).any(axis=(0, 2))] = np.nan
    thresholds = _best_thresholds(y, stack_oof)
    thr = np.array([thresholds[e] for e in EMOTIONS])
    stack_metrics = {"oof": _nested_score(y, stack_oof), "oof_thresholds_tuned_on_same_rows": _score(y, stack_oof, thr)}
    save_array(folder.stack_file("oof"), stack_oof)
    if with_eval:
        stack_eval = _proba(y_eval, shared_eval, rng, 1.0 + 0.3 * len(members), 1.1)
        save_array(folder.stack_file("eval"), stack_eval)
        save_array(folder.eval_labels_file, y_eval)
        stack_metrics["eval"] = _score(y_eval, stack_eval, thr)
    save_array(folder.train_labels_file, y)

    write_json(folder.config_file, {
        "name": run.name, "members": member_cfgs, "seed": seed, "cache_dir": None, "device": None,
        "cv": {"n_folds": 5, "mode": "kfold", "holdout_fraction": 0.2, "seed": 42},
        "stack": {"objective": objective, "meta_learner": "logreg", "meta_C": 1.0, "threshold_step": 0.02,
                  "threshold_shrinkage": 1.0, "threshold_prior_count": 30.0, "members": None},
    })
    created = _dt.datetime(2025, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(hours=seed)
    write_json(folder.run_file, {
        "created": created.isoformat(), "data_dir": "/data/semeval", "data_kind": "semeval",
        "n_train": n_train, "n_test": n_test, "n_eval": n_eval, "versions": {"embedensemble": "0.0.0", "numpy": np.__version__},
    })
    write_json(folder.thresholds_file, {"objective": objective, "thresholds": thresholds})
    write_json(folder.metrics_file, {
        "objective": objective, "members": member_metrics, "stack": stack_metrics,
        "stacker_rows": int((~np.isnan(stack_oof).any(axis=1)).sum()), "holdout_only": holdout_member is not None,
        "members_stacked": list(members),
        "scores": {"oof": "train rows, out-of-fold; thresholds tuned on the other folds",
                   "oof_thresholds_tuned_on_same_rows": "train rows, out-of-fold; thresholds tuned on the same rows"},
    })
    rows = ["ID\tTweet\t" + "\t".join(EMOTIONS)] + [f"t{i}\tfake tweet {i}\t" + "\t".join("0" * N_LABELS) for i in range(n_test)]
    atomic_write_text(folder.submission_file, "\n".join(rows) + "\n")
    return run
