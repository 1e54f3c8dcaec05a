"""The ``quality`` config (issue 15): which members and stacker it keeps, chosen on Kaggle train OOF only.

    python -m benchmarks.quality --run artifacts/quality --time-file fit-time.txt [--meta-seeds 0,1,2]
    python -m benchmarks.quality --render      # docs/quality.md from benchmarks/results/quality_config.json
    python -m benchmarks.quality --dev-run artifacts/quality-semeval --dev-only   # add the dev final check
    python -m benchmarks.quality --candidates-run artifacts/quality-candidates --dev-only   # add the rejected candidates
    python -m benchmarks.quality --seed-runs artifacts/quality-seed7 --dev-only   # add refits with other seeds
    python -m benchmarks.candidate_union --out DIR --base RUN RUN2:cand,...   # batches of candidates as one run

Input: one run folder of ``experiments/quality.json`` fitted cold on the Kaggle folder (``/usr/bin/time -v``
output in ``--time-file`` gives the cold wall time and peak memory). Every score is nested (thresholds
tuned on the other meta-folds' rows), on train rows that are not SemEval dev tweets, averaged over
``--meta-seeds`` meta-fold draws. The rules were fixed before any score was read:

* members: backward elimination from the config's candidate set with the default stacker: drop the
  member whose removal raises macro-F1 most, if it does so by >= 0.003 on average and in every meta seed;
  repeat. The same test, started from ``experiments/finetune-cpu.json``'s members, re-selects that set.
* stacker: LightGBM over all logits replaces per-emotion logistic regression only if it gains >= 0.003
  macro-F1 on average and in every meta seed on the kept members.
* the ``objective: jaccard`` variant: the kept members and stacker with expected-Jaccard decoding (its default
  decision), shown beside thresholds tuned for Jaccard.

``--candidates-run``: a run of ``experiments/quality-candidates.json`` (the kept members plus candidates, same
folds): each candidate's gain when added alone; it joins only under the drop rule's threshold.
``--dev-run``: the same config fitted on SemEval train (``--data semeval2018-ec``) is stacked for each
objective and scored once on SemEval dev, a final check that chooses nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import RESULTS_DIR, ROOT, logger, machine_info, now_iso, setup_logging
from .ablation import DATA, SEMEVAL
from .quality_candidates import _candidates_kept, apply_time_budget, candidates, merge_candidates
from .quality_doc import render
from .quality_scoring import MIN_GAIN, TARGETS, Scorer, _gains, _mean, _passes, _summary, nested_scores_row

DOC = ROOT / "docs" / "quality.md"
OUT = RESULTS_DIR / "quality_config.json"
FINETUNE_CPU = ["tfidf-logreg", "minilm-logreg", "minilm-lgbm", "mpnet-logreg", "minilm-ft", "ftminilm-logreg"]
# The dev check's stacks: key -> (objective, decision).
DEV_STACKS = {"macro_f1": ("macro_f1", "thresholds"), "jaccard_thresholds": ("jaccard", "thresholds"),
              "jaccard_decoding": ("jaccard", "expected_jaccard")}


def backward_elimination(scorer: Scorer, start: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    kept, steps = list(start), []
    while len(kept) > 1:
        base = scorer.stack(kept)
        trials = {m: _gains(scorer.stack([k for k in kept if k != m]), base) for m in kept}
        for m, gains in trials.items():
            logger.info("without %s: %+.4f (from %d members)", m, np.mean(gains), len(kept))
        best = max(trials, key=lambda m: np.mean(trials[m]))
        steps.append({"members": list(kept), "macro_f1": _mean(base),
                      "drop_one_gains": {m: [round(g, 4) for g in trials[m]] for m in kept}, "dropped": None})
        if not _passes(trials[best]):
            break
        steps[-1]["dropped"] = best
        kept.remove(best)
    return kept, steps


def _fit_cost(time_file: Path | None) -> dict[str, Any]:
    if time_file is None or not time_file.is_file():
        return {}
    text = time_file.read_text()
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    minutes = (int(wall.group(1) or 0) * 60 + int(wall.group(2)) + float(wall.group(3)) / 60) if wall else None
    return {"cold_fit_minutes": round(minutes, 1) if minutes else None, "peak_rss_gb": round(int(rss.group(1)) / 2**20, 2) if rss else None}


def member_speed(run: Path, names: list[str], n_texts: int = 500) -> dict[str, float]:
    """Tweets/s of each member alone (all its fold models, and the members it reads), embedding cache off.

    Each member gets a freshly loaded ensemble, so nothing another member computed is reused; the fold
    models are loaded (on other texts) before the clock starts. Texts: the first ``n_texts`` Kaggle test tweets.
    """
    import pandas as pd

    from embedensemble import EmotionEnsemble
    from embedensemble.finetune.frozen_layers import clear_frozen_states

    texts = pd.read_csv(DATA / "test.csv")["Tweet"].astype(str).tolist()
    timed, warm_up = texts[:n_texts], texts[n_texts : n_texts + 16]
    speed = {}
    for name in names:
        clear_frozen_states()
        ensemble = EmotionEnsemble.load(run / "ensemble", use_cache=False)
        ensemble.member_proba(warm_up, members=[name])
        start = time.perf_counter()
        ensemble.member_proba(timed, members=[name])
        speed[name] = round(len(timed) / (time.perf_counter() - start), 1)
        logger.info("%s: %.1f tweets/s", name, speed[name])
    return speed


def additions(scorer: Scorer, default_members: list[str]) -> dict[str, Any]:
    """Each non-default member's gain when added alone to the default members' stack (per meta seed),
    and the gain of all of them together."""
    base = scorer.stack(default_members)
    extra = [m for m in scorer.names if m not in default_members]
    rows = {m: {"gains": [round(g, 4) for g in _gains(scorer.stack(default_members + [m]), base)]} for m in extra}
    rows["all additions"] = {"gains": [round(g, 4) for g in _gains(scorer.stack(scorer.names), base)]}
    return {"baseline": _summary(base), "rows": rows}


def carry_over(earlier: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """What a new OOF measure keeps of the earlier result: the dev check (another run, dated on its own) and the
    candidates when they were scored against the same kept members. Refits with other seeds are not kept: they
    are compared with the main run, which the new measure replaced."""
    kept = {"dev_check": earlier["dev_check"]} if earlier.get("dev_check") else {}
    if earlier.get("candidates") and sorted(_candidates_kept(earlier)) == sorted(result["selection"]["kept"]):
        kept["candidates"] = earlier["candidates"]
    return kept | result


def measure(run: Path, meta_seeds: list[int], held_out: Path | None, time_file: Path | None) -> dict[str, Any]:
    from embedensemble.fileio import read_json

    scorer = Scorer(run, meta_seeds, held_out)
    members = {name: nested_scores_row(scorer.member(name)) for name in scorer.names}
    kept, steps = backward_elimination(scorer, scorer.names)
    ft_start = [m for m in FINETUNE_CPU if m in scorer.names]
    ft_kept, ft_steps = backward_elimination(scorer, ft_start)
    logreg, lgbm = scorer.stack(kept, "logreg"), scorer.stack(kept, "lgbm")
    stacker = "lgbm" if _passes(_gains(lgbm, logreg)) else "logreg"
    default_members = [m["name"] for m in read_json(ROOT / "experiments" / "default.json")["members"] if m["name"] in scorer.names]
    stacks = {
        **({"default members (logreg)": _summary(scorer.stack(default_members))} if default_members else {}),
        **({"finetune-cpu members (logreg)": _summary(scorer.stack(ft_start))} if ft_start else {}),
        "every candidate (logreg)": _summary(scorer.stack(scorer.names)),
        "kept members (logreg)": _summary(logreg),
        "kept members (lgbm)": _summary(lgbm),
        f"kept members ({stacker}), thresholds for jaccard": _summary(scorer.stack(kept, stacker, "jaccard", "thresholds")),
        f"kept members ({stacker}), expected-Jaccard decoding": _summary(scorer.stack(kept, stacker, "jaccard", "expected_jaccard")),
    }
    member_files = {n: run / "members" / n / "member.json" for n in scorer.names}
    fit_seconds = {n: read_json(f).get("fit_seconds") for n, f in member_files.items() if f.is_file()}
    return {
        "run": str(run), "meta_seeds": meta_seeds, "rows": len(scorer.labels), "dev_rows_removed": scorer.dev_rows_removed,
        "finetune_precision": finetune_precision(run),
        "fold_seed": read_json(run / "config.json").get("seed"), "members_alone": members,
        "selection": {"rule_min_gain": MIN_GAIN, "steps": steps, "kept": kept, "stacker": stacker,
                      "lgbm_minus_logreg": [round(g, 4) for g in _gains(lgbm, logreg)]},
        "finetune_cpu_selection": {"start": ft_start, "steps": ft_steps, "kept": ft_kept},
        "stacks": stacks, "quality_stack": f"kept members ({stacker})", "jaccard_stack": f"kept members ({stacker}), expected-Jaccard decoding",
        "additions": additions(scorer, default_members) if default_members else None,
        "cost": _fit_cost(time_file) | {"member_fit_seconds": fit_seconds, "member_tweets_per_s": member_speed(run, scorer.names)},
        "targets": TARGETS,
    }


def fit_seeds(runs: list[Path], meta_seeds: list[int], held_out: Path | None, kept: list[str]) -> dict[str, Any]:
    """The kept members' stack (macro-F1; Jaccard with expected-Jaccard decoding) and the default members' stack,
    once per fit of the config with another seed (folds and models): the spread a refit brings."""
    from embedensemble.fileio import read_json

    default = [m["name"] for m in read_json(ROOT / "experiments" / "default.json")["members"]]
    rows = []
    for run in runs:
        scorer = Scorer(run, meta_seeds, held_out)
        missing = sorted(set(kept) - set(scorer.names))
        if missing:
            raise SystemExit(f"{run}: the run lacks the kept members {missing}")
        rows.append({"run": str(run), "fit_seed": read_json(run / "config.json").get("seed"),
                     "quality": _summary(scorer.stack(kept)),
                     "jaccard": _summary(scorer.stack(kept, objective="jaccard", decision="expected_jaccard")),
                     "default": _summary(scorer.stack([m for m in default if m in scorer.names]))})
    return {"rows": rows, "created": now_iso()}


def dev_check(run: Path) -> dict[str, Any]:
    """The stack (thresholds for macro-F1, then for Jaccard) and each member of a SemEval-train run, on dev."""
    from embedensemble.run_folder import RunFolder
    from embedensemble.stacking import fit_stack, score_stack

    folder = RunFolder(run)
    result: dict[str, Any] = {"run": str(run), "finetune_precision": finetune_precision(run)}
    for key, (objective, decision) in DEV_STACKS.items():
        metrics = score_stack(folder, fit_stack(folder, objective=objective, decision=decision))
        if "eval" not in metrics["stack"]:
            raise SystemExit(f"{run}: the run has no labelled eval split (fit it with --data on the SemEval folder)")
        result[key] = {"stack": nested_scores_row(metrics["stack"]["eval"]),
                       "members": {n: nested_scores_row(m["eval"]) for n, m in metrics["members"].items()}}
    result["n_eval"] = len(folder.eval_labels())
    return result


def finetune_precision(run: Path) -> str:
    """The ``precision`` of a run's fine-tuned members ("auto" = fp32 on a CPU), as written in its config."""
    from embedensemble.fileio import read_json

    found = sorted({(m.get("params") or {}).get("precision", "auto") for m in read_json(run / "config.json")["members"]
                    if m.get("kind", "head").endswith("finetune")})
    return "/".join(found) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=ROOT / "artifacts" / "quality")
    parser.add_argument("--time-file", type=Path, help="/usr/bin/time -v output of the cold fit")
    parser.add_argument("--meta-seeds", default="0,1,2")
    parser.add_argument("--held-out", type=Path, default=SEMEVAL)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--dev-run", type=Path, help="the config fitted on SemEval train: scored once on dev (final check)")
    parser.add_argument("--dev-only", action="store_true",
                        help="keep the OOF results; (re)score only --dev-run / --candidates-run / --seed-runs")
    parser.add_argument("--seed-runs", help="comma-separated runs of the config fitted with other --seed values: the spread over fits")
    parser.add_argument("--candidates-run", type=Path, help="a run with the kept members plus candidates: each candidate's gain")
    args = parser.parse_args(argv)
    setup_logging(False)
    from embedensemble.fileio import read_json, write_json

    if args.dev_only and not (args.dev_run or args.candidates_run or args.seed_runs):
        parser.error("--dev-only needs --dev-run, --candidates-run or --seed-runs")
    if not args.render:
        earlier = read_json(args.out) if args.out.is_file() else {}
        if args.dev_only:
            result = earlier
        else:
            seeds = [int(s) for s in args.meta_seeds.split(",")]
            result = measure(args.run, seeds, args.held_out if str(args.held_out) else None, args.time_file)
            result = carry_over(earlier, result | {"created": now_iso(), "machine": machine_info()})
        if args.dev_run:
            result["dev_check"] = dev_check(args.dev_run) | {"created": now_iso()}
        if args.candidates_run:
            held_out = args.held_out if str(args.held_out) else None
            found = candidates(args.candidates_run, result["meta_seeds"], held_out, result["selection"]["kept"])
            result["candidates"] = merge_candidates(earlier.get("candidates"), found)
        if result.get("candidates"):
            cost = result.get("cost", {})
            result["candidates"] = apply_time_budget(result["candidates"], cost.get("cold_fit_minutes"),
                                                     cold_member_seconds=cost.get("member_fit_seconds"))
        if args.seed_runs:
            runs = [Path(result["run"])] + [Path(r) for r in args.seed_runs.split(",")]
            held_out = args.held_out if str(args.held_out) else None
            result["fit_seeds"] = fit_seeds(runs, result["meta_seeds"], held_out, result["selection"]["kept"])
        write_json(args.out, result)
    args.doc.write_text(render(read_json(args.out)), encoding="utf-8")
    logger.info("wrote %s", args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
