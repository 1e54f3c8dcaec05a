"""What each benchmark number is measured on: the README's headline table, the splits legend and the
re-selection section of ``docs/benchmarks.md``, all rendered from ``benchmarks/results/*.json``."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import quality_doc

SAME_ROWS = "oof_thresholds_tuned_on_same_rows"


def nested_oof(entry: dict[str, Any]) -> bool:
    """Whether ``entry["oof"]`` has nested thresholds (runs stacked before nested scores tuned them on the same rows)."""
    return SAME_ROWS in entry


def oof_thresholds(entry: dict[str, Any]) -> str:
    """Where the thresholds of ``entry["oof"]`` were tuned."""
    return "the other folds' OOF (nested)" if nested_oof(entry) else "these same OOF rows (optimistic)"


def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _secs(x: Any) -> str:
    return "–" if x is None else (f"{x / 60:.1f} min" if x >= 120 else f"{x:.1f} s")


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def chosen_on_oof(results: dict[str, dict[str, Any]], config: str) -> bool:
    """Whether ``selection.json`` re-selected the choices of ``experiments/<config>.json`` on train OOF."""
    selection = results.get("selection")
    return bool(selection) and selection.get("config", "").endswith(f"{config}.json")


def stale_after_selection(results: dict[str, dict[str, Any]], section: str) -> list[str]:
    """Choices the re-selection changed after ``section`` was measured (its numbers are for the old defaults)."""
    selection, res = results.get("selection"), results.get(section)
    if not selection or not res or res.get("started", "") > selection.get("finished", ""):
        return []
    return [choice for choice, d in selection["decisions"].items() if d["changed"]]


def dev_note(results: dict[str, dict[str, Any]], config: str, section: str = "quality") -> str:
    """What dev numbers of ``config`` are: a final check, or the score some of its choices were made on."""
    changed = stale_after_selection(results, section) if chosen_on_oof(results, config) else []
    if changed:
        return (f"These rows were measured before the re-selection on train OOF changed {', '.join(changed)}: "
                "they are for the earlier defaults; re-run `python -m benchmarks.run` for the current ones.")
    if chosen_on_oof(results, config):
        return "This config's choices were re-selected on train OOF (below) and kept, so dev is only a final check for them."
    return (f"Some choices of `experiments/{config}.json` were made on this dev score before dev became a final check "
            "(not yet re-selected on train OOF), so its rows are not a held-out estimate of those choices.")


def _choices(results: dict[str, dict[str, Any]], config: str, section: str) -> str:
    """Where the choices of ``config`` (its file stem) behind ``section``'s numbers were made (``selection.json`` when it covers them)."""
    selection = results.get("selection")
    changed = stale_after_selection(results, section) if chosen_on_oof(results, config) else []
    if changed:
        return f"earlier defaults, partly chosen on SemEval dev (re-selection on train OOF has since changed {', '.join(changed)})"
    if chosen_on_oof(results, config):
        held = selection["data"].get("held_out", {}).get("rows_removed", 0)
        where = f"Kaggle train.csv{' minus the dev tweets' if held else ''}, {selection['n_folds']}-fold OOF, {len(selection['seeds'])} seed(s)"
        choices = f"C, LightGBM class weights, member set: {where}"
        ablation = results.get("ablation")
        if ablation:  # the stacker's features and tweet normalisation were chosen by benchmarks/ablation.py
            choices += "; stacker features, tweet normalisation: Kaggle train.csv minus the dev tweets, 5-fold OOF, nested, 3x3 seeds"
        return choices
    if config == "finetune-cpu":
        reselected = results.get("quality_config", {}).get("finetune_cpu_selection")
        if reselected:
            dropped = [m for m in reselected["start"] if m not in reselected["kept"]]
            return ("member set: first chosen on SemEval dev, re-checked on Kaggle train OOF minus the dev tweets, nested, "
                    f"3 meta seeds ([docs/quality.md](docs/quality.md)): {'dropped ' + ', '.join(dropped) if dropped else 'every member kept'}")
        return "member set: SemEval dev (chosen before dev became a final check; not re-selected on OOF yet)"
    return "SemEval dev (not re-selected on OOF yet)"


