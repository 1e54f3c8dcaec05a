"""Comparisons and README rendering of a GPU check report (``benchmarks/results/gpu_check_<card>.json``).

Every ratio is computed here from the two stored measurements (library / reference) of one run;
a side that was not measured renders as "not measured", never as a number.
"""

from __future__ import annotations

from typing import Any

FORMAT = 2
NOT_MEASURED = "not measured"
TARGET_EMBED = 1.5  # frozen bf16 embedding, library / reference tweets/s
TARGET_TRAIN = 2.0  # QLoRA training at the reference's batch size
PEAK_LIMIT_GIB = 80e9 / 2**30  # "80 GB" = 74.5 GiB
# bf16 tolerance, fixed before any GPU run: packed vs padded vectors, and loss curves.
MIN_COSINE = 0.99
MAX_LOSS_REL_DIFF = 0.02


def _rate(side: dict[str, Any] | None) -> float | None:
    value = (side or {}).get("tweets_per_s")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def ratio(library: dict[str, Any] | None, reference: dict[str, Any] | None) -> float | None:
    lib, ref = _rate(library), _rate(reference)
    return None if lib is None or ref is None else lib / ref


def reference_part(report: dict[str, Any], key: str) -> dict[str, Any] | None:
    """``embed_bf16`` / ``qlora_train`` of the reference side, or None when that side is missing."""
    ref = report.get("reference") or {}
    part = ref.get(key)
    return part if isinstance(part, dict) else None


