"""``python -m embedensemble.refit``: each stacked member retrained once on all train rows.

    python -m embedensemble.refit --run artifacts/default

A k-fold member predicts with K fold models whose probabilities are averaged; refitted
(AutoGluon's ``refit_full``), it is one model trained on every train row, so prediction runs one
model per member instead of K. The stacker and thresholds stay those of the run: they were
learned on out-of-fold probabilities, which a refitted member cannot give. The refitted models go
to ``members/<name>/full/`` (reused by a rerun while the data and config are the same) and the
ensemble to ``ensemble_full/``, next to the run's own ``ensemble/``.

A member that reads another member's fold models (``features: "finetuned:<name>"``, trained on
out-of-fold embeddings) keeps its K fold models. ``metrics_full.json`` puts the refitted
ensemble's eval-split quality next to the K-fold ensemble's (when the run has an eval split), and
how often the two agree on the test split.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._cli import add_verbosity, apply_verbosity, member_list, run_cli
from ._logging import get_logger
from .config import EnsembleConfig, MemberConfig
from .errors import RunNotFoundError
from .fileio import load_array, save_array, write_json
from .metrics import evaluate
from .run_data import RunData, load_run_data
from .run_folder import RunFolder, data_digest, fold_done_file, fold_prediction_file, read_fold_done

logger = get_logger(__name__)


def _stacked_members(run: RunFolder) -> list[str]:
    from .manifest import verify_folder

    if not run.ensemble_dir.is_dir():
        raise RunNotFoundError(f"run {run.path} has no ensemble: run `python -m embedensemble.stack --run {run.path}` first")
    return [m["name"] for m in verify_folder(run.ensemble_dir)["members"]]


def refit_member(run: RunFolder, member: MemberConfig, config: EnsembleConfig, data: RunData, context: Any) -> Path:
    """Train ``member`` on all train rows into ``members/<name>/full/`` (kept if already done on the same data/config)."""
    import dataclasses

    from .members.base import build_member

    full = run.member_full_dir(member.name)
    record = {"config": dataclasses.asdict(member), "data": data_digest(data.train.ids, data.train.texts, data.train.labels)}
    done = read_fold_done(full)
    if done is not None and {k: done.get(k) for k in record} == record:
        logger.info("member %s: refitted model already done; reusing it", member.name)
        return full
    partial = full.with_name(full.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    model = build_member(member, context)
    model.fit_rows(data.train, np.arange(len(data.train)))
    fit_seconds = time.perf_counter() - started
    model.save(partial)
    for split, corpus in (("test", data.test), ("eval", data.eval)):
        if corpus is not None:
            save_array(fold_prediction_file(partial, split), model.predict_split(split, corpus.texts))
    if hasattr(model, "release"):
        model.release()
    write_json(fold_done_file(partial), {**record, "fit_seconds": round(fit_seconds, 2), "n_train": len(data.train)})
    shutil.rmtree(full, ignore_errors=True)
    os.replace(partial, full)
    logger.info("member %s refitted on %d rows in %.1fs", member.name, len(data.train), fit_seconds)
    return full


def refit_full(
    run_dir: str | os.PathLike, *, members: Sequence[str] | None = None, data_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Refit the run's stacked members (or ``members``) on all rows; save ``ensemble_full/`` and ``metrics_full.json``."""
    from .ensemble import EmotionEnsemble
    from .members.base import MemberContext

    run = RunFolder(run_dir)
    run.require_config()
    config = EnsembleConfig.load(run.config_file)
    stacked = _stacked_members(run)
    wanted = set(members) if members else set(stacked)
    unknown = sorted(wanted - set(stacked))
    if unknown:
        raise RunNotFoundError(f"run {run.path} stacked {stacked}; {unknown} are not among them")
    teacher = EmotionEnsemble.load(run.ensemble_dir)
    data = load_run_data(run, data_dir)
    context = MemberContext(cache_dir=config.cache_dir, seed=config.seed, device=config.device)
    folds: dict[str, list[Path]] = {}
    refitted, kept = [], []
    for name in stacked:
        member = config.member(name)
        if name in wanted and not member.requires:
            folds[name] = [refit_member(run, member, config, data, context)]
            refitted.append(name)
        else:
            # Trained on out-of-fold embeddings of another member's folds: only its K fold models are valid.
            folds[name] = run.finished_folds(name)
            kept.append(name)
            logger.info(
                "member %s keeps its %d fold models (%s)",
                name,
                len(folds[name]),
                "reads another member" if member.requires else "not asked",
            )
    full = EmotionEnsemble.from_parts(teacher.config, folds, teacher.stacker_, teacher.thresholds_)
    full.save(run.full_ensemble_dir)
    metrics = _compare(run, stacked, refitted, teacher, data)
    metrics.update(refitted=refitted, kept_k_folds=kept, models_per_prediction={n: len(f) for n, f in folds.items()})
    write_json(run.full_metrics_file, metrics)
    return metrics