def headline(results: dict[str, dict[str, Any]]) -> list[str]:
    """A short table for the README: the main numbers, the split each is measured on, where thresholds and choices come from."""
    rows = []
    quality, cv, finetune, speed = (results.get(k) for k in ("quality", "cv", "finetune", "speed"))
    if quality:
        dev = f"SemEval dev ({quality['n_eval']} tweets; fitted on SemEval train, {quality['n_train']})"
        v = quality["stack_vs_best_member"]
        rows.append([f"default stack ({len(quality['members'])} members), macro-F1", _f(quality["stack"]["eval"]["macro_f1"]), dev,
                     "stacker OOF of train", _choices(results, quality.get("config", "default"), "quality")])
        rows.append([f"best single member (`{v['best_member']}`), macro-F1", _f(v["best_member_score"]), dev, "its own train OOF", "–"])
    if cv:
        stack = cv["stack"]
        where = f"Kaggle train.csv, {cv['n_folds']}-fold OOF ({cv['n_train']} tweets)"
        rows.append(["default stack, macro-F1", _f(stack["oof"]["macro_f1"]), where, oof_thresholds(stack),
                     _choices(results, cv.get("config", "default"), "cv")])
    if finetune and not finetune.get("skipped"):
        c = finetune["comparison"]
        rows.append([f"CPU fine-tune stack (+{', '.join(finetune['finetuned_members'])}), macro-F1", _f(c["stack_with_macro_f1"]),
                     f"SemEval dev ({finetune['n_eval']} tweets)", "stacker OOF of train", _choices(results, "finetune-cpu", "finetune")])
    rows += _quality_config_rows(results.get("quality_config"), results.get("int8"))
    rows += _bf16_rows(results.get("bf16"))
    if speed and speed.get("main_job"):
        job = speed["main_job"]
        rows.append(["`make run` (default config, cold embedding cache), wall time", _secs(job["wall_seconds"]),
                     f"Kaggle train + test ({job['n_train']} + {job['n_test']} tweets)", "–", "–"])
    if speed and speed.get("predict"):
        fresh = speed["predict"]["fresh_cache"]
        rows.append(["prediction throughput (loaded ensemble, empty cache)", f"{_f(fresh['tweets_per_s'], 1)} tweets/s",
                     f"{fresh['n_texts']} dev/test tweets", "–", "–"])
    if not rows:
        return ["No benchmark results yet: run `python -m benchmarks.run`."]
    header = ["result", "value", "measured on", "thresholds tuned on", "choices made on"]
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]