def fits(row: dict[str, Any]) -> bool | None:
    peak = row.get("peak_GiB")
    return None if peak is None else peak <= PEAK_LIMIT_GIB


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per target of issue 12: ``what``, ``value`` (text), ``met`` (True/False/None = not measured)."""
    lib = report.get("library", {})
    embed, train = lib.get("embed", {}), lib.get("train", {})
    ref_embed, ref_train = reference_part(report, "embed_bf16"), reference_part(report, "qlora_train")
    out = []
    best_embed = max(embed, key=lambda k: embed[k]["tweets_per_s"], default=None)
    r = ratio(embed.get(best_embed), ref_embed) if best_embed else None
    out.append({"what": f"frozen bf16 embedding ≥ {TARGET_EMBED}× reference", "setting": best_embed,
                "value": NOT_MEASURED if r is None else f"{r:.2f}×", "met": None if r is None else r >= TARGET_EMBED})
    ref_batch = (ref_train or {}).get("batch")
    same = {k: v for k, v in train.items() if v.get("batch") == ref_batch and fits(v) is not False}
    best_same = max(same, key=lambda k: same[k]["tweets_per_s"], default=None)
    r = ratio(same.get(best_same), ref_train) if best_same else None
    memory = fits(same[best_same]) if best_same else None
    met = None if r is None or memory is None else (r >= TARGET_TRAIN and memory)
    out.append({"what": f"QLoRA training at the reference's batch{f' ({ref_batch})' if ref_batch else ''} ≥ {TARGET_TRAIN}× reference, "
                        f"peak ≤ 80 GB", "setting": best_same, "value": NOT_MEASURED if r is None else f"{r:.2f}×", "met": met})
    fitting = {k: v for k, v in train.items() if fits(v) is not False}
    best = max(fitting, key=lambda k: fitting[k]["tweets_per_s"], default=None)
    r = ratio(fitting.get(best), ref_train) if best else None
    out.append({"what": "best QLoRA batch/checkpointing setting (peak ≤ 80 GB)", "setting": best,
                "value": NOT_MEASURED if r is None else f"{r:.2f}×", "met": None})
    eq = lib.get("embed_equivalence", {})
    cosines = [v["min_cosine"] for v in eq.values()]
    out.append({"what": f"same embeddings as the padded path (min cosine ≥ {MIN_COSINE})", "setting": ", ".join(eq) or None,
                "value": f"{min(cosines):.4f}" if cosines else NOT_MEASURED, "met": (min(cosines) >= MIN_COSINE) if cosines else None})
    teq = lib.get("train_equivalence", {})
    rel = [v["max_rel_diff"] for v in teq.values()]
    out.append({"what": f"same loss curve as the padded path (max relative difference ≤ {MAX_LOSS_REL_DIFF})",
                "setting": ", ".join(teq) or None, "value": f"{max(rel):.4f}" if rel else NOT_MEASURED,
                "met": (max(rel) <= MAX_LOSS_REL_DIFF) if rel else None})
    return out


def _n(value: Any, digits: int = 0) -> str:
    return NOT_MEASURED if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows), ""]


def render(report: dict[str, Any]) -> list[str]:
    """Markdown lines for one report (format 2); older reports get :func:`render_legacy`."""
    if report.get("format") != FORMAT:
        return render_legacy(report)
    v, lib = report.get("versions", {}), report.get("library", {})
    ref = report.get("reference") or {}
    lines = [f"**{report.get('device', '?')}**, {report.get('date', '?')}, {report.get('layers')} layers measured directly; "
             + ", ".join(f"{k} {v[k]}" for k in sorted(v)) + f"; {report.get('workload', {}).get('lengths', '')}.", ""]
    if "missing" in ref or not ref:
        lines += [f"Reference side: {NOT_MEASURED} ({ref.get('missing', 'absent from the report')}).", ""]
    ref_embed, ref_train = reference_part(report, "embed_bf16"), reference_part(report, "qlora_train")
    rows = []
    embed_order = {"padded": 0, "packed": 1, "packed_compiled": 2}
    for name, row in sorted(lib.get("embed", {}).items(), key=lambda item: (embed_order.get(item[0], 9), item[0])):
        what = f"frozen bf16 embedding, {'packed' if row['packing'] else 'padded'}{', compiled layers' if row.get('compiled') else ''}"
        rows.append([what, str(row["batch"]), _n(row["tweets_per_s"]), _n(_rate(ref_embed)),
                     _ratio_text(ratio(row, ref_embed)), _n(row.get("peak_GiB"), 1), "yes" if row.get("finite") else "**no**"])
    for name, row in sorted(lib.get("train", {}).items(), key=lambda item: (item[1]["batch"], item[1]["packing"], item[0])):
        what = f"QLoRA r{row['lora_r']} training, {'packed' if row['packing'] else 'padded'}{', checkpointing' if row['gradient_checkpointing'] else ''}"
        rows.append([what, str(row["batch"]), _n(row["tweets_per_s"]), _n(_rate(ref_train)),
                     _ratio_text(ratio(row, ref_train)), _n(row.get("peak_GiB"), 1), "yes" if row.get("finite") else "**no**"])
    for key, name in (("embed_bf16", "reference: frozen bf16 embedding"), ("qlora_train", "reference: QLoRA training")):
        part = reference_part(report, key)
        if part:
            extra = ", checkpointing" if part.get("gradient_checkpointing") else ""
            rows.append([f"*{name}{extra}*", str(part.get("batch")), "–", _n(_rate(part)), "1.00×", _n(part.get("peak_GiB"), 1),
                         "yes" if part.get("finite", True) else "**no**"])
    lines += _table(["run", "batch", "library tweets/s", "reference tweets/s", "library / reference", "peak GiB", "finite"], rows)
    dry_run = report.get("card", {}).get("kind") == "cpu"  # tiny shapes on a CPU: the code ran, the numbers mean nothing
    rows = [[t["what"], f"`{t['setting']}`" if t["setting"] else "–", t["value"],
             "CPU dry run" if dry_run else {True: "met", False: "**not met**", None: NOT_MEASURED if t["value"] == NOT_MEASURED else "–"}[t["met"]]]
            for t in targets(report)]
    lines += _table(["target (issue 12)", "setting", "measured", "status"], rows)
    return lines


def _ratio_text(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.2f}×"


def render_legacy(report: dict[str, Any]) -> list[str]:
    """Reports of the earlier shallow-depth check (2/4/8 layers, no reference in the same run)."""
    counts = report.get("shape", {}).get("measured_layers", [])
    deepest = str(max(counts)) if counts else None
    rows = []
    for run, per in sorted(report.get("per_layers", {}).items()):
        key = "embed" if run == "frozen" else "train"
        row = per.get(deepest, {}) if deepest else {}
        rows.append([run, _n(row.get(f"{key}_texts_per_second")), NOT_MEASURED])
    return [(f"**{report.get('device', '?')}**, {report.get('date', '?')}: earlier check at {'/'.join(map(str, counts))} layers "
             f"(not 32), no reference measured in the same run."), "",
            *_table(["run", f"library tweets/s at {deepest} layers", "library / reference"], rows)]
