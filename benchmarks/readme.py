"""Render ``benchmarks/results/*.json`` between ``<!-- results:start -->`` and ``<!-- results:end -->``:
the full results in ``docs/benchmarks.md``, a short headline table in the README.

Every number in both blocks comes from the JSON files; nothing outside the markers is touched.

    python -m benchmarks.readme [--out benchmarks/results] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import RESULTS_DIR, ROOT
from .summary import SAME_ROWS, dev_note, headline, oof_thresholds, selection_section, splits_legend

README, DOCS = ROOT / "README.md", ROOT / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
METRICS = (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"), ("jaccard", "Jaccard"))


def _load(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for name in ("quality", "cv", "speed", "finetune", "selection", "ablation", "quality_config", "int8", "bf16"):
        path = Path(out) / f"{name}.json"
        if path.is_file():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _secs(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x / 60:.1f} min" if x >= 120 else f"{x:.1f} s"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _metric_cells(m: dict[str, Any]) -> list[str]:
    return [_f(m.get(key)) for key, _ in METRICS]


def _machine(results: dict[str, dict]) -> list[str]:
    lines = []
    seen = set()
    for name, res in results.items():
        m = res["machine"]
        v = m.get("versions", {})
        text = (f"{m['cpu']}, {m['usable_cores']} usable cores, {m['ram_gb']} GB RAM, {m['os']}; Python {m['python']}, "
                f"torch {v.get('torch', '?')}, transformers {v.get('transformers', '?')}, sentence-transformers {v.get('sentence-transformers', '?')}")
        if text not in seen:
            seen.add(text)
            lines.append(f"- **Machine:** {text}.")
    runs = ", ".join(f"`{n}` {r['started'][:16].replace('T', ' ')} UTC ({_secs(r.get('wall_seconds'))}, "
                     f"load average {r['machine']['load_average_at_start'][0]}, {r.get('torch_threads', '?')} torch thread(s))"
                     for n, r in results.items() if "wall_seconds" in r)
    lines.append(f"- **Runs:** {runs}. The machine was shared with other jobs, so absolute times are noisy; "
                 "speed comparisons are ratios measured in the same process.")
    if any(r.get("quick") for r in results.values()):
        lines.append("- **Note:** some results come from a `--quick` (CI-sized) run and are not meaningful as quality numbers.")
    return lines + [""]


def _reused(res: dict[str, Any]) -> list[str]:
    reused = sorted(set(res.get("members_reused", [])) | set(res.get("members_copied_from_quality_run", [])))
    if not reused:
        return []
    return [f"Members {', '.join(f'`{n}`' for n in reused)} were already fitted by an earlier run of a benchmark on the same data "
            "and folds (or copied from the quality run); their fit times are from that run. A head on fine-tuned embeddings "
            "(`finetuned:<member>`) times only its own fit: the fine-tuned member's embedding tables (one pass of its fold models over the data) "
            "are made once, before the first such head, outside that time.", ""]


def _quality(res: dict[str, Any]) -> list[str]:
    lines = [f"### Quality: SemEval-2018 E-c dev ({res['n_eval']} tweets), trained on train ({res['n_train']} tweets), {res['n_folds']}-fold cross-fitting", "",
             "Every row is measured on dev; tuned thresholds were tuned on train out-of-fold (OOF) predictions.", ""]
    rows = [[f"**stack** ({len(res['members'])} members)", "per emotion, tuned on stacker train OOF", *_metric_cells(res["stack"]["eval"]), "–"]]
    for name, m in res["members"].items():
        rows.append([name, "own, tuned on train OOF", *_metric_cells(m["eval"]), _secs(m.get("fit_seconds"))])
        rows.append([name, "0.5", *_metric_cells(m["eval_at_0.5"]), ""])
    for name, b in res.get("baselines", {}).items():
        fit = _secs(b.get("fit_seconds")) + (f" + {_secs(b['embed_seconds'])} embedding" if b.get("embed_seconds") else "")
        rows.append([f"*baseline:* {name}", "0.5", *_metric_cells(b["eval"]), fit])
    for ref in res.get("references", []):
        rows.append([f"*published:* {ref['name']}", f"{ref['split']} (not re-run)", *_metric_cells(ref["metrics"]), ""])
    lines += _table(["system", "thresholds", *(label for _, label in METRICS), "fit time"], rows)
    v = res["stack_vs_best_member"]
    verdict = "beats" if v["stack_beats_best_member"] else "does **not** beat"
    lines.append(f"The stack ({_f(v['stack'])}) {verdict} its best single member `{v['best_member']}` ({_f(v['best_member_score'])}) "
                 f"on dev macro-F1 (margin {v['margin']:+.3f}). A member's fit time is its {res['n_folds']}-fold cross-fit with predictions "
                 "(embeddings read from the cache when present). Baselines are trained once on the whole train split (embedding time shown apart); "
                 "published results are on the SemEval *test* split, ours on dev.")
    lines.append("")
    emotions = list(res["stack"]["eval"]["per_emotion_f1"])
    rows = [["stack", *(_f(res["stack"]["eval"]["per_emotion_f1"][e], 2) for e in emotions)]]
    rows += [[name, *(_f(m["eval"]["per_emotion_f1"][e], 2) for e in emotions)] for name, m in res["members"].items()]
    rows += [[f"*{name}*", *(_f(b["eval"]["per_emotion_f1"][e], 2) for e in emotions)] for name, b in res.get("baselines", {}).items()]
    lines += ["Per-emotion F1 on dev (members at their tuned thresholds, baselines at 0.5):", ""]
    lines += _table(["system", *emotions], rows)
    return lines + _reused(res)


def _cv(res: dict[str, Any]) -> list[str]:
    lines = [f"### Cross-validation: Kaggle train (SemEval train+dev, {res['n_train']} tweets), {res['n_folds']}-fold out-of-fold", "",
             "Every row is measured on train rows, out-of-fold: a train estimate (dev tweets are among these rows).", ""]
    rows = [["**stack**", f"per emotion, tuned on {oof_thresholds(res['stack'])}", *_metric_cells(res["stack"]["oof"]), "–"]]
    if SAME_ROWS in res["stack"]:
        rows.append(["**stack**", "per emotion, tuned on these same rows (optimistic)", *_metric_cells(res["stack"][SAME_ROWS]), ""])
    for name, m in res["members"].items():
        rows.append([name, f"own, tuned on {oof_thresholds(m)}", *_metric_cells(m["oof"]), _secs(m.get("fit_seconds"))])
        if SAME_ROWS in m:
            rows.append([name, "own, tuned on these same rows (optimistic)", *_metric_cells(m[SAME_ROWS]), ""])
        rows.append([name, "0.5", *_metric_cells(m["oof_at_0.5"]), ""])
    lines += _table(["system", "thresholds", *(label for _, label in METRICS), "fit time"], rows)
    lines.append("The stack's OOF probabilities come from a second level of cross-fitting (meta-folds).")
    return lines + [""]


def _speed(res: dict[str, Any]) -> list[str]:
    lines = ["### Speed", ""]
    rows = []
    for backbone, emb in res.get("embedding", {}).items():
        order = emb.get("order") or sorted(emb["variants"], key=lambda name: name != emb["reference"])
        for variant in order:
            v = emb["variants"][variant]
            if "skipped" in v:
                rows.append([backbone, variant, "skipped", "", "", ""])
            else:
                rows.append([backbone, variant, _f(v["tweets_per_s"], 0), f"{v['ratio_vs_reference']:.2f}×",
                             _f(v.get("mean_cosine_vs_reference"), 4), _f(v["min_cosine_vs_reference"], 4)])
    if rows:
        n = next(iter(res["embedding"].values()))["n_texts"]
        lines += [f"Embedding throughput on the same {n} SemEval train tweets (best of the repeats, model load excluded; "
                  "ratio and cosine against the first row of each model, plain sentence-transformers with torch's default threads):", ""]
        lines += _table(["model", "how", "tweets/s", "speed ratio", "mean cosine", "min cosine"], rows)
    q = res.get("onnx_quality")
    if q:
        rows = [[name, _f(v["eval"]["macro_f1"]), _f(v["eval"]["micro_f1"]), _secs(v["embed_seconds"])] for name, v in q.items() if isinstance(v, dict) and "eval" in v]
        lines += [f"Does ONNX / int8 cost quality? {q['backbone']} embeddings + {q['head']}, trained on {q['n_train']}, scored on {q['n_eval']} dev tweets:", ""]
        lines += _table(["embeddings", "dev macro-F1", "dev micro-F1", f"embed {q['n_train'] + q['n_eval']} tweets"], rows)
        for name, v in res.get("onnx_verdict", {}).items():
            if isinstance(v, dict) and "speedup_vs_best_torch" in v:
                lines.append(f"- {name}: {v['speedup_vs_best_torch']:.2f}× the best torch `Encoder` variant, dev macro-F1 {v['macro_f1_change'] + 0.0:+.4f} "
                             f"→ {'worth adopting' if v['keep'] else 'not worth adopting'} ({res['onnx_verdict']['rule']}).")
        lines.append("")
    fit = res.get("fit")
    if fit:
        lines += [f"Fit of `{fit['config']}` ({len(fit['members'])} members, {fit['n_folds']} folds) on {fit['n_train']} train tweets + {fit['n_eval']} dev tweets, "
                  f"each in a fresh process with the library's default threads, first with an empty embedding cache (cold), then with the same cache and a new run folder (warm): "
                  f"**{fit['speedup_warm_vs_cold']:.2f}×** faster warm.", ""]
        rows = [[phase, _secs(fit[phase]["wall_seconds"]), _secs(fit[phase].get("process_seconds")), fit[phase]["cache_hits"], fit[phase]["cache_misses"],
                 _f(fit[phase]["peak_rss_mb"], 0)] for phase in ("cold", "warm")]
        lines += _table(["fit", "fit + stack", "whole process", "cache hits", "cache misses (texts embedded)", "peak RSS MB"], rows)
    job = res.get("main_job")
    if job:
        lines += [f"The main job (`make run`: `{job['config']}` on the whole Kaggle folder, {job['n_train']} train + {job['n_test']} test tweets, "
                  f"{job['n_folds']} folds, empty embedding cache): fit + stack {_secs(job['wall_seconds'])}, whole process "
                  f"{_secs(job.get('process_seconds'))}, {job['cache_misses']} embeddings computed (all backbones), peak RSS {_f(job['peak_rss_mb'], 0)} MB; "
                  f"submission.csv has {job['submission_rows']} rows.", ""]
    p = res.get("predict")
    if p:
        fresh, none = p["fresh_cache"], p["no_cache"]
        lat = fresh["latency_ms"]
        lines += [f"Prediction with a loaded ensemble ({', '.join(p['members'])}; {max(p['folds_per_member'].values())} fold models per member; "
                  f"`{Path(p['ensemble_dir']).parent.name}`), each measurement in a fresh process with the library's default threads: with an empty embedding cache folder "
                  "(a member's first fold model embeds the texts, the other folds read them from the cache) and with no cache "
                  "(`use_cache=False`: every fold model embeds the texts itself):", ""]
        rows = [["empty cache", f"{_f(fresh['tweets_per_s'], 1)} tweets/s ({fresh['n_texts']} tweets in {_secs(fresh['seconds'])})",
                 f"median {_f(lat['median'], 0)} ms, p90 {_f(lat['p90'], 0)} ms ({lat['calls']} calls)",
                 f"{_secs(fresh['load_seconds'])} + {_secs(fresh['first_call_seconds'])}", _f(fresh["peak_rss_mb"], 0)],
                ["no cache", f"{_f(none['tweets_per_s'], 1)} tweets/s ({none['n_texts']} tweets; {none['vs_fresh_cache']:.2f}× the empty-cache rate)", "–",
                 f"{_secs(none['load_seconds'])} + {_secs(none['first_call_seconds'])}", _f(none["peak_rss_mb"], 0)]]
        lines += _table(["cache", "throughput", "single-tweet latency", "load + first call", "peak RSS MB"], rows)
        lines += [f"Predicting the same tweets again once they are cached: {_f(fresh['repeat_call_tweets_per_s'], 1)} tweets/s.", ""]
    return lines


def _finetune(res: dict[str, Any]) -> list[str]:
    lines = ["### CPU fine-tuning (`experiments/finetune-cpu.json`, SemEval train -> dev)", "",
             "Every row is measured on dev; tuned thresholds were tuned on train OOF.", ""]
    if res.get("skipped"):
        return lines + [f"Skipped: {res.get('reason')}", ""]
    lines[0] = lines[0].replace("dev)", f"dev, {res['n_folds']}-fold cross-fitting on {res['n_train']} tweets, scored on {res['n_eval']})")
    rows = [[f"**stack with** {', '.join(res['finetuned_members'])}", "per emotion", *_metric_cells(res["stack_with_finetuned"]["eval"]), "–"],
            [f"**stack without** (only {', '.join(res['frozen_members'])})", "per emotion", *_metric_cells(res["stack_without_finetuned"]["eval"]), "–"]]
    for name, m in res["members"].items():
        rows.append([name, "own, tuned on train OOF", *_metric_cells(m["eval"]), _secs(m.get("fit_seconds"))])
        rows.append([name, "0.5", *_metric_cells(m["eval_at_0.5"]), ""])
    lines += _table(["system", "thresholds", *(label for _, label in METRICS), "fit time"], rows)
    c = res["comparison"]
    for pair in c["members"]:
        lines.append(f"Fine-tuned `{pair['finetuned']}` vs frozen `{pair['frozen']}` (dev macro-F1): {_f(pair['finetuned_macro_f1'])} vs {_f(pair['frozen_macro_f1'])} "
                     f"at tuned thresholds, {_f(pair['finetuned_macro_f1_at_0.5'])} vs {_f(pair['frozen_macro_f1_at_0.5'])} at 0.5; "
                     f"cross-fit time {_secs(pair['finetuned_fit_seconds'])} vs {_secs(pair['frozen_fit_seconds'])}. ")
    lines.append(f"Adding the fine-tuned member(s) changes the stack's dev macro-F1 by {c['stack_gain']:+.3f}.")
    v = res.get("stack_vs_best_member")
    if v:
        verdict = "beats" if v["stack_beats_best_member"] else "does **not** beat"
        lines.append(f"The full stack ({_f(v['stack'])}) {verdict} its best member `{v['best_member']}` ({_f(v['best_member_score'])}; margin {v['margin']:+.4f}).")
    lines += [""] + _reused(res)
    return lines + [""]


def _gpu(reports: list[dict[str, Any]]) -> list[str]:
    """One block per ``gpu_check_<card>.json``: both sides of one run and their ratios (benchmarks.gpu.report)."""
    from .gpu.report import render as render_gpu_report

    lines = ["### GPU check (`python -m benchmarks.gpu_check`: 7B-shaped Mistral, random weights, library vs plain reference in one run)", ""]
    for rep in reports:
        lines += render_gpu_report(rep)
    return lines


def render(out: Path = RESULTS_DIR) -> str:
    """The full results block of ``docs/benchmarks.md``."""
    results = _load(out)
    gpu = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(out).glob("gpu_check_*.json"))]
    if not results and not gpu:
        return "No benchmark results yet: run `python -m benchmarks.run`.\n"
    lines = ["Produced by `python -m benchmarks.run` from `benchmarks/results/*.json` (do not edit by hand).", ""]
    lines += _machine(results) + splits_legend(results)
    for name, render_section in (("quality", _quality), ("cv", _cv), ("finetune", _finetune), ("selection", selection_section), ("speed", _speed)):
        if name in results:
            lines += render_section(results[name])
            config = {"quality": results[name].get("config"), "finetune": "finetune-cpu"}.get(name)
            lines += [dev_note(results, config, name), ""] if config else []
    if gpu:  # written by benchmarks/gpu_check.py on a CUDA machine, copied here as gpu_check_<card>.json
        lines += _gpu(gpu)
    return "\n".join(lines).rstrip() + "\n"


def render_headline(out: Path = RESULTS_DIR) -> str:
    """The README's short block: the headline table and where the rest is."""
    lines = ["Rendered from `benchmarks/results/*.json` by `python -m benchmarks.readme` (do not edit by hand); "
             "every table, the machine and the speed and GPU measurements are in [docs/benchmarks.md](docs/benchmarks.md).", ""]
    return "\n".join(lines + headline(_load(out))).rstrip() + "\n"