def _quality_config_rows(qc: dict[str, Any] | None, int8: dict[str, Any] | None) -> list[list[str]]:
    """Headline rows of the ``quality`` config (benchmarks.quality) and of int8 encoders (benchmarks.int8)."""
    rows = []
    if qc:
        where = (f"Kaggle train.csv minus the dev tweets ({qc['rows']}), 5-fold OOF, fold seed {qc['fold_seed']}, "
                 f"{len(qc['meta_seeds'])} meta seeds")
        chosen = "members (backward elimination) and stacker: this OOF ([docs/quality.md](docs/quality.md))"
        best = qc["stacks"][qc["quality_stack"]]
        rows.append([f"`quality` config stack ({len(qc['selection']['kept'])} members, {qc['selection']['stacker']}), macro-F1",
                     f"{best['macro_f1']['mean']:.3f} ± {best['macro_f1']['sd']:.3f}", where, "the other folds' OOF (nested)", chosen])
        jac = qc["stacks"][qc["jaccard_stack"]]
        rows.append([f"`quality` config, objective jaccard ({qc['jaccard_stack'].split(', ')[-1]}): Jaccard / micro-F1",
                     f"{jac['jaccard']['mean']:.3f} / {jac['micro_f1']['mean']:.3f}", where, "the other folds' OOF (nested)", chosen])
        rows += _fit_seed_rows(qc)
        cost = qc.get("cost", {})
        added = qc.get("additions")
        if added:
            seconds = cost.get("member_fit_seconds", {})
            gains = [f"{name} {np.mean(row['gains']):+.3f}" + (f" ({seconds[name] / 60:.0f} min)" if seconds.get(name) else "")
                     for name, row in added["rows"].items()]
            rows.append(["`quality` config: each addition's gain over the default members' stack, macro-F1 (fit minutes)",
                         ", ".join(gains), where, "the other folds' OOF (nested)", "[docs/quality.md](docs/quality.md)"])
        dev = qc.get("dev_check")
        if dev:
            macro, jac = dev["macro_f1"]["stack"], dev["jaccard_decoding"]["stack"]
            missing = quality_doc.dev_missing_members(dev, qc["selection"]["kept"])
            without = f" without {', '.join(missing)} (the dev run predates them)" if missing else ""
            rows.append([f"`quality` config{without} stack, macro-F1; with expected-Jaccard decoding: Jaccard / micro-F1",
                         f"{macro['macro_f1']:.3f}; {jac['jaccard']:.3f} / {jac['micro_f1']:.3f}",
                         f"SemEval dev ({dev['n_eval']} tweets; fitted on SemEval train)", "stacker OOF of train",
                         "nothing: a final check ([docs/quality.md](docs/quality.md))"])
        if cost.get("cold_fit_minutes"):
            cpu = qc.get("machine", {}).get("cpu", "?")
            rows.append([f"`quality` config cold fit + stack (every candidate member, 2 cores of {cpu}), wall time / peak memory",
                         f"{cost['cold_fit_minutes']:.0f} min / {cost['peak_rss_gb']:.1f} GB", "Kaggle train + test", "–", "–"])
    if int8 and int8.get("speed"):
        sides = int8["speed"]["sides"]
        fp32, quantised = sides["default ensemble, fp32 encoders"], sides["default ensemble, int8 encoders"]
        rows.append(["default ensemble, cache off, vs plain mpnet encode (fp32 encoders -> int8)",
                     f"{fp32['vs_plain_mpnet']:.2f}x -> {quantised['vs_plain_mpnet']:.2f}x",
                     f"{int8['speed']['tweets']['n']} Kaggle test tweets ([docs/int8.md](docs/int8.md))", "–", "–"])
    if int8 and int8.get("quality"):
        v = int8["quality"]["verdict"]
        rows.append(["int8 encoders' cost to the default stack, macro-F1", f"{-v['stack_macro_f1_loss']:+.4f}",
                     "Kaggle train.csv minus the dev tweets, 5-fold OOF, 3 seeds x 3 meta seeds", "the other folds' OOF (nested)", "–"])
    return rows


def _fit_seed_rows(qc: dict[str, Any]) -> list[list[str]]:
    """The quality config's stack across whole refits with other seeds (folds and models), when there are two or more."""
    fits = (qc.get("fit_seeds") or {}).get("rows", [])
    if len(fits) < 2:
        return []

    def spread(key: str, metric: str) -> str:
        values = [row[key][metric]["mean"] for row in fits]
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"

    seeds = ", ".join(str(row["fit_seed"]) for row in fits)
    return [[f"`quality` config across {len(fits)} fits (fit seeds {seeds}): stack macro-F1; objective jaccard: Jaccard / micro-F1",
             f"{spread('quality', 'macro_f1')}; {spread('jaccard', 'jaccard')} / {spread('jaccard', 'micro_f1')}",
             f"Kaggle train.csv minus the dev tweets ({qc['rows']}), 5-fold OOF of each fit, {len(qc['meta_seeds'])} meta seeds",
             "the other folds' OOF (nested)", "nothing: the spread a refit brings ([docs/quality.md](docs/quality.md))"]]


