"""int8 encoders for the default ensemble: the OOF macro-F1 they cost and the cache-off speed they buy (issue 14).

    python -m benchmarks.int8 quality --runs R42,R7,R1234 --normalised N42,N7,N1234 --int8 I42,I7,I1234
    python -m benchmarks.int8 speed --fp32 artifacts/bench-kaggle/ensemble --int8 artifacts/default-int8/ensemble
    python -m benchmarks.int8 --render     # docs/int8.md from benchmarks/results/int8.json only

``quality``: the default ensemble's members (TF-IDF, MiniLM logreg and LightGBM on normalised
tweets, mpnet logreg), fitted with fp32 (torch) encoders (``--runs`` hold ``mpnet-logreg``,
``--normalised`` the ``-norm`` members, as in benchmarks.ablation) and with the embedding members
on int8 ONNX encoders (``--int8``: ``<member>-int8``, ``params.precision: "int8"``), same fold
seeds. Each member alone on its run's folds, and the default stacker over each set on meta-folds
of several seeds; train rows that are SemEval dev tweets are left out (dev chooses nothing). The
loss is the paired difference, mean ± sd over the fold seeds; the budget is 0.005 macro-F1.

``speed``: one process, the same tweets, alternating rounds (medians): plain
``SentenceTransformer.encode`` of mpnet (the default ensemble's slowest backbone) vs
``EmotionEnsemble.load(dir, use_cache=False).predict_proba`` of the fp32 and the int8 ensemble.
Target: the default (int8) ensemble >= 1.5x plain mpnet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import RESULTS_DIR, ROOT, logger, setup_logging, update_section
from .ablation import DATA, SEMEVAL, _kept_rows, _library_stacker, _member_oof, nested_scores, stack_oof, summarise

DOC = ROOT / "docs" / "int8.md"
OUT = RESULTS_DIR / "int8.json"
MAX_LOSS = 0.005
SPEED_TARGET = 1.5
FP32_SET = {"tfidf-logreg-norm": "normalised", "minilm-logreg-norm": "normalised", "minilm-lgbm-norm": "normalised", "mpnet-logreg": "raw"}


def _int8_name(name: str) -> str | None:
    return None if name.startswith("tfidf") else f"{name}-int8"


def measure_quality(runs: list[Path], normalised: list[Path], int8: list[Path], meta_seeds: list[int], held_out: Path | None) -> dict[str, Any]:
    from embedensemble.config import CVConfig
    from embedensemble.cv import make_folds

    stacker = _library_stacker()
    per_run = []
    for raw_run, norm_run, int8_run in zip(runs, normalised, int8):
        folds_of = {p: np.load(p / "folds_kfold.npy") for p in (raw_run, norm_run, int8_run)}
        if any(not np.array_equal(folds_of[raw_run], f) for f in folds_of.values()):
            raise ValueError(f"{raw_run}, {norm_run} and {int8_run} have other folds: fit them with the same --seed")
        keep, _ = _kept_rows(raw_run, held_out)
        labels = np.load(raw_run / "train_labels.npy")[keep].astype(int)
        run_folds = folds_of[raw_run][keep]
        source = {"raw": raw_run, "normalised": norm_run}
        fp32 = np.concatenate([_member_oof(source[where], [name]) for name, where in FP32_SET.items()], axis=1)[keep]
        quantised = fp32.copy()
        entry: dict[str, Any] = {"runs": [str(raw_run), str(norm_run), str(int8_run)], "rows": len(keep), "scores": {}}
        for i, name in enumerate(FP32_SET):
            if _int8_name(name) is None:
                continue
            quantised[:, i] = _member_oof(int8_run, [_int8_name(name)])[keep][:, 0]
            entry["scores"][f"member {name}"] = [nested_scores(fp32[:, i], labels, run_folds, {})]
            entry["scores"][f"member {name}-int8"] = [nested_scores(quantised[:, i], labels, run_folds, {})]
        for meta_seed in meta_seeds:
            folds = make_folds(labels, CVConfig(seed=meta_seed))
            for key, proba in (("stack fp32", fp32), ("stack int8", quantised)):
                entry["scores"].setdefault(key, []).append(nested_scores(stack_oof(stacker, proba, labels, folds), labels, folds, {}))
        logger.info("%s: stack fp32 %.4f, int8 %.4f", raw_run.name, np.mean([s["macro_f1"] for s in entry["scores"]["stack fp32"]]),
                    np.mean([s["macro_f1"] for s in entry["scores"]["stack int8"]]))
        per_run.append(entry)
    section = {"members": list(FP32_SET), "meta_seeds": meta_seeds, "per_run": per_run, "order": list(per_run[0]["scores"])}
    section["summary"] = summarise(section, lambda key: key.removesuffix("-int8") if key.startswith("member ") else "stack fp32")
    loss = -section["summary"]["stack int8"]["macro_f1"]["gain"]
    section["verdict"] = {"stack_macro_f1_loss": round(loss, 4), "max_loss": MAX_LOSS, "within_budget": loss <= MAX_LOSS}
    return section


def _throughput(fn: Callable[[list[str]], Any], texts: list[str]) -> float:
    started = time.perf_counter()
    fn(texts)
    return len(texts) / (time.perf_counter() - started)


def measure_speed(fp32_dir: Path, int8_dir: Path, n: int, rounds: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from embedensemble import load_dataset
    from embedensemble.backbones import get_backbone_spec, resolve_weights
    from embedensemble.ensemble import EmotionEnsemble

    # Each round scores other tweets: an ensemble keeps its last batch's embeddings, so a repeated batch would not be encoded.
    pool = list(load_dataset(DATA).test.texts)
    if len(pool) < n * rounds + 16:
        raise ValueError(f"{n} tweets x {rounds} rounds need {n * rounds + 16} test tweets, the file has {len(pool)}")
    batches = [pool[r * n : (r + 1) * n] for r in range(rounds)]
    load_before = os.getloadavg()
    plain = SentenceTransformer(str(resolve_weights(get_backbone_spec("mpnet"))), device="cpu")
    sides: dict[str, Callable[[list[str]], Any]] = {"plain mpnet encode": plain.encode}
    for name, folder in (("default ensemble, fp32 encoders", fp32_dir), ("default ensemble, int8 encoders", int8_dir)):
        ensemble = EmotionEnsemble.load(folder, use_cache=False)
        sides[name] = ensemble.predict_proba
    for fn in sides.values():
        fn(pool[-16:])  # loads every model (lazily) and builds the int8 exports outside the timing
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for texts in batches:  # alternate, so drift of a shared machine's speed falls on every side
        for name, fn in sides.items():
            runs[name].append(_throughput(fn, texts))
            logger.info("%s: %.1f tweets/s", name, runs[name][-1])
    plain_tps = statistics.median(runs["plain mpnet encode"])
    return {
        "tweets": {"n": n, "split": "Kaggle test.csv (unlabelled), other tweets each round"},
        "rounds": rounds,
        "ensembles": {"fp32": str(fp32_dir), "int8": str(int8_dir)},
        "sides": {name: {"tweets_per_s": statistics.median(r), "runs_tweets_per_s": r, "vs_plain_mpnet": statistics.median(r) / plain_tps}
                  for name, r in runs.items()},
        "target": {"ensemble_vs_plain_mpnet_min": SPEED_TARGET},
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
    }


def render(result: dict[str, Any]) -> str:
    lines = ["# int8 encoders in the default ensemble", "",
             "Rendered by `python -m benchmarks.int8 --render` from `benchmarks/results/int8.json`; do not edit by hand.", ""]
    quality = result.get("quality")
    if quality:
        first = quality["per_run"][0]
        lines += ["## Quality (Kaggle train OOF, nested thresholds)", "",
                  (f"Runs (fold/model seeds): {len(quality['per_run'])}; meta-fold seeds: {quality['meta_seeds']}; rows: {first['rows']} "
                   "(SemEval dev tweets left out). Members alone are scored on their run's folds; stacks (the library's default "
                   "stacker) on meta-folds. Change: paired int8 minus fp32, mean ± sd over the runs."), "",
                  "| model | macro-F1 | change (macro) | change (micro) | change (Jaccard) |", "|---|---|---|---|---|"]
        for key, row in quality["summary"].items():
            m = row["macro_f1"]
            lines.append(f"| {key} | {m['mean']:.4f} | {m['gain']:+.4f} ± {m['gain_sd']:.4f} | "
                         f"{row['micro_f1']['gain']:+.4f} ± {row['micro_f1']['gain_sd']:.4f} | "
                         f"{row['jaccard']['gain']:+.4f} ± {row['jaccard']['gain_sd']:.4f} |")
        v = quality["verdict"]
        lines += ["", (f"Stack macro-F1 lost to int8: {v['stack_macro_f1_loss']:.4f} (budget {v['max_loss']}): "
                       f"{'within budget' if v['within_budget'] else 'OVER budget'}."), ""]
    speed = result.get("speed")
    if speed:
        lines += ["## Speed (cache off)", "",
                  (f"{speed['tweets']['n']} tweets of {speed['tweets']['split']}, {speed['rounds']} alternating rounds in one process "
                   f"(medians); 1-min load average {speed['loadavg_before'][0]:.1f} before, {speed['loadavg_after'][0]:.1f} after."), "",
                  "| side | tweets/s | vs plain mpnet encode |", "|---|---|---|"]
        for name, side in sorted(speed["sides"].items(), key=lambda kv: kv[1]["vs_plain_mpnet"]):  # JSON keys come back sorted
            lines.append(f"| {name} | {side['tweets_per_s']:.1f} | {side['vs_plain_mpnet']:.2f}x |")
        ratio = speed["sides"]["default ensemble, int8 encoders"]["vs_plain_mpnet"]
        target = speed["target"]["ensemble_vs_plain_mpnet_min"]
        lines += ["", f"Target: the default ensemble >= {target}x plain mpnet encode: {'met' if ratio >= target else 'MISSED'} ({ratio:.2f}x).", ""]
    lines.append(f"Measured {result.get('created', '?')} on {result.get('machine', {}).get('cpu', '?')}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8", description=__doc__.split("\n\n")[0])
    parser.add_argument("section", nargs="?", choices=["quality", "speed"])
    parser.add_argument("--runs", default="")
    parser.add_argument("--normalised", default="")
    parser.add_argument("--int8", default="", help="quality: int8 run folders; speed: the int8 ensemble folder")
    parser.add_argument("--fp32", type=Path, help="speed: the fp32 ensemble folder")
    parser.add_argument("--meta-seeds", default="0,1,2")
    parser.add_argument("--held-out", type=Path, default=SEMEVAL)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(False)

    def split(value: str) -> list[Path]:
        return [Path(p) for p in value.split(",") if p]

    measure = None
    if args.section == "quality":
        held_out = args.held_out if str(args.held_out) else None
        measure = partial(measure_quality, split(args.runs), split(args.normalised), split(args.int8),
                          [int(s) for s in args.meta_seeds.split(",")], held_out)
    elif args.section == "speed":
        measure = partial(measure_speed, args.fp32, Path(args.int8), args.n, args.rounds)
    elif not args.render:
        parser.error("name a section (quality or speed) or pass --render")
    update_section(args.out, args.doc, args.section, measure, render)
    return 0

if __name__ == "__main__":
    sys.exit(main())