def _member_split(run: RunFolder, name: str, split: str, refitted: list[str]) -> np.ndarray:
    if name in refitted:
        return load_array(fold_prediction_file(run.member_full_dir(name), split))
    return run.member_array(name, split)


def _compare(run: RunFolder, stacked: list[str], refitted: list[str], teacher: Any, data: RunData) -> dict[str, Any]:
    """Eval-split quality of refitted members and stack next to the K-fold ones; test-split agreement."""
    result: dict[str, Any] = {"members": {}, "stack": {}}
    thresholds = teacher.thresholds_
    labels = run.train_labels()
    for split, corpus in (("eval", data.eval), ("test", data.test)):
        if corpus is None:
            continue
        kfold = run.member_stack(stacked, split)
        full = np.stack([_member_split(run, n, split, refitted) for n in stacked], axis=1)
        stack_k, stack_full = teacher.stacker_.predict_proba(kfold), teacher.stacker_.predict_proba(full)
        agreement = float((thresholds.predict(stack_k) == thresholds.predict(stack_full)).mean())
        entry: dict[str, Any] = {"label_agreement": agreement, "mean_abs_proba_diff": float(np.abs(stack_k - stack_full).mean())}
        if split == "eval":
            y = corpus.labels.astype(int)
            entry.update(kfold=evaluate(y, thresholds.predict(stack_k)), full=evaluate(y, thresholds.predict(stack_full)))
            for i, name in enumerate(stacked):
                # Each member at its own thresholds tuned on its OOF, as the stack's metrics.json does.
                oof = run.member_oof(name)
                rows = np.isfinite(oof).all(axis=1)
                own = thresholds.clone()
                own.fit(oof[rows], labels[rows])
                result["members"][name] = {
                    "eval_kfold": evaluate(y, own.predict(kfold[:, i])),
                    "eval_full": evaluate(y, own.predict(full[:, i])),
                }
        result["stack"][split] = entry
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedensemble.refit",
        description="Retrain each stacked member once on all train rows and save ensemble_full/ (one model per member).",
    )
    parser.add_argument("--run", type=Path, required=True, help="a stacked run folder")
    parser.add_argument("--members", help="comma-separated subset of stacked members to refit (default: all)")
    parser.add_argument("--data", type=Path, help="data folder, if it moved since the run was fitted")
    add_verbosity(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_verbosity(args)
    members = member_list(args.members)
    metrics = refit_full(args.run, members=members, data_dir=args.data)
    run = RunFolder(args.run)
    evaluation = metrics["stack"].get("eval")
    if evaluation:
        print(f"eval macro-F1: K-fold {evaluation['kfold']['macro_f1']:.4f}, refitted {evaluation['full']['macro_f1']:.4f}")
    for split, entry in metrics["stack"].items():
        print(f"{split}: refitted and K-fold labels agree on {100 * entry['label_agreement']:.1f}% of decisions")
    print(f"refitted: {', '.join(metrics['refitted']) or '-'}; kept K folds: {', '.join(metrics['kept_k_folds']) or '-'}")
    print(f"ensemble: {run.full_ensemble_dir}")
    print(f"metrics:  {run.full_metrics_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
