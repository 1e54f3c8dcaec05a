"""bf16 autocast on a CPU with native bf16 (AVX512-BF16 / AMX): the speed it buys, the OOF accuracy it costs.

    python -m benchmarks.bf16 speed [--steps 20] [--rounds 2] [--n 500]
    python -m benchmarks.bf16 quality --fp32-run artifacts/quality-fp32 --bf16-run artifacts/quality
    python -m benchmarks.bf16 --render     # docs/bf16.md from benchmarks/results/bf16.json only

``speed``: one process, fp32 and bf16 alternating in each round (medians over rounds), on Kaggle train
tweets: fine-tuning throughput (a ``pooled-finetune`` member's fit of ``--steps`` optimizer steps of 32
tweets, frozen-layer cache emptied first, so the top-3 mpnet side includes its frozen layers' pass), the
fitted member's prediction throughput, and frozen encoding throughput (sentence-transformers mpnet;
SmolLM2-135M pooled at layer 20 of 30, the upper layers cut). The speed is the machine's: without native
bf16 the same settings run slower than fp32.

``quality``: the ``quality`` config fitted twice on the same folds and seeds, its fine-tunes in fp32
(``--fp32-run``) and under bf16 autocast (``--bf16-run``): each fine-tuned member (and the head on its
embeddings) alone, and the kept stack of each run (the library's default stacker, meta-folds of
``--meta-seeds``), nested thresholds, train rows that are SemEval dev tweets left out. One fit seed: the
change includes the fine-tunes' training noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import RESULTS_DIR, ROOT, logger, setup_logging, update_section
from .ablation import DATA, METRICS, SEMEVAL, _kept_rows, _library_stacker, _member_oof, nested_scores, stack_oof

DOC = ROOT / "docs" / "bf16.md"
OUT = RESULTS_DIR / "bf16.json"
FINETUNES = {
    "minilm (all layers)": ("minilm", {}),
    "mpnet (top 3 layers)": ("mpnet", {"train_top_layers": 3}),
}
SMOLLM2_MID = {"hidden_layer": 20, "pooling": "mean", "prompt_template": None, "normalize": False, "max_length": 96}


def _finetune_side(backbone: str, extra: dict[str, Any], precision: str, texts: list[str], labels: np.ndarray,
                   steps: int, predict: list[str]) -> dict[str, float]:
    from embedensemble.config import MemberConfig
    from embedensemble.finetune.frozen_layers import clear_frozen_states
    from embedensemble.members.base import MemberContext, build_member

    params = {"adapter": "none", "lr": 8e-5, "head_lr": 2e-3, "batch_size": 32, "max_steps": steps, "max_length": 64,
              "save_every_steps": 10_000, "predict_batch_size": 128, "precision": precision, **extra}
    clear_frozen_states()
    member = build_member(MemberConfig(name=f"bench-{precision}", kind="pooled-finetune", backbone=backbone, params=params),
                          MemberContext(seed=0, device="cpu", show_progress_bar=False))
    started = time.perf_counter()
    member.fit(texts[: steps * 32], labels[: steps * 32].astype(np.float32))
    train = steps * 32 / (time.perf_counter() - started)
    started = time.perf_counter()
    member.predict_proba(predict)
    return {"train_tweets_per_s": train, "predict_tweets_per_s": len(predict) / (time.perf_counter() - started)}


def _encode_side(backbone: str, options: dict[str, Any], precision: str, texts: list[str]) -> float:
    from embedensemble.backbones import Encoder, get_backbone_spec

    encoder = Encoder(get_backbone_spec(backbone, **options), device="cpu", precision=precision, show_progress_bar=False)
    encoder.encode(texts[:8])  # loads the weights outside the timing
    started = time.perf_counter()
    encoder.encode(texts)
    return len(texts) / (time.perf_counter() - started)


def measure_speed(steps: int, rounds: int, n: int) -> dict[str, Any]:
    from embedensemble import load_dataset

    train = load_dataset(DATA).train
    texts, labels = list(train.texts), np.asarray(train.labels)
    predict = texts[-n:]
    runs: dict[str, dict[str, list[float]]] = {}
    for round_ in range(rounds):
        for name, (backbone, extra) in FINETUNES.items():
            for precision in ("fp32", "bf16"):
                side = _finetune_side(backbone, extra, precision, texts, labels, steps, predict)
                for metric, value in side.items():
                    runs.setdefault(f"fine-tune {name}", {}).setdefault(f"{metric} {precision}", []).append(value)
                logger.info("round %d %s %s: %s", round_, name, precision, {k: round(v, 1) for k, v in side.items()})
        for name, backbone, options in (("encode mpnet (frozen)", "mpnet", {}), ("encode SmolLM2-135M layer 20, mean", "smollm2-135m", SMOLLM2_MID)):
            for precision in ("fp32", "bf16"):
                value = _encode_side(backbone, options, precision, predict)
                runs.setdefault(name, {}).setdefault(f"tweets_per_s {precision}", []).append(value)
                logger.info("round %d %s %s: %.1f tweets/s", round_, name, precision, value)
    table = {}
    for name, series in runs.items():
        medians = {key: statistics.median(values) for key, values in series.items()}
        row = {key: round(v, 1) for key, v in medians.items()}
        for key in [k for k in medians if k.endswith(" fp32")]:
            row[key.removesuffix(" fp32") + " ratio"] = round(medians[key.replace(" fp32", " bf16")] / medians[key], 2)
        table[name] = row
    return {"steps": steps, "batch_size": 32, "rounds": rounds, "predict_tweets": n,
            "split": "Kaggle train.csv (first steps x 32 tweets to train, last n to predict and encode)", "rows": table}


def _run_members(run: Path) -> tuple[list[str], list[str]]:
    """A run's members, and those a precision changes: fine-tunes and heads on their embeddings."""
    from embedensemble.fileio import read_json

    members = read_json(run / "config.json")["members"]
    tuned = [m["name"] for m in members
             if m.get("kind", "head").endswith("finetune") or str(m.get("features") or "").startswith("finetuned:")]
    return [m["name"] for m in members], tuned


