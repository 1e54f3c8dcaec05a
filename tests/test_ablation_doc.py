"""docs/ablation.md is what benchmarks/results/ablation.json renders, and the ablation's verdicts follow its 2-sd rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.ablation import METRICS, render, summarise

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "ablation.json"


def test_doc_equals_what_the_json_renders() -> None:
    assert (ROOT / "docs" / "ablation.md").read_text(encoding="utf-8") == render(json.loads(RESULT.read_text(encoding="utf-8")))


def _section(gains: dict[str, list[float]]) -> dict:
    runs = []
    for i in range(3):
        scores = {}
        for key, per_run in gains.items():
            scores[key] = [{m: 0.5 + per_run[i] for m in METRICS}]
        runs.append({"scores": scores})
    return {"per_run": runs}


def test_verdicts_follow_the_two_sd_rule() -> None:
    section = _section({"default": [0, 0, 0], "steady": [0.004, 0.005, 0.006], "noisy": [0.01, -0.004, 0.0], "bad": [-0.01, -0.011, -0.009]})
    summary = summarise(section, lambda key: "default")
    assert summary["default"]["verdict"] == "baseline"
    assert summary["steady"]["verdict"] == "kept" and summary["steady"]["macro_f1"]["gain"] == pytest.approx(0.005)
    assert summary["noisy"]["verdict"] == "noise"
    assert summary["bad"]["verdict"] == "worse"
