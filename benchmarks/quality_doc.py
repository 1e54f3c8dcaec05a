"""docs/quality.md from the results of ``benchmarks.quality`` (formatting only: every number comes from the JSON)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .ablation import METRICS

# The dev check's stacks (keys of benchmarks.quality.DEV_STACKS) as rendered.
DEV_LABELS = {"macro_f1": "stack, thresholds for macro-F1", "jaccard_thresholds": "stack, thresholds for Jaccard",
              "jaccard_decoding": "stack, expected-Jaccard decoding"}


def render(result: dict[str, Any]) -> str:
    sel, cost, t = result["selection"], result.get("cost", {}), result["targets"]
    quality = result["stacks"][result["quality_stack"]]
    jaccard = result["stacks"][result["jaccard_stack"]]
    lines = ["# The `quality` config: members and stacker chosen on train OOF", "",
             "Rendered by `python -m benchmarks.quality --render` from `benchmarks/results/quality_config.json`; do not edit by hand.", "",
             (f"Run `{result['run']}` (Kaggle train.csv, 5-fold, fold seed {result['fold_seed']}; one fit: a fit costs "
              f"{result.get('cost', {}).get('cold_fit_minutes') or '?'} min here, so the spread below is over "
              f"{len(result['meta_seeds'])} meta-fold seeds only). Rows: {result['rows']} "
              f"({result['dev_rows_removed']} SemEval dev tweets left out). Nested thresholds throughout."), "",
             "## Members alone (run folds)", "", "| member | macro-F1 | micro-F1 | Jaccard |", "|---|---|---|---|"]
    for name, s in result["members_alone"].items():
        lines.append(f"| {name} | {s['macro_f1']:.4f} | {s['micro_f1']:.4f} | {s['jaccard']:.4f} |")
    lines += ["", "## Stacks (mean ± sd over meta-fold seeds)", "", "| stack | macro-F1 | micro-F1 | Jaccard |", "|---|---|---|---|"]
    for name, s in result["stacks"].items():
        lines.append(" | ".join([f"| {name}"] + [f"{s[m]['mean']:.4f} ± {s[m]['sd']:.4f}" for m in METRICS]) + " |")
    lines += _additions_table(result)
    lines += _candidates_table(result.get("candidates"), sel["rule_min_gain"])
    lines += _fit_seed_lines(result.get("fit_seeds"))
    lines += _dev_lines(result.get("dev_check"), result.get("finetune_precision"), sel["kept"])
    rule = f"drop a member only if that gains >= {sel['rule_min_gain']} macro-F1 on average and in every meta seed"
    lines += ["", f"## Selection (rule fixed before looking: {rule})", ""]
    for label, steps, kept in (("quality", sel["steps"], sel["kept"]),
                               ("finetune-cpu", result["finetune_cpu_selection"]["steps"], result["finetune_cpu_selection"]["kept"])):
        for step in steps:
            gains = ", ".join(f"{m} {np.mean(g):+.4f}" for m, g in step["drop_one_gains"].items())
            lines.append(f"- {label}, {len(step['members'])} members (macro-F1 {step['macro_f1']:.4f}): dropping each -> {gains}; "
                         f"{'dropped ' + step['dropped'] if step['dropped'] else 'none passes the rule'}.")
        lines.append(f"- {label} keeps: {', '.join(kept)}.")
    lines.append(f"- stacker: LightGBM minus logistic regression per meta seed {sel['lgbm_minus_logreg']} -> `{sel['stacker']}`.")
    lines += ["", ("finetune-cpu's set is re-checked on this run's members of the same names, as this run fitted them "
                   "(the default's members: normalised tweets for TF-IDF and MiniLM, int8 encoders).")]
    macro_ok = quality["macro_f1"]["mean"] >= t["macro_f1"]
    jac_ok = jaccard["jaccard"]["mean"] >= t["jaccard"] and jaccard["micro_f1"]["mean"] >= t["micro_f1_with_jaccard"]
    minutes = cost.get("cold_fit_minutes")
    lines += ["", "## Against the targets", "",
              f"- macro-F1 {quality['macro_f1']['mean']:.4f} (target >= {t['macro_f1']}): {'met' if macro_ok else 'MISSED'}.",
              (f"- objective jaccard: Jaccard {jaccard['jaccard']['mean']:.4f} (>= {t['jaccard']}), micro-F1 "
               f"{jaccard['micro_f1']['mean']:.4f} (>= {t['micro_f1_with_jaccard']}): {'met' if jac_ok else 'MISSED'}."),
              (f"- cold fit + stack on 2 cores of {result.get('machine', {}).get('cpu', '?')} (every candidate member, empty cache): {minutes} min (target <= {t['cold_minutes']}), "
               f"peak memory {cost.get('peak_rss_gb')} GB." if minutes else "- cold fit time: not measured."), "",
              f"Measured {result.get('created', '?')}."]
    return "\n".join(lines) + "\n"


def _additions_table(result: dict[str, Any]) -> list[str]:
    added = result.get("additions")
    if not added:
        return []
    cost = result.get("cost", {})
    seconds, speed = cost.get("member_fit_seconds", {}), cost.get("member_tweets_per_s", {})
    base = added["baseline"]["macro_f1"]["mean"]
    lines = ["", "## Each addition over the default members (stack macro-F1, mean ± sd over meta-fold seeds)", "",
             (f"The default members' stack scores {base:.4f}. A row adds one member alone to it; fit minutes are the member's "
              "5-fold fit in the cold run, tweets/s its prediction alone (all fold models and the members it reads, cache off, "
              "500 Kaggle test tweets)."), "",
             "| addition | stack macro-F1 | gain | fit min | predict tweets/s |", "|---|---|---|---|---|"]
    for name, row in added["rows"].items():
        gains = row["gains"]
        sd = float(np.std(gains, ddof=1)) if len(gains) > 1 else 0.0
        fit = f"{seconds[name] / 60:.1f}" if seconds.get(name) is not None else "–"
        lines.append(f"| {name} | {base + float(np.mean(gains)):.4f} | {float(np.mean(gains)):+.4f} ± {sd:.4f} | {fit} | "
                     f"{speed.get(name, '–')} |")
    return lines


def _provenance(found: dict[str, Any]) -> str:
    union = found.get("assembled_from")
    if not union:
        return "and earlier candidate runs"
    sources = ", ".join(f"`{run}` ({', '.join(names)})" for run, names in union["linked"].items())
    return (f"`benchmarks.candidate_union` linked into one run: `{union['base']}` and the candidates of {sources}, fitted in "
            "batches on the same folds; the members they share are bit-identical fits")


def _candidates_table(found: dict[str, Any] | None, min_gain: float) -> list[str]:
    if not found:
        return []
    base = found["baseline"]["macro_f1"]["mean"]
    lines = ["", "## Tried and not kept: each candidate added alone to the kept members' stack", "",
             (f"Run `{found['run']}` ({_provenance(found)}): the quality run's members plus the candidates, cross-fitted "
              f"on the same folds; the kept members' stack scores {base:.4f} there (column 'over': the kept stack each gain "
              f"was measured against). A candidate joins only if it gains >= {min_gain} macro-F1 on average "
              f"and in every meta seed, and the config stays within the {found.get('time_budget_minutes', '?')}-min cold-time "
              "budget with it (column 'cold min with': the kept config's measured cold fit + stack plus the candidate's "
              "5-fold fit as timed in its candidates run, not a cold run of its own; unknown times do not block). Jaccard: with expected-Jaccard decoding. Spread: sd over meta seeds. "
              "A candidate that varies a kept member (same kind, backbone and head; the fewest other params, a change of depth, adapter or head counting two) is also scored in that "
              "member's place (column 'in place of': macro-F1 / Jaccard gain over the kept stack, and the cold minutes with the swap); "
              "the same rule decides, with the member's fit minutes saved (as the cold run timed them)."), "",
             "| candidate | what | alone macro-F1 | over | stack macro-F1 gain | stack Jaccard gain | in place of | fit min | cold min with | joins |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in found["rows"].items():
        cells = [_gain_cell(row[k]) for k in ("macro_f1_gains", "jaccard_gains")]
        over = row.get("baseline_macro_f1", base)
        lines.append(f"| {name} | {row['what']} | {row['alone']['macro_f1']:.4f} | {over:.4f} | {cells[0]} | {cells[1]} | "
                     f"{_in_place_cell(row)} | {row.get('fit_minutes') or '–'} | {row.get('cold_minutes_with') or '–'} | "
                     f"{_join_verdict(row)} |")
    return lines + _refit_lines(found["rows"])


def _refit_lines(rows: dict[str, Any]) -> list[str]:
    """Candidates that refit a kept member with another seed: both fits' gains over the kept stack without that member."""
    refits = {name: row["refit_of"] for name, row in rows.items() if row.get("refit_of")}
    if not refits:
        return []
    lines = ["", ("Fit-seed checks: a candidate that refits a kept member with another seed, and that member, each added "
                  "to the kept stack without the member (macro-F1 gain, mean ± sd over meta seeds, per meta seed):"), ""]
    for name, twin in refits.items():
        cells = [f"{_gain_cell(g)} ({', '.join(f'{x:+.4f}' for x in g)})" for g in (twin["member_gains"], twin["refit_gains"])]
        lines.append(f"- {twin['member']}: {cells[0]}; its refit {name}: {cells[1]}.")
    return lines


