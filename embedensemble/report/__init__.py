"""Run report: figures + one self-contained ``report.html`` in ``<run>/report/``.

``build_report(run_dir)`` reads only what ``fit``/``stack`` wrote to the run folder. Every
part is optional: a run stopped before stacking still gets a report of what exists, with a
note in place of each figure that could not be drawn and a list of unreadable files.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .._logging import get_logger
from ..errors import ArtifactError, RunNotFoundError
from ..fileio import PathLike, atomic_write_bytes, atomic_write_text, load_array, read_json
from ..labels import EMOTIONS, N_LABELS
from ..run_folder import RunFolder
from . import html as H

__all__ = ["RunData", "build_report", "load_run_data"]

logger = get_logger(__name__)
METRIC_KEYS = ("macro_f1", "micro_f1", "jaccard", "subset_accuracy", "n")
STACK = "stack"  # the stacker's row name in tables and plots


@dataclass
class RunData:
    """Everything the report reads from a run folder; absent pieces are ``None``/empty."""

    path: Path
    config: dict[str, Any] | None = None
    run_info: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None
    train_labels: np.ndarray | None = None
    stack_oof: np.ndarray | None = None
    member_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    member_oof: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _json(data: RunData, path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except ArtifactError as exc:
        data.warnings.append(str(exc))
        return None


def _array(data: RunData, path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        arr = np.asarray(load_array(path), dtype=np.float64)
    except (ArtifactError, OSError) as exc:
        data.warnings.append(f"{path}: {exc}")
        return None
    if arr.ndim != 2 or arr.shape[1] != N_LABELS:
        data.warnings.append(f"{path} has shape {list(arr.shape)}, expected [n, {N_LABELS}]; ignored")
        return None
    return arr


def _member_names(data: RunData) -> list[str]:
    """Members in config order, then any extra folders under members/ (sorted)."""
    names = [m.get("name") for m in (data.config or {}).get("members", []) if isinstance(m, dict)]
    names = [n for n in names if isinstance(n, str)]
    return names + [n for n in RunFolder(data.path).member_folder_names() if n not in names]


def load_run_data(run_dir: PathLike) -> RunData:
    """Read a run folder; raises :class:`RunNotFoundError` only when the folder is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunNotFoundError(f"run folder {path} does not exist" if not path.exists() else f"{path} is not a folder")
    data = RunData(path=path)
    run = RunFolder(path)
    data.config = _json(data, run.config_file)
    data.run_info = _json(data, run.run_file)
    data.metrics = _json(data, run.metrics_file)
    data.thresholds = _json(data, run.thresholds_file)
    data.train_labels = _array(data, run.train_labels_file)
    data.stack_oof = _array(data, run.stack_file("oof"))
    for name in _member_names(data):
        info = _json(data, run.member_file(name))
        if info is not None:
            data.member_info[name] = info
        oof = _array(data, run.member_array_file(name, "oof"))
        if oof is not None:
            data.member_oof[name] = oof
    n = None if data.train_labels is None else data.train_labels.shape[0]
    for label, arr in [("stack_oof.npy", data.stack_oof)] + [(f"members/{k}/oof.npy", v) for k, v in data.member_oof.items()]:
        if n is not None and arr is not None and arr.shape[0] != n:
            data.warnings.append(f"{label} has {arr.shape[0]} rows but train_labels.npy has {n}")
    return data


def _model_scores(data: RunData) -> dict[str, dict[str, dict[str, Any]]]:
    """{model: {split: evaluate-dict}} from metrics.json, members first then "stack"."""
    m = data.metrics or {}
    out = {name: dict(v) for name, v in (m.get("members") or {}).items() if isinstance(v, dict)}
    if isinstance(m.get("stack"), dict):
        out[STACK] = dict(m["stack"])
    return out


def _thresholds(data: RunData) -> dict[str, float]:
    raw = (data.thresholds or {}).get("thresholds") or {}
    return {e: float(raw[e]) for e in EMOTIONS if isinstance(raw.get(e), (int, float))}


