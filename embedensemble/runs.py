"""Run registry: one row per folder under ``artifacts/``, best stack macro-F1 first.

``python -m embedensemble.runs [--artifacts DIR] [--json]`` prints the table. Scores are the
stack's on the evaluation split when the run has one, else its out-of-fold scores with
thresholds tuned on the other folds (nested, see ``embedensemble.stacking.SCORE_KEYS``); the
``split`` column says which. A run stacked before nested scores existed has only OOF scores
whose thresholds were tuned on the same rows (split ``oof_tuned_on_same_rows``): it is listed
after the runs with honest scores. Anything that is not a finished run is still listed, as
``incomplete`` with a ``note``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ArtifactError, RunNotFoundError
from .fileio import PathLike, read_json
from .run_folder import RunFolder

COLUMNS = ["name", "created", "data_kind", "members", "split", "macro_f1", "micro_f1", "jaccard", "status", "note", "path"]
SCORES = ("macro_f1", "micro_f1", "jaccard")
SAME_ROWS = "oof_tuned_on_same_rows"  # split of a run stacked before nested OOF scores: not an honest estimate


def _read(path: Path, notes: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (ArtifactError, OSError) as exc:
        notes.append(str(exc).replace(str(path.parent) + "/", ""))
        return None
    if not isinstance(data, dict):
        notes.append(f"{path.name} is not a JSON object")
        return None
    return data


def _created(run_info: dict[str, Any] | None, folder: Path) -> str:
    """``YYYY-MM-DD HH:MM`` from run.json, else the folder's modification time."""
    raw = (run_info or {}).get("created")
    try:
        when = _dt.datetime.fromisoformat(str(raw)) if raw else None
    except ValueError:
        when = None
    if when is None:
        when = _dt.datetime.fromtimestamp(folder.stat().st_mtime, tz=_dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M")


def _members(config: dict[str, Any] | None, metrics: dict[str, Any] | None, run: RunFolder) -> list[str]:
    stacked = (metrics or {}).get("members_stacked")
    if isinstance(stacked, list):
        return [str(n) for n in stacked]
    names = [m.get("name") for m in (config or {}).get("members", []) if isinstance(m, dict)]
    if names:
        return [str(n) for n in names]
    return run.member_folder_names()


def summarize_run(folder: PathLike) -> dict[str, Any]:
    """One registry row for ``folder``; never raises for a damaged or foreign folder."""
    folder = Path(folder)
    run = RunFolder(folder)
    notes: list[str] = []
    config = _read(run.config_file, notes)
    run_info = _read(run.run_file, notes)
    metrics = _read(run.metrics_file, notes)
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(name=folder.name, path=str(folder), status="incomplete", created=_created(run_info, folder))
    if config is None and run_info is None and not notes:
        row["note"] = "not a run folder (no config.json or run.json)"
        return row
    row["data_kind"] = (run_info or {}).get("data_kind")
    row["members"] = ",".join(_members(config, metrics, run))
    stack = (metrics or {}).get("stack")
    if isinstance(stack, dict):
        split = "eval" if isinstance(stack.get("eval"), dict) else "oof"
        scores = stack.get(split)
        if split == "oof" and "oof_thresholds_tuned_on_same_rows" not in stack:
            split = SAME_ROWS  # stacked by an older version: its "oof" thresholds were tuned on the rows scored
            notes.append("OOF score with thresholds tuned on the same rows; stack the run again for the nested score")
        if isinstance(scores, dict) and all(isinstance(scores.get(k), (int, float)) for k in SCORES):
            row.update(split=split, status="done", **{k: float(scores[k]) for k in SCORES})
    if row["status"] != "done" and not notes:
        notes.append("no metrics.json (not stacked yet)" if metrics is None else "metrics.json has no stack scores")
    row["note"] = "; ".join(notes) or None
    return row


def list_runs(artifacts_dir: PathLike = "artifacts") -> pd.DataFrame:
    """Every sub-folder of ``artifacts_dir`` as a row (see ``COLUMNS``), best ``macro_f1`` first.

    Hidden folders and plain files are skipped. Raises :class:`RunNotFoundError` when
    ``artifacts_dir`` does not exist.
    """
    root = Path(artifacts_dir)
    if not root.is_dir():
        raise RunNotFoundError(f"artifacts folder {root} does not exist")
    rows = [summarize_run(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    # honest scores (eval, nested OOF) first: a same-rows OOF score runs higher than it should
    optimistic = frame["split"] == SAME_ROWS
    frame = frame.assign(_optimistic=optimistic)
    frame = frame.sort_values(["_optimistic", "macro_f1", "name"], ascending=[True, False, True], na_position="last", kind="stable")
    return frame.drop(columns="_optimistic").reset_index(drop=True)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts; NaN scores become null."""
    out = []
    for record in frame.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})
    return out


def format_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "no runs"
    shown = frame.drop(columns=["path"]).copy()
    for col in SCORES:
        shown[col] = shown[col].map(lambda v: "-" if pd.isna(v) else f"{v:.4f}")
    return shown.fillna("").to_string(index=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedensemble.runs",
                                     description="List runs under an artifacts folder, best stack macro-F1 first.")
    parser.add_argument("--artifacts", default="artifacts", metavar="DIR",
                        help="folder holding run folders (default: ./artifacts)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    args = parser.parse_args(argv)
    try:
        frame = list_runs(args.artifacts)
    except RunNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(_records(frame), indent=2) if args.json else format_table(frame))
    except BrokenPipeError:
        # piped into `head` and closed early: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