def _gain_cell(gains: list[float]) -> str:
    return f"{np.mean(gains):+.4f} ± {np.std(gains, ddof=1) if len(gains) > 1 else 0.0:.4f}"


def _in_place_cell(row: dict[str, Any]) -> str:
    swap = row.get("in_place_of")
    if not swap:
        return "–"
    cold = f", cold {swap['cold_minutes_with']} min" if swap.get("cold_minutes_with") else ""
    return f"{swap['member']}: {_gain_cell(swap['macro_f1_gains'])} / {_gain_cell(swap['jaccard_gains'])}{cold}"


def _join_verdict(row: dict[str, Any]) -> str:
    if row["joins"]:
        return "yes"
    if (row.get("in_place_of") or {}).get("joins"):
        return f"in place of {row['in_place_of']['member']}"
    return "no: over the time budget" if row.get("gain_rule") else "no"


def dev_missing_members(dev: dict[str, Any], kept: list[str]) -> list[str]:
    """Kept members the dev run did not stack (the dev check predates them)."""
    return sorted(set(kept) - set(dev["macro_f1"]["members"]))


def _dev_lines(dev: dict[str, Any] | None, oof_precision: str | None = None, kept: list[str] | None = None) -> list[str]:
    if not dev:
        return []
    lines = ["", f"## Final check on SemEval dev ({dev['n_eval']} tweets; the config fitted on SemEval train; chose nothing)", "",
             "One fit (fold seed of the config), so no spread."]
    if oof_precision and dev.get("finetune_precision", "auto") != oof_precision:
        lines.append(f"The dev run's fine-tunes ran with precision {dev.get('finetune_precision', 'auto')!r} (fp32 on this CPU), the "
                     f"OOF run's with {oof_precision!r}: this check predates the precision change and was not re-run.")
    missing = dev_missing_members(dev, kept or [])
    if missing:
        lines.append(f"The dev run predates the kept members {missing}: its stack is the config without them.")
    lines += ["", "| model | macro-F1 | micro-F1 | Jaccard |", "|---|---|---|---|"]
    rows = {label: dev[key]["stack"] for key, label in DEV_LABELS.items()}
    rows |= {f"member {n} alone": s for n, s in dev["macro_f1"]["members"].items()}
    for name, s in rows.items():
        lines.append(f"| {name} | {s['macro_f1']:.4f} | {s['micro_f1']:.4f} | {s['jaccard']:.4f} |")
    return lines


def _fit_seed_lines(found: dict[str, Any] | None) -> list[str]:
    if not found or len(found["rows"]) < 2:
        return []
    lines = ["", "## Across fits with other seeds (folds and models)", "",
             ("Each row: the whole config fitted with that seed, scored like the rest of this page (mean over meta seeds); "
              "the last row: mean ± sd over the fits."), "",
             "| run | fit seed | quality macro-F1 | objective jaccard: Jaccard | micro-F1 | default members macro-F1 |",
             "|---|---|---|---|---|---|"]
    cells = [("quality", "macro_f1"), ("jaccard", "jaccard"), ("jaccard", "micro_f1"), ("default", "macro_f1")]
    for row in found["rows"]:
        lines.append(f"| `{row['run']}` | {row['fit_seed']} | " + " | ".join(f"{row[k][m]['mean']:.4f}" for k, m in cells) + " |")
    spread = [[row[k][m]["mean"] for row in found["rows"]] for k, m in cells]
    lines.append(f"| mean ± sd ({len(found['rows'])} fits) | – | "
                 + " | ".join(f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" for v in spread) + " |")
    return lines