def _fig_f1_bars(data: RunData, plots: ModuleType) -> Any:
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for model, splits in _model_scores(data).items():
        for split in ("oof", "eval"):
            per = (splits.get(split) or {}).get("per_emotion_f1")
            if isinstance(per, dict):
                scores.setdefault(split, {})[model] = per
    return plots.per_emotion_f1_bars(scores) if scores else "metrics.json is missing or has no per-emotion F1"


def _fig_threshold_curves(data: RunData, plots: ModuleType) -> Any:
    if data.stack_oof is None or data.train_labels is None:
        return "needs stack_oof.npy and train_labels.npy"
    if data.stack_oof.shape != data.train_labels.shape:
        return "stack_oof.npy and train_labels.npy differ in shape"
    return plots.threshold_curves(data.train_labels, data.stack_oof, _thresholds(data))


def _fig_member_corr(data: RunData, plots: ModuleType) -> Any:
    oofs = data.member_oof
    if len(oofs) < 2:
        return "needs the OOF probabilities of at least two members"
    if len({a.shape for a in oofs.values()}) != 1:
        return "members' OOF arrays differ in shape"
    return plots.member_correlation(oofs)


def _fig_cooccurrence(data: RunData, plots: ModuleType) -> Any:
    return "needs train_labels.npy" if data.train_labels is None else plots.label_cooccurrence(data.train_labels)


_FIGURES = [
    ("per_emotion_f1", "Per-emotion F1: members vs stack", "Members at their own thresholds as stored in "
     "metrics.json; the stack (red) at the tuned thresholds.", _fig_f1_bars),
    ("threshold_curves", "F1 vs threshold (stack OOF)", "F1 of each emotion on the stacker's out-of-fold "
     "probabilities as the threshold moves; red marks the chosen threshold.", _fig_threshold_curves),
    ("member_correlation", "Member correlation", "Pearson correlation of members' flattened OOF "
     "probabilities over rows all members predicted.", _fig_member_corr),
    ("label_cooccurrence", "Label co-occurrence (train)", "Tweets carrying both emotions; diagonal = "
     "tweets carrying that emotion.", _fig_cooccurrence),
]


def _metrics_section(data: RunData) -> str:
    scores = _model_scores(data)
    if not scores:
        return '<p class="note">No metrics.json (or it is empty): the run has not been stacked yet.</p>'
    parts = []
    for split, label in (("oof", "Out-of-fold (train), thresholds tuned on the other folds"), ("eval", "Evaluation split")):
        rows, classes = [], []
        for model, splits in scores.items():
            ev = splits.get(split)
            if isinstance(ev, dict):
                rows.append([model] + [ev.get(k) for k in METRIC_KEYS])
                classes.append("stack" if model == STACK else "")
        per = [[r[0]] + [scores[r[0]][split].get("per_emotion_f1", {}).get(e) for e in EMOTIONS] for r in rows]
        # the core also scores members at a flat 0.5 threshold: shows what threshold tuning buys
        for model, splits in scores.items():
            ev = splits.get(f"{split}_at_0.5")
            if isinstance(ev, dict):
                rows.append([f"{model} @0.5"] + [ev.get(k) for k in METRIC_KEYS])
                classes.append("")
        if rows:
            parts.append(f"<h3>{label}</h3>" + H.table(["model", *METRIC_KEYS], rows, row_classes=classes,
                                                        best_cols=(1, 2, 3, 4)))
            parts.append(H.table(["F1", *EMOTIONS], per, row_classes=classes[:len(per)],
                                 best_cols=range(1, N_LABELS + 1)))
    m = data.metrics or {}
    extra = {k: m[k] for k in ("objective", "stacker_rows", "holdout_only", "members_stacked") if k in m}
    return "".join(parts) + (H.key_values(extra) if extra else "")


