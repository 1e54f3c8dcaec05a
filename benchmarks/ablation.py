"""Ablation of accuracy options on Kaggle train out-of-fold (OOF) predictions (issue 15).

    python -m benchmarks.ablation --runs R42,R7,R1234 [--normalised N42,N7,N1234] [--meta-seeds 0,1,2]
    python -m benchmarks.ablation --render     # docs/ablation.md from benchmarks/results/ablation.json only

``--runs``: run folders of the default config fitted with different fold/model seeds
(``python -m embedensemble.fit --seed S --run R``); their members' OOF probabilities are the input.
``--normalised``: run folders (same seeds, in the same order) holding members fitted with
``params: {"normalise": true}``, named ``<member>-norm``.

Every score is macro-F1 (also micro-F1, Jaccard) of train rows with *nested* thresholds: per-emotion
thresholds tuned on the other folds' rows only. Stacker and threshold options are scored on
meta-folds drawn with each ``--meta-seeds`` seed; members on their run's own folds. Train rows whose
text is a SemEval dev tweet (``--held-out``) are left out of every meta-level fit and score, so dev
chooses nothing. A gain is the paired difference to the default on the same run and meta-folds,
averaged over meta seeds; the table gives its mean ± sd over the runs (fold/model seeds), and calls
it ``kept`` only when the mean exceeds 2 sd (and 0); gains under 2 sd are noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import RESULTS_DIR, ROOT, logger, machine_info, now_iso, setup_logging

DATA = ROOT.parent / "shared" / "data" / "kaggle-emotion"
SEMEVAL = ROOT.parent / "shared" / "data" / "semeval2018-ec"
DOC = ROOT / "docs" / "ablation.md"
METRICS = ("macro_f1", "micro_f1", "jaccard")
StackFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (train proba, train labels, test proba) -> stacked proba


def _library_stacker(**params: Any) -> StackFn:
    from embedensemble.stacker import Stacker

    return lambda p, y, q: Stacker(**params).fit(p, y).predict_proba(q)


def _per_emotion(make_model: Callable[[], Any], features: str = "all", regression: bool = False) -> StackFn:
    """A per-emotion sklearn-style meta-learner on standardised member logits (alternatives not in the library)."""
    from embedensemble.labels import N_LABELS
    from embedensemble.stacker import feature_columns, to_logits

    def fit_predict(p: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
        X, Z = to_logits(p), to_logits(q)
        mean, scale = X.mean(0), X.std(0) + 1e-6
        X, Z = (X - mean) / scale, (Z - mean) / scale
        out = np.zeros((len(q), N_LABELS))
        for j in range(N_LABELS):
            cols = feature_columns(j, p.shape[1], features)
            model = make_model().fit(X[:, cols], y[:, j])
            out[:, j] = np.clip(model.predict(Z[:, cols]), 0, 1) if regression else model.predict_proba(Z[:, cols])[:, 1]
        return out

    return fit_predict


def _rank_average(p: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Each member's probability as its quantile among the training rows, averaged over members."""
    ranks = np.zeros(q.shape[:1] + q.shape[2:])
    for m in range(p.shape[1]):
        for j in range(p.shape[2]):
            ranks[:, j] += np.searchsorted(np.sort(p[:, m, j]), q[:, m, j]) / len(p)
    return ranks / p.shape[1]


