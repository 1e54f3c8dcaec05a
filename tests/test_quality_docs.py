"""benchmarks.quality's selection rule, and docs/quality.md / docs/int8.md are what their results JSON renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import int8, quality

ROOT = Path(__file__).resolve().parents[1]


class FakeScorer:
    """Macro-F1 of a member set = sum of fixed member values, per meta seed (plus a per-seed wobble)."""

    def __init__(self, values: dict[str, float], wobble: tuple[float, ...] = (0.0, 0.001, -0.001)) -> None:
        self.values, self.wobble = values, wobble

    def stack(self, members: list[str], stacker: str = "logreg", objective: str = "macro_f1") -> list[dict[str, float]]:
        score = 0.5 + sum(self.values[m] for m in members)
        return [{"macro_f1": score + w, "micro_f1": score, "jaccard": score} for w in self.wobble]


def test_backward_elimination_drops_only_members_that_cost_more_than_the_rule_allows() -> None:
    scorer = FakeScorer({"strong": 0.05, "useful": 0.01, "harmful": -0.006, "useless": -0.001})
    kept, steps = quality.backward_elimination(scorer, ["strong", "useful", "harmful", "useless"])
    assert kept == ["strong", "useful", "useless"]  # dropping 'useless' gains 0.001 < 0.003: kept
    assert [s["dropped"] for s in steps] == ["harmful", None]


def test_a_gain_that_fails_in_one_meta_seed_does_not_pass() -> None:
    assert quality._passes([0.004, 0.004, 0.004])
    assert not quality._passes([0.009, 0.004, -0.0001])
    assert not quality._passes([0.002, 0.002, 0.002])


def test_additions_are_gains_of_each_member_added_alone_to_the_default_stack() -> None:
    scorer = FakeScorer({"a": 0.01, "b": 0.02, "fine-tune": 0.03, "noise": -0.002})
    scorer.names = ["a", "b", "fine-tune", "noise"]
    result = quality.additions(scorer, ["a", "b"])
    assert result["rows"]["fine-tune"]["gains"] == [0.03, 0.03, 0.03]
    assert result["rows"]["noise"]["gains"] == [-0.002] * 3
    assert result["rows"]["all additions"]["gains"] == [0.028] * 3
    assert set(result["rows"]) == {"fine-tune", "noise", "all additions"}
    table = "\n".join(quality._additions_table({"additions": result, "cost": {"member_fit_seconds": {"fine-tune": 90.0},
                                                                                "member_tweets_per_s": {"fine-tune": 12.5}}}))
    assert "| fine-tune | 0.5600 | +0.0300 ± 0.0000 | 1.5 | 12.5 |" in table


def test_fit_cost_reads_gnu_time_output(tmp_path) -> None:
    report = tmp_path / "time.txt"
    report.write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:12:30\n\tMaximum resident set size (kbytes): 4194304\n")
    assert quality._fit_cost(report) == {"cold_fit_minutes": 72.5, "peak_rss_gb": 4.0}


@pytest.mark.parametrize(("module", "doc", "result"), [(quality, "quality.md", "quality_config.json"), (int8, "int8.md", "int8.json")])
def test_doc_equals_what_the_json_renders(module, doc, result) -> None:
    path = ROOT / "benchmarks" / "results" / result
    if not path.is_file():
        pytest.fail(f"{path} is missing: run python -m benchmarks.{module.__name__.split('.')[-1]}")
    assert (ROOT / "docs" / doc).read_text(encoding="utf-8") == module.render(json.loads(path.read_text(encoding="utf-8")))
