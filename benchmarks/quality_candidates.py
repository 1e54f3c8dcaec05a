"""Candidates for the ``quality`` config: each scored added alone to the kept members' stack, and in the place of
the kept member it varies; whether it joins under the gain rule and the cold-time budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedensemble.finetune.args import FinetuneArgs

from . import now_iso
from .candidate_union import UNION_FILE
from .quality_scoring import TARGETS, Scorer, _gains, _passes, _summary, nested_scores_row

DEFAULT_EPOCHS = FinetuneArgs.epochs


def _describe(member: dict[str, Any]) -> str:
    what = member.get("features") or member.get("backbone") or "?"
    params = member.get("params") or {}
    normalised = ", normalised tweets" if params.get("normalise") else ""
    layer = (params.get("backbone_options") or {}).get("hidden_layer")
    pooled = f" (layer {layer}, {params['backbone_options'].get('pooling', 'mean')}-pooled)" if layer else ""
    kind = member.get("kind", "head")
    head = f" + {member['head']}" if member.get("head") and not kind.endswith("finetune") else ""  # fine-tunes carry their own head
    tuned = [f"top {params['train_top_layers']} layers" if params.get("train_top_layers") else "",
             f"{params['head'].replace('_', '-')} head" if params.get("head", "linear") != "linear" else "",
             f"{params['epochs']:g} epochs" if params.get("epochs", DEFAULT_EPOCHS) != DEFAULT_EPOCHS else "",
             f"pos_weight {params['pos_weight']}" if params.get("pos_weight") else "",
             f"LCA loss weight {params['lca_weight']}" if params.get("lca_weight") else "",
             f"weight EMA {params['ema_decay']}" if params.get("ema_decay") else "",
             f"seed {params['seed']}" if params.get("seed") is not None else ""] if kind.endswith("finetune") else []
    extra = "".join(f", {t}" for t in tuned if t)
    return f"{kind}: {what}{pooled}{head}{normalised}{extra}"


def candidates(run: Path, meta_seeds: list[int], held_out: Path | None, kept: list[str]) -> dict[str, Any]:
    """Members of ``run`` outside ``kept``, each added alone to the kept members' stack: gains per meta seed
    for macro-F1 (thresholds) and for Jaccard (expected-Jaccard decoding); ``gain_rule``: the drop rule's threshold
    passed (whether it joins also depends on the time budget: :func:`apply_time_budget`), and its 5-fold fit minutes."""
    from embedensemble.fileio import read_json

    scorer = Scorer(run, meta_seeds, held_out)
    missing = sorted(set(kept) - set(scorer.names))
    if missing:
        raise SystemExit(f"{run}: the candidates run lacks the kept members {missing}")
    configs = {m["name"]: m for m in read_json(run / "config.json")["members"]}
    base, base_jaccard = scorer.stack(kept), scorer.stack(kept, objective="jaccard", decision="expected_jaccard")
    rows = {}
    for name in (n for n in scorer.names if n not in kept):
        macro = _gains(scorer.stack(kept + [name]), base)
        jaccard = _gains(scorer.stack(kept + [name], objective="jaccard", decision="expected_jaccard"), base_jaccard, "jaccard")
        rows[name] = {"what": _describe(configs[name]), "alone": nested_scores_row(scorer.member(name)),
                      "macro_f1_gains": [round(g, 4) for g in macro], "jaccard_gains": [round(g, 4) for g in jaccard],
                      "gain_rule": _passes(macro), "fit_minutes": _fit_minutes(run, name)}
        varied = variant_of(configs, kept, name)
        if varied:  # the time-neutral question: the candidate in the place of the kept member it varies
            rows[name]["in_place_of"] = _in_place(scorer, run, kept, varied, name, base, base_jaccard)
        twin = refit_twin(configs, kept, name)
        if twin:  # a kept member refitted with another seed: does the member's own gain hold for this fit too?
            rest = [k for k in kept if k != twin]
            without = scorer.stack(rest)
            rows[name]["refit_of"] = {"member": twin, "member_gains": [round(g, 4) for g in _gains(base, without)],
                                      "refit_gains": [round(g, 4) for g in _gains(scorer.stack(rest + [name]), without)]}
    for row in rows.values():
        row |= {"run": str(run), "baseline_macro_f1": _summary(base)["macro_f1"]["mean"]}
    union = run / UNION_FILE
    assembled = {"assembled_from": read_json(union)} if union.is_file() else {}
    return {"run": str(run), "kept": list(kept), "baseline": _summary(base), "rows": rows, "created": now_iso()} | assembled


def _in_place(scorer: Scorer, run: Path, kept: list[str], member: str, name: str,
              base: list[dict[str, Any]], base_jaccard: list[dict[str, Any]]) -> dict[str, Any]:
    """Gains of the kept stack with ``name`` instead of ``member``, and ``member``'s fit minutes (what the swap saves)."""
    swapped = [k for k in kept if k != member] + [name]
    macro = _gains(scorer.stack(swapped), base)
    jaccard = _gains(scorer.stack(swapped, objective="jaccard", decision="expected_jaccard"), base_jaccard, "jaccard")
    return {"member": member, "macro_f1_gains": [round(g, 4) for g in macro], "jaccard_gains": [round(g, 4) for g in jaccard],
            "member_fit_minutes": _fit_minutes(run, member)}