def stacker_variants(with_lgbm: bool) -> dict[str, tuple[str, StackFn]]:
    from sklearn.linear_model import LogisticRegression, Ridge

    variants: dict[str, tuple[str, StackFn]] = {
        "all_C1": ("per-emotion logistic regression, C=1, all members' logits of all emotions (the stacker before this ablation)",
                   _library_stacker(features="all")),
        "same_emotion": ("stack.meta_features='same_emotion': each emotion reads only members' logits of that emotion (the default since)",
                         _library_stacker(features="same_emotion")),
        "same_emotion_C0.1": ("same_emotion with meta_C=0.1", _library_stacker(features="same_emotion", C=0.1)),
        "all_C0.1": ("all features, meta_C=0.1", _library_stacker(C=0.1, features="all")),
        "all_C0.01": ("all features, meta_C=0.01", _library_stacker(C=0.01, features="all")),
        "class_weight_balanced": ("logistic regression with class_weight='balanced'",
                                  _per_emotion(lambda: LogisticRegression(class_weight="balanced", max_iter=2000))),
        "ridge_alpha100": ("ridge regression (alpha=100) on logits, output clipped to [0, 1]", _per_emotion(lambda: Ridge(alpha=100.0), regression=True)),
        "mean": ("meta_learner='mean': average of members' probabilities", _library_stacker(meta_learner="mean")),
        "rank_average": ("members' probabilities as training quantiles, averaged", _rank_average),
    }
    if with_lgbm:
        variants["lgbm_all"] = ("stack.meta_learner='lgbm': LightGBM per emotion on all logits (400 trees, lr 0.02, 5 leaves)",
                                _library_stacker(meta_learner="lgbm", features="all"))
        variants["lgbm_same_emotion"] = ("meta_learner='lgbm' with meta_features='same_emotion'",
                                         _library_stacker(meta_learner="lgbm", features="same_emotion"))
    return variants


def _half_best_f1(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-emotion threshold = half the emotion's best F1 (the F1-optimal rule for calibrated probabilities)."""
    from embedensemble.metrics import f1_threshold_curve

    grid = np.round(np.arange(0.02, 1.0, 0.02), 6)
    return np.array([f1_threshold_curve(labels[:, j], proba[:, j], grid).max() / 2 for j in range(labels.shape[1])])


THRESHOLD_VARIANTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "thresholds_default": ("grid 0.02, smoothing 1, shrinkage 1 toward the pooled threshold, prior_count 30 (today's)", {}),
    "no_shrinkage": ("threshold_shrinkage=0 (each emotion its own best threshold)", {"shrinkage": 0.0}),
    "shrinkage_2": ("threshold_shrinkage=2", {"shrinkage": 2.0}),
    "prior_count_100": ("threshold_prior_count=100 (rare emotions pulled harder toward the pooled threshold)", {"prior_count": 100.0}),
    "smoothing_0": ("no smoothing of the F1 curve", {"smoothing": 0}),
    "smoothing_3": ("F1 curve smoothed over 7 grid points", {"smoothing": 3}),
    "step_0.01": ("threshold grid step 0.01", {"step": 0.01}),
    "half_best_f1": ("threshold = best F1 / 2 per emotion (calibration-based rule)", None),
}


def nested_scores(proba: np.ndarray, labels: np.ndarray, folds: np.ndarray, thresholds: dict[str, Any] | None = None,
                  objective: str = "macro_f1") -> dict[str, float]:
    """Metrics with thresholds tuned on the other folds (``thresholds``: ThresholdOptimizer params, None: best-F1/2)."""
    from embedensemble.metrics import evaluate
    from embedensemble.stacking import nested_threshold_predictions
    from embedensemble.thresholds import ThresholdOptimizer

    if thresholds is not None:
        predicted = nested_threshold_predictions(ThresholdOptimizer(objective, **thresholds), proba, labels, folds)
    else:
        predicted = np.zeros(labels.shape, dtype=np.int8)
        for k in np.unique(folds):
            inside = folds == k
            predicted[inside] = proba[inside] >= _half_best_f1(proba[~inside], labels[~inside])
    scores = evaluate(labels, predicted)
    return {m: float(scores[m]) for m in METRICS} | {"per_emotion_f1": scores["per_emotion_f1"]}


