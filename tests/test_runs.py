"""Run registry (embedensemble.runs) and optional tracking (embedensemble.tracking)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from embedensemble.errors import ConfigError, RunNotFoundError
from embedensemble.runs import COLUMNS, list_runs, main
from embedensemble.tracking import TrackingUnavailableError, log_run

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


# ---- tracking ---------------------------------------------------------------------------


class _FakeWandbRun:
    def __init__(self, calls: dict[str, Any]) -> None:
        self.id, self.summary, self._calls = "wb123", {}, calls

    def finish(self) -> None:
        self._calls["finished"] = True
        self._calls["summary"] = dict(self.summary)


def _fake_wandb(calls: dict[str, Any]) -> types.ModuleType:
    module = types.ModuleType("wandb")

    def init(**kwargs: Any) -> _FakeWandbRun:
        calls["init"] = kwargs
        return _FakeWandbRun(calls)

    module.init = init  # type: ignore[attr-defined]
    return module


def _fake_mlflow(calls: dict[str, Any]) -> types.ModuleType:
    module = types.ModuleType("mlflow")

    class Run:
        info = types.SimpleNamespace(run_id="ml456")

        def __enter__(self) -> Run:
            return self

        def __exit__(self, *exc: object) -> None:
            calls["ended"] = True

    module.set_experiment = lambda name: calls.__setitem__("experiment", name)  # type: ignore[attr-defined]
    module.start_run = lambda run_name: (calls.__setitem__("run_name", run_name), Run())[1]  # type: ignore[attr-defined]
    module.log_params = lambda p: calls.__setitem__("params", p)  # type: ignore[attr-defined]
    module.log_metrics = lambda m: calls.__setitem__("metrics", m)  # type: ignore[attr-defined]
    return module


def test_log_run_wandb(artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(calls))
    assert log_run(artifacts / "run_eval", "wandb", project="p") == "wb123"
    assert calls["init"]["project"] == "p" and calls["init"]["name"] == "run_eval"
    assert calls["init"]["config"]["config/stack/objective"] == "macro_f1"
    assert calls["init"]["config"]["run/data_kind"] == "semeval"
    summary = calls["summary"]
    assert 0 < summary["stack/eval/macro_f1"] <= 1 and "members/a/oof/per_emotion_f1/joy" in summary
    assert "thresholds/joy" in summary and calls["finished"]


def test_log_run_mlflow(artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "mlflow", _fake_mlflow(calls))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "exp")
    assert log_run(artifacts / "run_oof", "mlflow") == "ml456"
    assert calls["experiment"] == "exp" and calls["run_name"] == "run_oof" and calls["ended"]
    assert all(isinstance(v, str) and len(v) <= 500 for v in calls["params"].values())
    assert all(isinstance(v, float) for v in calls["metrics"].values())
    assert "stack/oof/jaccard" in calls["metrics"] and "holdout_only" not in calls["metrics"]


def test_log_run_missing_backend_and_errors(artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(TrackingUnavailableError, match="pip install wandb"):
        log_run(artifacts / "run_eval", "wandb")
    assert log_run(artifacts / "run_eval", None) is None
    with pytest.raises(ConfigError, match="not one of"):
        log_run(artifacts / "run_eval", "tensorboard")
    with pytest.raises(RunNotFoundError, match="no metrics.json"):
        log_run(artifacts / "unstacked", "wandb")


def test_tracking_not_imported_by_package() -> None:
    import subprocess

    code = "import embedensemble, sys; print('embedensemble.tracking' in sys.modules, 'wandb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"], out.stderr[-1000:]