def _fit_minutes(run: Path, member: str) -> float | None:
    """A member's 5-fold fit minutes as its run recorded them, or None. A head on a fine-tuned member's embeddings
    (``finetuned:``) adds the pass that made its source's embedding tables: a cold fit pays it, the head's own fit
    does not (None when the source did not record it)."""
    from embedensemble.fileio import read_json
    from embedensemble.members.finetuned_head import TABLE_META

    info = read_json(run / "members" / member / "member.json")
    seconds = info.get("fit_seconds")
    features = (info.get("config") or {}).get("features") or ""
    source = features.removeprefix("finetuned:") if features.startswith("finetuned:") else None
    if seconds and source:
        tables = run / "members" / source / TABLE_META
        table_seconds = read_json(tables).get("seconds") if tables.is_file() else None
        seconds = seconds + table_seconds if table_seconds else None
    return round(seconds / 60, 1) if seconds else None


# Params that change what a fine-tune trains (its depth, adapter or head), not how: a difference in one of them
# weighs two, so a candidate that only changes training options pairs with the member of its own depth and head.
SHAPE_PARAMS = frozenset({"train_top_layers", "adapter", "head"})


def variant_of(configs: dict[str, dict[str, Any]], kept: list[str], name: str) -> str | None:
    """The kept member that ``name`` varies: the same kind, backbone, features and head, and the fewest differing
    ``params`` and ``head_params``, a :data:`SHAPE_PARAMS` difference counting two (ties: the first kept); None when
    no kept member shares them."""
    def differences(member: str) -> int | None:
        ours, theirs = configs[name], configs[member]
        if any(ours.get(key) != theirs.get(key) for key in ("kind", "backbone", "features", "head")):
            return None
        return sum(_count_differing(ours.get(key) or {}, theirs.get(key) or {}) for key in ("params", "head_params"))

    counted = [(n, i, member) for i, member in enumerate(kept) if member in configs and (n := differences(member)) is not None]
    return min(counted)[2] if counted else None


def _count_differing(ours: dict[str, Any], theirs: dict[str, Any]) -> int:
    return sum(1 + (key in SHAPE_PARAMS) for key in set(ours) | set(theirs) if ours.get(key) != theirs.get(key))


def refit_twin(configs: dict[str, dict[str, Any]], kept: list[str], name: str) -> str | None:
    """The kept member whose config ``name``'s equals but for the name and ``params.seed`` (a refit), or None."""
    def core(member: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in member.items() if k != "name"} | {"params": {k: v for k, v in (member.get("params") or {}).items() if k != "seed"}}

    return next((k for k in kept if k in configs and core(configs[k]) == core(configs[name])), None)


def apply_time_budget(found: dict[str, Any], cold_minutes: float | None, budget: float = TARGETS["cold_minutes"],
                      cold_member_seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """Each candidate joins only if it passes the gain rule and the config stays within the cold-time budget with it:
    the kept config's measured cold minutes plus the candidate's own 5-fold fit minutes. Unknown times do not block
    (the row says so). Rows from before ``gain_rule`` was recorded hold it as ``joins``. A candidate scored in a kept
    member's place (``in_place_of``) gets the same verdict for the swap, whose cold time drops that member's fit:
    as the cold run timed it (``cold_member_seconds``), else as the candidates run did."""
    for row in found["rows"].values():
        row["gain_rule"] = row.get("gain_rule", row.get("joins", False))
        fit = row.get("fit_minutes")
        row["cold_minutes_with"] = round(cold_minutes + fit, 1) if cold_minutes and fit else None
        row["joins"] = row["gain_rule"] and (row["cold_minutes_with"] is None or row["cold_minutes_with"] <= budget)
        swap = row.get("in_place_of")
        if swap:  # in the member's place the config saves that member's fit minutes
            in_cold_run = (cold_member_seconds or {}).get(swap["member"])
            saved = round(in_cold_run / 60, 1) if in_cold_run else swap.get("member_fit_minutes")
            swap["gain_rule"] = _passes(swap["macro_f1_gains"])
            swap["cold_minutes_with"] = round(cold_minutes - saved + fit, 1) if cold_minutes and fit and saved else None
            swap["joins"] = swap["gain_rule"] and (swap["cold_minutes_with"] is None or swap["cold_minutes_with"] <= budget)
    return found | {"time_budget_minutes": budget}


def _candidates_kept(result: dict[str, Any]) -> list[str]:
    """The kept members a result's candidates were scored against (older results did not record them)."""
    return result["candidates"].get("kept", result["selection"]["kept"])


def merge_candidates(earlier: dict[str, Any] | None, found: dict[str, Any]) -> dict[str, Any]:
    """``found`` plus the rows of ``earlier`` it did not re-measure, when both were scored against the same kept
    members (candidates are fitted in batches; a row keeps the run and the baseline it was measured against)."""
    if not earlier or sorted(earlier.get("kept", found["kept"])) != sorted(found["kept"]):
        return found
    base = earlier["baseline"]["macro_f1"]["mean"]
    kept_rows = {name: {"run": earlier["run"], "baseline_macro_f1": base} | row
                 for name, row in earlier["rows"].items() if name not in found["rows"]}
    return found | {"rows": kept_rows | found["rows"]}