def _bf16_rows(bf16: dict[str, Any] | None) -> list[list[str]]:
    """Headline rows of bf16 autocast on CPU (benchmarks.bf16)."""
    rows = []
    if bf16 and bf16.get("speed"):
        speed = bf16["speed"]["rows"]
        ratios = "; ".join(f"{name.removeprefix('fine-tune ')} {row['train_tweets_per_s ratio']:.1f}x"
                           for name, row in speed.items() if "train_tweets_per_s ratio" in row)
        rows.append(["fine-tuning speed, bf16 autocast / fp32 (CPU with AVX512-BF16)", ratios,
                     f"Kaggle train tweets, {bf16['speed']['steps']} steps ([docs/bf16.md](docs/bf16.md))", "–", "–"])
    if bf16 and bf16.get("quality"):
        change = bf16["quality"]["stack_change"]["macro_f1"]
        rows.append(["`quality` stack with its fine-tunes in bf16 instead of fp32, macro-F1 change", f"{round(float(np.mean(change)), 4) + 0.0:+.4f}",
                     f"Kaggle train.csv minus the dev tweets, 5-fold OOF, one fit seed, {len(change)} meta seeds",
                     "the other folds' OOF (nested)", "–"])
    return rows


def splits_legend(results: dict[str, dict[str, Any]]) -> list[str]:
    """Which data each section uses, and the one rule: choices on train OOF, dev scored once as a final check."""
    quality, cv = results.get("quality"), results.get("cv")
    lines = ["**Splits.** "]
    if quality:
        lines[0] += (f"SemEval-2018 E-c *train* ({quality['n_train']} tweets) fits every member, the stacker and the thresholds; "
                     f"*dev* ({quality['n_eval']}) is scored once, as a final check. ")
    if cv:
        lines[0] += (f"Kaggle *train.csv* ({cv['n_train']} tweets) is SemEval train + dev under other IDs: its {cv['n_folds']}-fold "
                     "out-of-fold (OOF) numbers are a train estimate, not a held-out one. ")
    lines[0] += ("*OOF, nested* means each fold's thresholds were tuned on the other folds' rows only; *same rows* means they were "
                 "tuned on the rows scored (optimistic). Published references are on SemEval *test*.")
    return [*lines, ""]


def selection_section(sel: dict[str, Any]) -> list[str]:
    """The re-selection of the default config's choices (``benchmarks.selection``)."""
    seeds = [s["seed"] for s in sel["seeds"]]
    held = sel["data"].get("held_out", {})
    data = f"{sel['data']['split']} ({sel['data']['n_train']} tweets" + (f"; {held['rows_removed']} dev tweets removed)" if held.get("rows_removed") else ")")
    lines = [f"### Choices re-selected on train OOF (`python -m benchmarks.selection`, `{sel['config']}`)", "",
             f"{data}, {sel['n_folds']}-fold OOF, seeds {', '.join(map(str, seeds))}; {sel['metric']}. Rule: {sel['rule']}.", ""]
    rows = []
    for choice, d in sel["decisions"].items():
        scores = d["mean_nested_macro_f1"]
        shown = scores if choice != "stack member set" else dict(sorted(scores.items(), key=lambda kv: -kv[1])[:5]) | {d["current"]: scores[d["current"]]}
        for option, score in shown.items():
            marks = [m for m, on in (("current", option == str(d["current"])), ("**chosen**", option == str(d["chosen"]))) if on]
            per_seed = " / ".join(_f(x, 4) for x in d["per_seed"][option])
            rows.append([choice, f"`{option}`", _f(score, 4), per_seed, ", ".join(marks)])
    header = ["choice", "option", "mean OOF macro-F1 (nested)", "per seed", ""]
    lines += [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows), ""]
    changed = [c for c, d in sel["decisions"].items() if d["changed"]]
    lines.append(f"Changed: {', '.join(changed)}." if changed else "Every current default is kept: no option beat it clearly on OOF.")
    return [*lines, ""]