def _blocks(out: Path, readme: Path, docs: Path) -> dict[Path, str]:
    return {readme: render_headline(out), docs: render(out)}


def _with_block(path: Path, block: str) -> str:
    """``path``'s text with the part between the markers replaced by ``block``."""
    text = path.read_text(encoding="utf-8")
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{path} must hold exactly one {START} ... {END} block")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}{END}{tail}"


def update_readme(out: Path = RESULTS_DIR, readme: Path = README, docs: Path = DOCS) -> list[Path]:
    """Re-render the README's headline block and docs/benchmarks.md's results block (nothing else in either)."""
    from embedensemble.fileio import atomic_write_text

    return [atomic_write_text(path, _with_block(path, block)) for path, block in _blocks(out, readme, docs).items()]


def stale(out: Path = RESULTS_DIR, readme: Path = README, docs: Path = DOCS) -> list[Path]:
    """The files whose block differs from what the JSON renders (empty when both are up to date)."""
    return [path for path, block in _blocks(out, readme, docs).items() if path.read_text(encoding="utf-8") != _with_block(path, block)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.readme", description="render benchmark JSON into the README and docs blocks")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--docs", type=Path, default=DOCS)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs from what the JSON renders")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.out, args.readme, args.docs)
        for path in outdated:
            print(f"{path}: results block is not what {args.out}/*.json renders; run `python -m benchmarks.readme`", file=sys.stderr)
        return 1 if outdated else 0
    update_readme(args.out, args.readme, args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