def _config_section(data: RunData) -> str:
    cfg = data.config or {}
    parts = []
    if data.run_info:
        info = {k: v for k, v in data.run_info.items() if k != "versions"}
        parts.append("<h3>Run</h3>" + H.key_values(info))
    rows = []
    for name in _member_names(data):
        mc = next((m for m in cfg.get("members", []) if isinstance(m, dict) and m.get("name") == name), None)
        mi = data.member_info.get(name, {})
        mc = mc or mi.get("config") or {}
        rows.append([name, mc.get("kind"), mc.get("features") or mc.get("backbone"), mc.get("head"),
                     mi.get("cv_mode"), mi.get("status"), mi.get("fit_seconds")])
    if rows:
        parts.append("<h3>Members</h3>" + H.table(["member", "kind", "features / backbone", "head", "cv",
                                                   "status", "fit s"], rows, left=6))
    summary = {k: cfg[k] for k in ("name", "seed", "cv", "stack") if k in cfg}
    if summary:
        parts.append("<h3>Settings</h3>" + H.key_values(summary))
    if cfg:
        parts.append(f"<details><summary>config.json</summary><pre>{H.esc(json.dumps(cfg, indent=2))}</pre></details>")
    versions = (data.run_info or {}).get("versions")
    if isinstance(versions, dict) and versions:
        parts.append("<h3>Versions</h3>" + H.key_values(versions))
    return "".join(parts) or '<p class="note">No config.json or run.json in this run.</p>'


def _thresholds_section(data: RunData) -> str:
    thr = _thresholds(data)
    if not thr:
        return '<p class="note">No thresholds.json.</p>'
    stack = _model_scores(data).get(STACK, {})
    pos = None if data.train_labels is None else data.train_labels.sum(axis=0)
    rows = [[e, thr.get(e), None if pos is None else int(pos[k]),
             (stack.get("oof") or {}).get("per_emotion_f1", {}).get(e),
             (stack.get("eval") or {}).get("per_emotion_f1", {}).get(e)] for k, e in enumerate(EMOTIONS)]
    objective = (data.thresholds or {}).get("objective")
    return (f"<p>Objective: <b>{H.esc(objective)}</b></p>" +
            H.table(["emotion", "threshold", "train positives", "stack F1 (OOF)", "stack F1 (eval)"], rows))


def build_report(run_dir: PathLike) -> Path:
    """Write ``<run>/report/`` (PNG figures + self-contained ``report.html``); return the HTML path."""
    data = load_run_data(run_dir)
    # matplotlib (and sklearn via metrics) load only now, so `import embedensemble.report` and a
    # mistyped --run stay fast
    from . import plots

    out = RunFolder(data.path).report_dir
    out.mkdir(exist_ok=True)
    sections = []
    for key, title, caption, make in _FIGURES:
        section = H.FigureSection(key, title, caption)
        result = make(data, plots)
        png_path = out / f"{key}.png"
        if isinstance(result, str):
            section.note = result
            png_path.unlink(missing_ok=True)  # a stale figure from an earlier build would contradict the HTML
        else:
            section.png = plots.to_png(result)
            atomic_write_bytes(png_path, section.png)
        sections.append(section)
    name = (data.config or {}).get("name") or data.path.name
    info = data.run_info or {}
    subtitle = " · ".join(str(x) for x in [data.path, info.get("data_kind"), info.get("created"),
                                           f"report built {_dt.datetime.now().isoformat(timespec='seconds')}"] if x)
    document = H.page(f"embedensemble run: {name}", subtitle, [
        ("Metrics", _metrics_section(data)),
        ("Figures", "".join(H.figure(s) for s in sections)),
        ("Thresholds", _thresholds_section(data)),
        ("Configuration", _config_section(data)),
    ], data.warnings)
    path = atomic_write_text(out / "report.html", document)
    for warning in data.warnings:
        logger.warning("report for %s: %s", data.path, warning)
    logger.info("wrote report %s", path)
    return path
