"""Re-select the default configuration's choices on Kaggle train.csv out-of-fold predictions (never on dev).

    python -m benchmarks.selection [--seeds 42,7,1234] [--out benchmarks/results/selection.json]

Choices, each scored by out-of-fold (OOF) macro-F1 over 5 folds, for several fold/model seeds, on train.csv
without the SemEval dev tweets it contains (so that dev stays a check that chose nothing):

* the logistic-regression ``C`` of each logreg member (TF-IDF, MiniLM, mpnet features);
* the LightGBM member's ``class_weight`` (``"balanced"`` vs none);
* the stack's member set, among the frozen (not fine-tuned) members of the default config.

Scores use *nested* thresholds: for each fold, per-emotion thresholds are tuned on the OOF
predictions of the other folds and applied to that fold, so no score has seen its own rows twice.
A candidate replaces the current default only if it beats it in every seed and by at least
``MIN_GAIN`` on average; otherwise the default stays. The candidates' members are fitted with the
library's own pipeline (``fit_members``) into ``artifacts/selection/seed-<seed>`` (resumable),
reading embeddings from the embedding cache when present.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import RESULTS_DIR, ROOT, logger, machine_info, now_iso, setup_logging

DATA = ROOT.parent / "shared" / "data" / "kaggle-emotion"
SEMEVAL = ROOT.parent / "shared" / "data" / "semeval2018-ec"
C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)
LOGREG_FEATURES = ("tfidf", "minilm", "mpnet")
CLASS_WEIGHTS = ("balanced", None)
MIN_GAIN = 0.003  # mean macro-F1 gain (and a win in every seed) needed to move off the current default


def _slug(value: Any) -> str:
    return "none" if value is None else str(value).replace(".", "p")


def candidates(default: Any, features: tuple[str, ...] = LOGREG_FEATURES) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Candidate member configs and, per choice, ``options`` ({value: candidate member name}), the
    ``current`` value and the default ``member`` it configures."""
    from embedensemble.config import MemberConfig

    by_name = {m.name: m for m in default.members}
    members, choices = [], {}
    for name in features:
        base = by_name[f"{name}-logreg"]
        current = base.head_params.get("C", 1.0)
        options = {}
        for c in C_GRID:
            options[c] = f"{base.name}-C{_slug(c)}"
            members.append(MemberConfig(name=options[c], features=base.features, head="logreg", head_params={**base.head_params, "C": c}))
        choices[f"{base.name} C"] = {"member": base.name, "param": "C", "current": current, "options": options}
    lgbm = by_name["minilm-lgbm"]
    if lgbm.features not in features:
        return members, choices
    current = lgbm.head_params.get("class_weight", "balanced")  # the LightGBM head's own default
    options = {}
    for weight in CLASS_WEIGHTS:
        name = f"minilm-lgbm-cw-{_slug(weight)}"
        members.append(MemberConfig(name=name, features="minilm", head="lgbm", head_params={**lgbm.head_params, "class_weight": weight}))
        options[weight] = name
    choices["minilm-lgbm class_weight"] = {"member": lgbm.name, "param": "class_weight", "current": current, "options": options}
    return members, choices


def _optimizer(stack: Any) -> Any:
    from embedensemble.thresholds import ThresholdOptimizer

    return ThresholdOptimizer.from_stack(stack, "macro_f1")


def nested_macro_f1(proba: np.ndarray, labels: np.ndarray, folds: np.ndarray, stack: Any) -> float:
    """Macro-F1 of OOF probabilities with each fold's thresholds tuned on the other folds' rows only."""
    from embedensemble.metrics import evaluate
    from embedensemble.stacking import nested_threshold_predictions

    return round(evaluate(labels, nested_threshold_predictions(_optimizer(stack), proba, labels, folds))["macro_f1"], 5)


def same_rows_macro_f1(proba: np.ndarray, labels: np.ndarray, stack: Any) -> float:
    """Macro-F1 with thresholds tuned on the very rows scored (optimistic; reported for comparison)."""
    from embedensemble.metrics import evaluate

    return round(evaluate(labels, _optimizer(stack).fit(proba, labels).predict(proba))["macro_f1"], 5)


def score_seed(default: Any, members: list[Any], choices: dict[str, dict[str, Any]], train: Any, seed: int, runs: Path) -> dict[str, Any]:
    """Fit every candidate member on one seed's folds; score members and stacks of the default members."""
    import dataclasses

    from embedensemble.fitting import fit_members
    from embedensemble.run_folder import RunFolder
    from embedensemble.stacker import Stacker, stacker_oof

    config = dataclasses.replace(default, name=f"selection-seed-{seed}", members=members, seed=seed,
                                 cv=dataclasses.replace(default.cv, seed=seed, mode="kfold"))
    run = RunFolder(runs / f"seed-{seed}")
    started = time.perf_counter()
    fit_members(config, train, run.path, data_info={"benchmark": "selection", "seed": seed})
    fit_seconds = round(time.perf_counter() - started, 1)
    labels, folds = run.train_labels(), run.folds("kfold")
    result: dict[str, Any] = {"seed": seed, "fit_seconds": fit_seconds, "members": {}, "stacks": {}}
    for member in members:
        proba = run.member_oof(member.name)
        result["members"][member.name] = {"nested": nested_macro_f1(proba, labels, folds, config.stack),
                                          "same_rows": same_rows_macro_f1(proba, labels, config.stack)}
        logger.info("seed %d %s: OOF macro-F1 %.4f (nested thresholds)", seed, member.name, result["members"][member.name]["nested"])
    # Each default member at its current setting is one of the candidates: stack every subset of them.
    current = {spec["member"]: spec["options"][spec["current"]] for spec in choices.values()}
    current = {m.name: current[m.name] for m in default.members if m.name in current}
    for size in range(1, len(current) + 1):
        for subset in itertools.combinations(current, size):
            member_proba = np.stack([run.member_oof(current[name]) for name in subset], axis=1)
            stacker = Stacker(config.stack.meta_learner, config.stack.meta_C, config.seed)
            proba = stacker_oof(stacker, member_proba, labels, folds)
            result["stacks"]["+".join(subset)] = {"nested": nested_macro_f1(proba, labels, folds, config.stack),
                                                  "same_rows": same_rows_macro_f1(proba, labels, config.stack)}
    return result