def measure_quality(fp32_run: Path, bf16_run: Path, meta_seeds: list[int], held_out: Path | None) -> dict[str, Any]:
    from embedensemble.config import CVConfig
    from embedensemble.cv import make_folds

    runs = {"fp32": fp32_run, "bf16": bf16_run}
    if not np.array_equal(np.load(fp32_run / "folds_kfold.npy"), np.load(bf16_run / "folds_kfold.npy")):
        raise SystemExit(f"{fp32_run} and {bf16_run} have other folds: fit them with the same seed")
    keep, _ = _kept_rows(bf16_run, held_out)
    labels = np.load(bf16_run / "train_labels.npy")[keep].astype(int)
    run_folds = np.load(bf16_run / "folds_kfold.npy")[keep]
    names, tuned = _run_members(bf16_run)
    if _run_members(fp32_run)[0] != names:
        raise SystemExit(f"{fp32_run} and {bf16_run} hold other members: fit both from the same config")
    proba = {side: _member_oof(run, names)[keep] for side, run in runs.items()}
    members = {name: {side: nested_scores(proba[side][:, names.index(name)], labels, run_folds, {}) for side in runs}
               for name in tuned}
    stacker, stacks = _library_stacker(), {"fp32": [], "bf16": []}
    for seed in meta_seeds:
        folds = make_folds(labels, CVConfig(seed=seed))
        for side in runs:
            stacks[side].append(nested_scores(stack_oof(stacker, proba[side], labels, folds), labels, folds, {}))
        logger.info("meta seed %d: stack fp32 %.4f, bf16 %.4f", seed, stacks["fp32"][-1]["macro_f1"], stacks["bf16"][-1]["macro_f1"])
    change = {m: [round(b[m] - a[m], 4) for a, b in zip(stacks["fp32"], stacks["bf16"])] for m in METRICS}
    return {"runs": {side: str(run) for side, run in runs.items()}, "rows": len(keep), "meta_seeds": meta_seeds, "stacked": names,
            "members": {m: {p: {k: round(float(s[k]), 4) for k in METRICS} for p, s in sides.items()} for m, sides in members.items()},
            "stack": {side: {m: round(float(np.mean([s[m] for s in scores])), 4) for m in METRICS} for side, scores in stacks.items()},
            "stack_change": change}


