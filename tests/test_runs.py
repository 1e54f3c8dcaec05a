"""Run registry (embedensemble.runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedensemble.errors import RunNotFoundError
from embedensemble.runs import COLUMNS, list_runs, main

try:
    from fake_run import make_fake_run
except ImportError:  # tests/ turned into a package
    from tests.fake_run import make_fake_run


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    make_fake_run(root / "run_eval", members=("a", "b", "c"), seed=1)
    make_fake_run(root / "run_oof", members=("x",), with_eval=False, seed=2, n_train=120)
    unstacked = make_fake_run(root / "unstacked", seed=3)
    (unstacked / "metrics.json").unlink()
    broken = make_fake_run(root / "broken", seed=4)
    (broken / "metrics.json").write_text("{not json", encoding="utf-8")
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("x", encoding="utf-8")
    (root / ".cache").mkdir()
    (root / "README.md").write_text("artifacts", encoding="utf-8")
    return root


def test_list_runs_rows_order_and_status(artifacts: Path) -> None:
    frame = list_runs(artifacts)
    assert list(frame.columns) == COLUMNS
    assert set(frame["name"]) == {"run_eval", "run_oof", "unstacked", "broken", "notes"}
    done = frame[frame["status"] == "done"]
    assert list(done.index) == [0, 1]  # finished runs first
    assert list(done["macro_f1"]) == sorted(done["macro_f1"], reverse=True)
    by_name = frame.set_index("name")
    assert by_name.loc["run_eval", "split"] == "eval" and by_name.loc["run_oof", "split"] == "oof"
    metrics = json.loads((artifacts / "run_eval" / "metrics.json").read_text())
    assert by_name.loc["run_eval", "jaccard"] == pytest.approx(metrics["stack"]["eval"]["jaccard"])
    assert by_name.loc["run_eval", "members"] == "a,b,c"
    assert by_name.loc["run_eval", "data_kind"] == "semeval"
    assert by_name.loc["run_eval", "created"] == "2025-01-01 01:00"
    for name, note in [("unstacked", "not stacked"), ("broken", "not valid JSON"), ("notes", "not a run folder")]:
        assert by_name.loc[name, "status"] == "incomplete"
        assert note in by_name.loc[name, "note"]


def test_list_runs_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match="does not exist"):
        list_runs(tmp_path / "nope")
    assert list_runs(tmp_path).empty


def test_cli_table_and_json(artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--artifacts", str(artifacts)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "created", "data_kind"]
    assert len(lines) == 6 and lines[1].split()[0] in {"run_eval", "run_oof"}
    assert main(["--artifacts", str(artifacts), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in records][:2] == ["done", "done"]
    assert records[-1]["macro_f1"] is None  # NaN -> null


def test_cli_missing_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--artifacts", str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_run_stacked_before_nested_scores_ranks_after_honest_ones(tmp_path: Path) -> None:
    """A metrics.json whose only OOF score had its thresholds tuned on the same rows is not ranked as honest."""
    honest = make_fake_run(tmp_path / "honest", with_eval=False, seed=5)
    old = make_fake_run(tmp_path / "old", with_eval=False, seed=6)
    metrics = json.loads((old / "metrics.json").read_text())
    metrics["stack"] = {"oof": {**metrics["stack"]["oof"], "macro_f1": 0.99}}  # the old format, higher than it should be
    (old / "metrics.json").write_text(json.dumps(metrics))
    frame = list_runs(tmp_path).set_index("name")
    assert list(frame.index) == ["honest", "old"]
    assert frame.loc["honest", "split"] == "oof" and frame.loc["old", "split"] == "oof_tuned_on_same_rows"
    assert "same rows" in frame.loc["old", "note"]
    assert honest.is_dir()