def decide(choices: dict[str, dict[str, Any]], seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per choice: mean nested OOF macro-F1 per option and the decision (keep unless a clear, consistent gain)."""
    decisions: dict[str, Any] = {}
    for choice, spec in choices.items():
        scores = {str(value): [s["members"][name]["nested"] for s in seeds] for value, name in spec["options"].items()}
        current = str(spec["current"])
        best = max(scores, key=lambda v: np.mean(scores[v]))
        gains = np.array(scores[best]) - np.array(scores[current])
        change = best != current and bool(np.all(gains > 0)) and float(gains.mean()) >= MIN_GAIN
        decisions[choice] = {"member": spec["member"], "param": spec["param"], "current": spec["current"],
                             "mean_nested_macro_f1": {v: round(float(np.mean(x)), 4) for v, x in scores.items()},
                             "per_seed": scores, "best": best, "best_minus_current": [round(float(g), 4) for g in gains],
                             "chosen": best if change else current, "changed": change}
    stacks = {name: [s["stacks"][name]["nested"] for s in seeds] for name in seeds[0]["stacks"]}
    full = max(stacks, key=len)  # every default member that was fitted
    best = max(stacks, key=lambda v: np.mean(stacks[v]))
    gains = np.array(stacks[best]) - np.array(stacks[full])
    change = best != full and bool(np.all(gains > 0)) and float(gains.mean()) >= MIN_GAIN
    decisions["stack member set"] = {"current": full, "mean_nested_macro_f1": {v: round(float(np.mean(x)), 4) for v, x in stacks.items()},
                                     "per_seed": stacks, "best": best, "best_minus_current": [round(float(g), 4) for g in gains],
                                     "chosen": best if change else full, "changed": change}
    return decisions


def _without_held_out(train: Any, held_out: Path | None) -> tuple[Any, dict[str, Any]]:
    """``train`` without the rows whose (normalised) text is one of ``held_out``'s eval tweets."""
    from embedensemble import load_dataset
    from embedensemble.data import overlap_mask

    if not held_out or not str(held_out):
        return train, {"folder": None, "rows_removed": 0}
    dev = load_dataset(held_out).eval
    if dev is None:
        raise ValueError(f"{held_out} has no eval split to hold out")
    keep = np.flatnonzero(~overlap_mask(dev, train))
    logger.info("held out %d train rows that are %s eval tweets; selecting on %d rows", len(train) - len(keep), held_out, len(keep))
    return train.subset(keep), {"folder": str(held_out), "split": "eval (dev)", "rows_removed": len(train) - len(keep)}


def main(argv: list[str] | None = None) -> int:
    from embedensemble import EnsembleConfig, load_dataset

    parser = argparse.ArgumentParser(prog="python -m benchmarks.selection", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="42,7,1234", help="comma-separated fold/model seeds")
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "default.json", help="the config whose choices are re-selected")
    parser.add_argument("--data", type=Path, default=DATA, help="a Kaggle-style folder; only its train.csv is used")
    parser.add_argument("--features", default=",".join(LOGREG_FEATURES),
                        help="features whose members are re-selected (and stacked); a backbone left out is not embedded")
    parser.add_argument("--held-out", type=Path, default=SEMEVAL,
                        help="a data folder whose eval (dev) tweets are removed from train first, so that dev stays a final check "
                             "(Kaggle train.csv holds every SemEval dev tweet); '' keeps every row")
    parser.add_argument("--runs", type=Path, default=ROOT / "artifacts" / "selection")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "selection.json")
    args = parser.parse_args(argv)
    setup_logging(quick=False)
    default = EnsembleConfig.load(args.config)
    members, choices = candidates(default, tuple(f.strip() for f in args.features.split(",") if f.strip()))
    train, removed = _without_held_out(load_dataset(args.data).train, args.held_out)
    started, seeds = now_iso(), []
    for seed in (int(s) for s in args.seeds.split(",")):
        seeds.append(score_seed(default, members, choices, train, seed, args.runs))
        _write(args, default, train, removed, started, seeds, choices)  # after every seed: a long run keeps its progress
    result = _write(args, default, train, removed, started, seeds, choices)
    for choice, d in result["decisions"].items():
        logger.info("%s: current %s, best %s (%s), chosen %s", choice, d["current"], d["best"], d["best_minus_current"], d["chosen"])
    return 0


def _write(args: argparse.Namespace, default: Any, train: Any, removed: dict[str, Any], started: str, seeds: list[dict[str, Any]], choices: dict[str, Any]) -> dict[str, Any]:
    from embedensemble.fileio import write_json

    result = {"section": "selection", "machine": machine_info(), "started": started, "finished": now_iso(),
              "data": {"folder": str(args.data), "split": "Kaggle train.csv (SemEval-2018 E-c train+dev) without the dev tweets",
                       "n_train": len(train), "held_out": removed},
              "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
              "n_folds": default.cv.n_folds, "metric": "macro-F1 on OOF predictions, thresholds tuned on the other folds (nested)",
              "rule": f"change a default only if the best option beats it in every seed and by >= {MIN_GAIN} on average",
              "seeds": seeds, "features": args.features.split(","),
              "decisions": decide(choices, seeds)}
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    sys.exit(main())
