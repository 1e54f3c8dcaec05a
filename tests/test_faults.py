"""Faults while writing a run (issue 10.8): each ends with the previous artifacts intact and a rerun that completes.

* two ``fit`` processes sharing one embedding cache folder at the same time (and two on one run folder);
* ``stack`` killed (SIGKILL) at several points while writing;
* a full disk (``OSError(ENOSPC)``) while ``fit`` or ``stack`` writes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embedensemble import EmotionEnsemble, EnsembleConfig
from embedensemble.data import load_dataset
from embedensemble.fileio import load_array, read_json
from embedensemble.fitting import fit_members
from embedensemble.run_folder import RunFolder
from embedensemble.stacking import stack_run

from .synthetic import write_kaggle

CONFIG = {
    "name": "faults",
    "members": [
        {"name": "words", "features": "tfidf", "head": "logreg"},
        {"name": "ridge", "features": "tfidf", "head": "ridge"},
    ],
    "cv": {"n_folds": 3},
}
# Files `stack` (re)writes; each must always be either its old or its new complete version.
STACK_FILES = ("metrics.json", "thresholds.json", "stack_oof.npy", "stack_test.npy", "submission.csv")


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "tests")]), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """A fitted and stacked run (both members) and the same run restacked with one member, as references."""
    root = tmp_path_factory.mktemp("faults")
    splits = load_dataset(write_kaggle(root / "data", n_train=120, n_test=20))
    run = fit_members(EnsembleConfig.from_dict(CONFIG), splits.train, root / "run", test=splits.test)
    stack_run(run, write_report=False)
    restacked = shutil.copytree(run, root / "restacked")
    stack_run(restacked, members=["words"], write_report=False)
    return {"run": run, "restacked": restacked, "splits": splits}


def _snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in STACK_FILES}


def _assert_old_or_new(run: Path, old: dict[str, bytes], new: dict[str, bytes], texts: list[str], predictions: list[np.ndarray]) -> None:
    for name in STACK_FILES:
        data = (run / name).read_bytes()
        assert data in (old[name], new[name]), f"{name} is neither the previous nor the new version"
    got = EmotionEnsemble.load(RunFolder(run).ensemble_dir).predict_proba(texts).to_numpy()
    assert any(np.array_equal(got, p) for p in predictions), "the saved ensemble is neither the previous nor the new one"


def test_stack_killed_while_writing_leaves_old_or_new_files_and_reruns(stacked, tmp_path):
    texts = stacked["splits"].test.texts
    old, new = _snapshot(stacked["run"]), _snapshot(stacked["restacked"])
    predictions = [EmotionEnsemble.load(Path(r) / "ensemble").predict_proba(texts).to_numpy() for r in (stacked["run"], stacked["restacked"])]
    run = shutil.copytree(stacked["run"], tmp_path / "run")
    # Each child stacks one member and is SIGKILLed just before its n-th os.replace (the commit of a
    # file, or one of the two renames that swap ensemble/ for the new one).
    child = textwrap.dedent(
        """
        import os, signal, sys
        n, calls, real = int(sys.argv[2]), [0], os.replace
        def replace(a, b):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(a, b)
        os.replace = replace
        from embedensemble.stack import main
        main(["--run", sys.argv[1], "--members", "words", "--no-report", "-q"])
        print("finished before the kill point")
        """
    )
    # Kill points: just before each rename that puts a file of the run (or ensemble/) in place.
    commits = _commit_points(shutil.copytree(stacked["run"], tmp_path / "dry"))
    assert len(commits) >= len(STACK_FILES) + 2  # the files and the two renames swapping ensemble/
    for n in commits:
        proc = subprocess.run([sys.executable, "-c", child, str(run), str(n)], check=False, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == -9, proc.stdout[-500:] + proc.stderr[-2000:]
        _assert_old_or_new(run, old, new, texts, predictions)
    stack_run(run, members=["words"], write_report=False)  # the rerun completes ...
    assert _snapshot(run) == new  # ... with what an uninterrupted stack writes
    np.testing.assert_array_equal(EmotionEnsemble.load(run / "ensemble").predict_proba(texts).to_numpy(), predictions[1])


def _commit_points(run: Path) -> list[int]:
    """Numbers of the os.replace calls of a stack of ``run`` that rename into the run folder itself."""
    real, calls, points = os.replace, [0], []

    def replace(a, b):
        calls[0] += 1
        if Path(b).parent == run:
            points.append(calls[0])
        return real(a, b)

    os.replace = replace
    try:
        stack_run(run, members=["words"], write_report=False)
    finally:
        os.replace = real
    return points


def _full_disk_after(monkeypatch, n_ok: int) -> None:
    """Every file written through embedensemble.fileio after the first ``n_ok`` fails with ENOSPC."""
    real, calls = os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("n_ok", [0, 2, 5])
def test_full_disk_during_stack_keeps_previous_artifacts(stacked, tmp_path, monkeypatch, n_ok):
    texts = stacked["splits"].test.texts
    old, new = _snapshot(stacked["run"]), _snapshot(stacked["restacked"])
    predictions = [EmotionEnsemble.load(Path(r) / "ensemble").predict_proba(texts).to_numpy() for r in (stacked["run"], stacked["restacked"])]
    run = shutil.copytree(stacked["run"], tmp_path / "run")
    with monkeypatch.context() as patch:
        _full_disk_after(patch, n_ok)
        with pytest.raises(OSError) as failure:
            stack_run(run, members=["words"], write_report=False)
    assert failure.value.errno == errno.ENOSPC
    _assert_old_or_new(run, old, new, texts, predictions)
    assert not list(run.glob(".*.tmp")), "a failed write left its temporary file"
    stack_run(run, members=["words"], write_report=False)
    assert _snapshot(run) == new


def test_full_disk_during_fit_then_rerun_completes(stacked, tmp_path, monkeypatch):
    splits = stacked["splits"]
    config = EnsembleConfig.from_dict(CONFIG)
    with monkeypatch.context() as patch:
        _full_disk_after(patch, 12)  # run files, then the first member's first fold(s)
        with pytest.raises(OSError):
            fit_members(config, splits.train, tmp_path / "run", test=splits.test)
    fit_members(config, splits.train, tmp_path / "run", test=splits.test)
    for name in ("words", "ridge"):
        for split in ("oof", "test"):
            np.testing.assert_array_equal(
                load_array(tmp_path / "run" / "members" / name / f"{split}.npy"),
                load_array(stacked["run"] / "members" / name / f"{split}.npy"),
            )


@pytest.mark.slow
def test_two_fits_at_once_sharing_a_cache_and_a_run_folder(tmp_path):
    """Two processes fit an embedding member into one cache folder at the same time, and two more
    fit one run folder at the same time: all finish, and every run equals a fit made alone."""
    from tiny_models import make_tiny_st_encoder

    encoder = make_tiny_st_encoder(tmp_path / "encoder")
    data = write_kaggle(tmp_path / "data", n_train=90, n_test=15)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"name": "shared", "members": [{"name": "emb", "features": str(encoder), "head": "logreg"}],
                                  "cv": {"n_folds": 3}, "device": "cpu"}))

    def fit(run: str, cache: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "embedensemble.fit", "--config", str(config), "--data", str(data), "--run", str(tmp_path / run),
               "--cache-dir", str(tmp_path / cache), "-q"]
        return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    for group in ((fit("a", "cache"), fit("b", "cache")), (fit("same", "cache2"), fit("same", "cache2"))):
        for proc in group:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-2000:]
    alone = fit("alone", "cache-alone")
    assert alone.wait(timeout=600) == 0
    for run in ("a", "b", "same"):
        for split in ("oof", "test"):
            np.testing.assert_allclose(
                load_array(tmp_path / run / "members" / "emb" / f"{split}.npy"),
                load_array(tmp_path / "alone" / "members" / "emb" / f"{split}.npy"),
                rtol=1e-5, atol=1e-6,
            )
        assert read_json(tmp_path / run / "members" / "emb" / "member.json")["status"] == "done"