def stack_oof(fit_predict: StackFn, proba: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    out = np.zeros(labels.shape)
    for k in np.unique(folds):
        inside = folds == k
        out[inside] = fit_predict(proba[~inside], labels[~inside], proba[inside])
    return out


def _member_oof(run: Path, names: list[str]) -> np.ndarray:
    from embedensemble.run_folder import RunFolder

    return RunFolder(run).member_stack(names, "oof").astype(np.float64)


def _kept_rows(run: Path, held_out: Path | None) -> tuple[np.ndarray, int]:
    """Train rows of ``run`` that are not SemEval dev tweets (all rows without ``held_out``)."""
    from embedensemble import load_dataset
    from embedensemble.data import overlap_mask
    from embedensemble.run_folder import RunFolder

    folder = RunFolder(run)
    labels = folder.train_labels()
    if not held_out:
        return np.arange(len(labels)), 0
    train = load_dataset(DATA).train
    if not np.array_equal(np.asarray(train.labels), labels):
        raise ValueError(f"{run}: train_labels.npy is not {DATA}/train.csv's labels; cannot match dev tweets to rows")
    keep = np.flatnonzero(~overlap_mask(load_dataset(held_out).eval, train))
    return keep, len(labels) - len(keep)


def measure_meta(runs: list[Path], meta_seeds: list[int], held_out: Path | None, with_lgbm: bool, objective: str = "macro_f1",
                 only: list[str] | None = None) -> dict[str, Any]:
    """Stacker and threshold variants, per run and meta seed; thresholds tuned for ``objective`` (threshold variants: macro_f1 only)."""
    from embedensemble.config import CVConfig
    from embedensemble.cv import make_folds
    from embedensemble.fileio import read_json

    names = [m["name"] for m in read_json(runs[0] / "config.json")["members"]]
    variants = {k: v for k, v in stacker_variants(with_lgbm).items() if not only or k in only}
    threshold_variants = THRESHOLD_VARIANTS if objective == "macro_f1" else {}
    per_run: list[dict[str, Any]] = []
    costs: dict[str, dict[str, float]] = {}
    for run in runs:
        keep, removed = _kept_rows(run, held_out)
        proba, labels = _member_oof(run, names)[keep], np.load(run / "train_labels.npy")[keep].astype(int)
        entry: dict[str, Any] = {"run": str(run), "rows": len(keep), "dev_rows_removed": removed, "scores": {}}
        for meta_seed in meta_seeds:
            folds = make_folds(labels, CVConfig(seed=meta_seed))
            default_oof = None
            for key, (_, fit_predict) in variants.items():
                start = time.perf_counter()
                oof = stack_oof(fit_predict, proba, labels, folds)
                costs.setdefault(key, {})["stacker_oof_seconds"] = round(time.perf_counter() - start, 2)
                entry["scores"].setdefault(key, []).append(nested_scores(oof, labels, folds, {}, objective))
                default_oof = oof if key == BASELINE_STACKER else default_oof
            for key, (_, params) in threshold_variants.items():
                entry["scores"].setdefault(key, []).append(nested_scores(default_oof, labels, folds, params))
            logger.info("%s meta seed %d: all_C1 %.4f, same_emotion %.4f", run.name, meta_seed,
                        entry["scores"][BASELINE_STACKER][-1]["macro_f1"], entry["scores"]["same_emotion"][-1]["macro_f1"])
        per_run.append(entry)
    for key, (_, fit_predict) in variants.items():  # one fit on all rows of the last run, then predict every row
        start = time.perf_counter()
        fit_predict(proba, labels, proba)
        costs[key]["fit_and_predict_all_rows_seconds"] = round(time.perf_counter() - start, 3)
    descriptions = {k: v[0] for k, v in variants.items()} | {k: v[0] for k, v in threshold_variants.items()}
    return {"objective": objective, "meta_seeds": meta_seeds, "members": names, "per_run": per_run, "costs": costs, "descriptions": descriptions, "order": list(descriptions),
            "baselines": {"stacker": BASELINE_STACKER, "thresholds": "thresholds_default (on the all_C1 stacker's OOF)"}}


def measure_normalise(runs: list[Path], normalised: list[Path], meta_seeds: list[int], held_out: Path | None) -> dict[str, Any]:
    """Members fitted on normalised tweets vs raw: alone (run's folds) and in a stack with the library's
    default stacker (meta seeds)."""
    from embedensemble.config import CVConfig
    from embedensemble.cv import make_folds
    from embedensemble.fileio import read_json

    names = [m["name"] for m in read_json(runs[0] / "config.json")["members"]]
    normal = [m["name"] for m in read_json(normalised[0] / "config.json")["members"]]
    fit_predict = _library_stacker()
    per_run, fit_seconds = [], {}
    for run, norm_run in zip(runs, normalised):
        if not np.array_equal(np.load(run / "folds_kfold.npy"), np.load(norm_run / "folds_kfold.npy")):
            raise ValueError(f"{run} and {norm_run} have other folds: fit both with the same --seed")
        keep, _ = _kept_rows(run, held_out)
        labels = np.load(run / "train_labels.npy")[keep].astype(int)
        run_folds = np.load(run / "folds_kfold.npy")[keep]
        raw, norm = _member_oof(run, names)[keep], _member_oof(norm_run, normal)[keep]
        entry: dict[str, Any] = {"run": str(run), "normalised_run": str(norm_run), "scores": {}}
        for i, name in enumerate(normal):
            base = name.removesuffix("-norm")
            entry["scores"][f"member {base}"] = [nested_scores(raw[:, names.index(base)], labels, run_folds, {})]
            entry["scores"][f"member {name}"] = [nested_scores(norm[:, i], labels, run_folds, {})]
            fit_seconds.setdefault(name, []).append(read_json(norm_run / "members" / name / "member.json").get("fit_seconds"))
            fit_seconds.setdefault(base, []).append(read_json(run / "members" / base / "member.json").get("fit_seconds"))
        stacks = {"stack default": raw}
        for i, name in enumerate(normal):
            base_index = names.index(name.removesuffix("-norm"))
            swapped = raw.copy()
            swapped[:, base_index] = norm[:, i]
            stacks[f"stack with {name} instead of {name.removesuffix('-norm')}"] = swapped
            stacks[f"stack default + {name}"] = np.concatenate([raw, norm[:, i : i + 1]], axis=1)
        if len(normal) > 1:
            every = raw.copy()
            for i, name in enumerate(normal):
                every[:, names.index(name.removesuffix("-norm"))] = norm[:, i]
            stacks["stack with every -norm member instead of its raw one"] = every
        for meta_seed in meta_seeds:
            folds = make_folds(labels, CVConfig(seed=meta_seed))
            for key, proba in stacks.items():
                entry["scores"].setdefault(key, []).append(nested_scores(stack_oof(fit_predict, proba, labels, folds), labels, folds, {}))
        per_run.append(entry)
    from embedensemble import load_dataset
    from embedensemble.normalise import normalise_texts

    texts = list(load_dataset(DATA).train.texts)
    normalise_texts(texts[:200])  # loads wordsegment's counts outside the timing
    start = time.perf_counter()
    normalise_texts(texts)
    rate = len(texts) / (time.perf_counter() - start)
    from embedensemble.config import StackConfig

    return {"members": normal, "per_run": per_run, "member_fit_seconds": fit_seconds, "normalise_tweets_per_second": round(rate),
            "stacker": f"logistic regression, meta_features={StackConfig().meta_features!r}", "order": list(per_run[0]["scores"])}


def summarise(section: dict[str, Any], baseline_of: Callable[[str], str]) -> dict[str, Any]:
    """Per variant: mean ± sd over runs of its score and of its paired gain over ``baseline_of(variant)``."""
    keys = section.get("order") or list(section["per_run"][0]["scores"])
    summary = {}
    for key in keys:
        base = baseline_of(key)
        row: dict[str, Any] = {"baseline": base, "n_runs": len(section["per_run"])}
        for metric in METRICS:
            per_run = np.array([np.mean([s[metric] for s in r["scores"][key]]) for r in section["per_run"]])
            gains = per_run - np.array([np.mean([s[metric] for s in r["scores"][base]]) for r in section["per_run"]])
            sd = float(np.std(gains, ddof=1)) if len(gains) > 1 else float("nan")
            row[metric] = {"mean": round(float(per_run.mean()), 4), "sd": round(float(np.std(per_run, ddof=1)), 4) if len(per_run) > 1 else None,
                           "gain": round(float(gains.mean()), 4), "gain_sd": round(sd, 4), "gain_per_run": [round(float(g), 4) for g in gains]}
        objective = section.get("objective", "macro_f1")  # the verdict is on the metric the thresholds were tuned for
        gain, sd = row[objective]["gain"], row[objective]["gain_sd"]
        row["verdict"] = "baseline" if key == base else ("kept" if gain > 0 and gain > 2 * sd else ("worse" if gain < -2 * sd else "noise"))
        summary[key] = row
    return summary


BASELINE_STACKER = "all_C1"


def _stack_baseline(key: str) -> str:
    return "thresholds_default" if key in THRESHOLD_VARIANTS else BASELINE_STACKER


def _normalise_baseline(key: str) -> str:
    return key.removesuffix("-norm") if key.startswith("member ") else "stack default"


def _fmt(row: dict[str, Any], metric: str) -> str:
    m = row[metric]
    return f"{m['gain']:+.4f} ± {m['gain_sd']:.4f}"


def render(result: dict[str, Any]) -> str:
    """docs/ablation.md from the JSON."""
    norm = result.get("normalise")
    lines = ["# Ablation: what each accuracy option adds (train OOF, nested thresholds)", "",
             "Rendered by `python -m benchmarks.ablation --render` from `benchmarks/results/ablation.json`; do not edit by hand.", "",
             result["method"], ""]
    for meta in (result.get("meta"), result.get("meta_jaccard")):
        if not meta:
            continue
        objective = meta.get("objective", "macro_f1")
        lines += [f"## Stacker and thresholds (thresholds tuned for {objective})", "", f"Members stacked: {', '.join(meta['members'])}. Runs (fold/model seeds): "
                  f"{len(meta['per_run'])}; meta-fold seeds: {meta.get('meta_seeds', result['meta_seeds'])}; rows: {meta['per_run'][0]['rows']} "
                  f"({meta['per_run'][0]['dev_rows_removed']} dev tweets left out).", "",
                  f"| option | {objective} | gain (macro) | gain (micro) | gain (Jaccard) | stacker OOF s | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for key in meta["order"]:
            row = meta["summary"][key]
            cost = meta["costs"].get(key, {}).get("stacker_oof_seconds", "")
            lines.append(f"| `{key}`: {meta['descriptions'][key]} | {row[objective]['mean']:.4f} ± {row[objective]['sd']:.4f} | "
                         f"{_fmt(row, 'macro_f1')} | {_fmt(row, 'micro_f1')} | {_fmt(row, 'jaccard')} | {cost} | {row['verdict']} |")
        lines.append("")
    if norm:
        lines += ["## Tweet normalisation (member `params: {\"normalise\": true}`)", "",
                  f"Normalising runs at {norm['normalise_tweets_per_second']} tweets/s on one core (the embedding cost is unchanged). "
                  f"Members alone are scored on their run's folds; stacks ({norm['stacker']}) on the meta-fold seeds. Fit s: the member's 5-fold "
                  "cross-fit, fastest–slowest run, wall-clock on a shared 2-core machine; a run that found the embedding cache cold "
                  "(the first normalised run of each backbone; the seed-42 default run) includes computing the embeddings. "
                  f"Normalised members: {', '.join(norm['members'])}.", "",
                  "| variant | macro-F1 | baseline | gain (macro) | gain (micro) | gain (Jaccard) | fit s | verdict |", "|---|---|---|---|---|---|---|---|"]
        for key in norm["order"]:
            row = norm["summary"][key]
            fit = "–".join(f"{s:.0f}" for s in sorted(norm["member_fit_seconds"].get(key.removeprefix("member "), [])))
            lines.append(f"| {key} | {row['macro_f1']['mean']:.4f} ± {row['macro_f1']['sd']:.4f} | {row['baseline']} | {_fmt(row, 'macro_f1')} | "
                         f"{_fmt(row, 'micro_f1')} | {_fmt(row, 'jaccard')} | {fit} | {row['verdict']} |")
        lines.append("")
    kept = [(name, key, section["summary"][key]) for name, section in (("stacker/thresholds", result.get("meta")),
            ("stacker/thresholds, Jaccard", result.get("meta_jaccard")), ("normalisation", norm)) if section
            for key in section["order"] if section["summary"][key]["verdict"] == "kept"]
    if kept:
        lines += ["Gains over 2 sd (`kept`): " + "; ".join(
            f"{key} ({name}, {row[row_metric]['gain']:+.4f} ± {row[row_metric]['gain_sd']:.4f} {row_metric})"
            for name, key, row in kept for row_metric in [("jaccard" if "Jaccard" in name else "macro_f1")]) + ".", ""]
    lines += [f"Measured {result['created']} on {result['machine'].get('cpu', 'this machine')}.", ""]
    return "\n".join(lines)


METHOD = ("Scores are macro-F1 (and micro-F1, Jaccard) of Kaggle train.csv rows from out-of-fold probabilities, with "
          "per-emotion thresholds tuned on the other folds only (nested). Gains are paired differences to the baseline on "
          "the same run and meta-folds, averaged over meta-fold seeds; shown as mean ± sd over fold/model seeds (runs). "
          "`kept`: gain > 2 sd; `noise`: within 2 sd; `worse`: below -2 sd. Nothing here was chosen on the SemEval dev file "
          "or on test: train rows that are dev tweets are left out of every meta-level fit and score.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="", help="comma-separated run folders of the default config, one per seed")
    parser.add_argument("--normalised", default="", help="comma-separated run folders of '-norm' members, same seeds and order")
    parser.add_argument("--meta-seeds", default="0,1,2")
    parser.add_argument("--held-out", type=Path, default=SEMEVAL, help="folder whose eval (dev) tweets are left out; '' keeps all rows")
    parser.add_argument("--no-lgbm", action="store_true", help="skip the LightGBM stacker (the slowest variant)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ablation.json")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--render", action="store_true", help="only render --doc from --out")
    parser.add_argument("--sections", default="meta,normalise",
                        help="meta, normalise and/or meta_jaccard (stackers with Jaccard-tuned thresholds); others are kept from --out")
    args = parser.parse_args(argv)
    setup_logging(False)
    from embedensemble.fileio import read_json, write_json

    if args.render:
        args.doc.write_text(render(read_json(args.out)), encoding="utf-8")
        return 0
    runs = [Path(p) for p in args.runs.split(",") if p]
    if not runs:
        parser.error("--runs is required (or --render)")
    meta_seeds = [int(s) for s in args.meta_seeds.split(",")]
    held_out = args.held_out if str(args.held_out) else None
    sections = args.sections.split(",")
    result: dict[str, Any] = read_json(args.out) if args.out.is_file() and sections != ["meta", "normalise"] else {}
    result.update({"created": now_iso(), "machine": machine_info(), "method": METHOD, "meta_seeds": meta_seeds,
                   "held_out": str(held_out) if held_out else None})
    if "meta" in sections:
        meta = measure_meta(runs, meta_seeds, held_out, not args.no_lgbm)
        meta["summary"] = summarise(meta, _stack_baseline)
        result["meta"] = meta
    if "meta_jaccard" in sections:
        jaccard = measure_meta(runs, meta_seeds[:1], held_out, True, "jaccard", ["all_C1", "same_emotion", "lgbm_all", "lgbm_same_emotion"])
        jaccard["summary"] = summarise(jaccard, _stack_baseline)
        result["meta_jaccard"] = jaccard
    if args.normalised and "normalise" in sections:
        norm = measure_normalise(runs, [Path(p) for p in args.normalised.split(",")], meta_seeds, held_out)
        norm["summary"] = summarise(norm, _normalise_baseline)
        result["normalise"] = norm
    write_json(args.out, result)
    args.doc.write_text(render(result), encoding="utf-8")
    logger.info("wrote %s and %s", args.out, args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