def _signed(value: float) -> str:
    return f"{round(float(value), 4) + 0.0:+.4f}"  # + 0.0: a mean that rounds to -0.0 prints as +0.0000


def render(result: dict[str, Any]) -> str:
    lines = ["# bf16 autocast on CPU", "",
             "Rendered by `python -m benchmarks.bf16 --render` from `benchmarks/results/bf16.json`; do not edit by hand.", ""]
    speed = result.get("speed")
    if speed:
        lines += ["## Speed", "",
                  (f"One process, fp32 and bf16 alternating, medians of {speed['rounds']} round(s); fine-tuning: {speed['steps']} steps "
                   f"of {speed['batch_size']} tweets; prediction and encoding: {speed['predict_tweets']} tweets ({speed['split']})."), "",
                  "| what | fp32 tweets/s | bf16 tweets/s | bf16 / fp32 |", "|---|---|---|---|"]
        for name, row in speed["rows"].items():
            for metric in [k.removesuffix(" ratio") for k in row if k.endswith(" ratio")]:
                label = name + ("" if metric == "tweets_per_s" else f", {metric.split('_')[0]}")
                lines.append(f"| {label} | {row[metric + ' fp32']:.1f} | {row[metric + ' bf16']:.1f} | {row[metric + ' ratio']:.2f}x |")
        lines.append("")
    quality = result.get("quality")
    if quality:
        lines += ["## Accuracy (Kaggle train OOF, nested thresholds)", "",
                  (f"The quality config fitted with fp32 fine-tunes (`{quality['runs']['fp32']}`) and with bf16 ones "
                   f"(`{quality['runs']['bf16']}`): same folds and seeds, one fit each; {quality['rows']} rows (SemEval dev tweets "
                   "left out)."), "",
                  "| member | fp32 macro-F1 | bf16 macro-F1 | fp32 Jaccard | bf16 Jaccard |", "|---|---|---|---|---|"]
        for name, sides in quality["members"].items():
            lines.append(f"| {name} | {sides['fp32']['macro_f1']:.4f} | {sides['bf16']['macro_f1']:.4f} | "
                         f"{sides['fp32']['jaccard']:.4f} | {sides['bf16']['jaccard']:.4f} |")
        change = quality["stack_change"]["macro_f1"]
        lines += ["", (f"The quality stack (its {len(quality.get('stacked', [])) or '?'} members), meta seeds {quality['meta_seeds']}: fp32 "
                       f"{quality['stack']['fp32']['macro_f1']:.4f}, bf16 {quality['stack']['bf16']['macro_f1']:.4f} macro-F1; "
                       f"change per meta seed {change} (mean {_signed(np.mean(change))})."), ""]
    machine = result.get("machine", {})
    flags = f" (native bf16: {', '.join(machine['cpu_bf16_flags']) or 'none'})" if "cpu_bf16_flags" in machine else ""
    lines.append(f"Measured {result.get('created', '?')} on {machine.get('cpu', '?')}{flags}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bf16", description=__doc__.split("\n\n")[0])
    parser.add_argument("section", nargs="?", choices=["speed", "quality"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--fp32-run", type=Path)
    parser.add_argument("--bf16-run", type=Path)
    parser.add_argument("--meta-seeds", default="0,1,2")
    parser.add_argument("--held-out", type=Path, default=SEMEVAL)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args(argv)
    setup_logging(False)
    measure = None
    if args.section == "speed":
        measure = partial(measure_speed, args.steps, args.rounds, args.n)
    elif args.section == "quality":
        if args.fp32_run is None or args.bf16_run is None:
            parser.error("quality needs --fp32-run and --bf16-run")
        held_out = args.held_out if str(args.held_out) else None
        measure = partial(measure_quality, args.fp32_run, args.bf16_run, [int(s) for s in args.meta_seeds.split(",")], held_out)
    elif not args.render:
        parser.error("name a section (speed or quality) or pass --render")
    update_section(args.out, args.doc, args.section, measure, render)
    return 0

if __name__ == "__main__":
    sys.exit(main())
