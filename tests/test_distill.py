"""Distillation on a tiny stacked run: the student folder, its lineage and safety, soft targets, ONNX export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic import make_tweets, write_kaggle
from tiny_models import make_tiny_st_encoder

from embedensemble.config import MemberConfig
from embedensemble.distill import DistillSettings, distill, student_of, student_report_file
from embedensemble.ensemble import EmotionEnsemble
from embedensemble.errors import DataError, RunNotFoundError, UnsafeArtifactError
from embedensemble.fileio import load_array, read_json, sha256_file
from embedensemble.fit import main as fit_main
from embedensemble.members.base import MemberContext, build_member, load_member
from embedensemble.members.onnx_classifier import length_batches
from embedensemble.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
FAST = {"warmup_ratio": 0.0, "save_every_steps": 1000}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return make_tiny_st_encoder(tmp_path_factory.mktemp("bert") / "bert")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, bert) -> dict[str, Path]:
    """A stacked TF-IDF run on synthetic Kaggle files and its distilled students (torch and ONNX) of a tiny BERT (~30 s)."""
    root = tmp_path_factory.mktemp("distill")
    data = write_kaggle(root / "data", n_train=120, n_test=40)
    config = root / "config.json"
    members = [{"name": "tfidf-logreg", "features": "tfidf", "head": "logreg"}]
    config.write_text(json.dumps({"name": "tiny", "members": members, "cv": {"n_folds": 2}}))
    run = root / "run"
    assert fit_main(["--data", str(data), "--config", str(config), "--run", str(run), "--stack", "-q"]) == 0
    unlabeled = root / "more.txt"
    unlabeled.write_text("so happy and delighted today\n\nscared and terrified of the bus\n", encoding="utf-8")
    settings = DistillSettings(student=str(bert), epochs=2, batch_size=16, params=FAST)
    distill(run, unlabeled=[unlabeled], settings=settings)
    onnx_settings = DistillSettings(student=str(bert), epochs=1, batch_size=16, params=FAST, onnx="int8")
    distill(run, root / "student-onnx", settings=onnx_settings)
    return {"root": root, "data": data, "run": run, "bert": bert, "unlabeled": unlabeled}


@pytest.mark.slow
def test_student_is_a_one_model_ensemble_named_after_its_teacher(tiny):
    run = RunFolder(tiny["run"])
    student = run.student_dir
    manifest = read_json(student / "manifest.json")
    assert [m["name"] for m in manifest["members"]] == ["student"]
    assert len(manifest["members"][0]["folds"]) == 1  # one model, not K fold models
    assert manifest["members"][0]["config"]["kind"] == "pooled-finetune"
    lineage = student_of(student)
    assert lineage["run"] == str(run.path.resolve())
    assert lineage["teacher_manifest_sha256"] == sha256_file(run.ensemble_dir / "manifest.json")
    assert student_of(run.ensemble_dir) is None

    ensemble = EmotionEnsemble.load(student)
    texts, _ = make_tweets(5, seed=11)
    proba = ensemble.predict_proba(texts).to_numpy()
    assert proba.shape == (5, 11) and np.all((proba > 0) & (proba < 1))
    decided = ensemble.predict(texts).to_numpy()
    np.testing.assert_array_equal(decided, (proba >= np.array(list(ensemble.thresholds.values()))).astype(int))


@pytest.mark.slow
def test_report_compares_teacher_and_student_on_rows_the_student_never_saw(tiny):
    run = RunFolder(tiny["run"])
    report = read_json(student_report_file(run.student_dir))
    n_train = len(run.train_labels())
    held_out = int((run.folds("holdout") == 0).sum())
    counts = report["soft_labels"]
    assert counts == {"train_rows": n_train - held_out, "test": 40, "unlabeled": 2, "holdout_rows": held_out}
    holdout = report["quality"]["holdout"]
    assert holdout["rows"] == held_out
    for who in ("teacher", "student"):
        assert 0.0 <= holdout[who]["macro_f1"] <= 1.0
    gap = report["macro_f1_gap_teacher_minus_student"]["holdout"]
    assert gap == pytest.approx(holdout["teacher"]["macro_f1"] - holdout["student"]["macro_f1"], abs=1e-4)
    # Thresholds are those tuned on the held-out rows' student probabilities, saved with the student.
    saved = read_json(run.student_dir / "thresholds.json")["thresholds"]
    assert set(saved) == set(EmotionEnsemble.load(run.student_dir).thresholds)


@pytest.mark.slow
def test_a_tampered_student_is_refused_like_any_ensemble(tiny, tmp_path):
    import shutil

    copy = tmp_path / "student"
    shutil.copytree(RunFolder(tiny["run"]).student_dir, copy)
    thresholds = copy / "thresholds.json"
    thresholds.write_text(thresholds.read_text().replace("0.", "0.0", 1))
    with pytest.raises(UnsafeArtifactError, match="checksum"):
        EmotionEnsemble.load(copy)


@pytest.mark.slow
def test_onnx_student_ships_int8_or_fp32_by_its_holdout_loss(tiny):
    student = tiny["root"] / "student-onnx"
    report = read_json(student_report_file(student))
    onnx = report["onnx"]
    assert onnx["requested"] == "int8" and onnx["used"] in ("int8", "fp32")
    loss = onnx["torch_holdout_macro_f1"] - onnx["int8_holdout_macro_f1"]
    assert (onnx["used"] == "int8") == (loss <= 0.005)
    manifest = read_json(student / "manifest.json")
    assert manifest["members"][0]["config"]["kind"] == "onnx-classifier"
    assert manifest["members"][0]["config"]["params"]["precision"] == onnx["used"]


@pytest.mark.slow
def test_onnx_student_predicts_in_a_process_without_torch(tiny):
    script = (
        "import sys, json; from embedensemble.ensemble import EmotionEnsemble\n"
        f"e = EmotionEnsemble.load({str(tiny['root'] / 'student-onnx')!r})\n"
        "p = e.predict_proba(['so happy today', 'scared {text} of the dark #x']).to_numpy()\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules, 'shape': list(p.shape)}))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "transformers": False, "shape": [2, 11]}


def test_onnx_export_matches_torch_member_and_its_tokenizer(bert, tmp_path):
    from embedensemble.onnx_export import export_student

    texts, labels = make_tweets(24, seed=5)
    soft = np.clip(0.8 * labels + 0.1, 0, 1).astype(np.float32)
    config = MemberConfig(
        name="s", kind="pooled-finetune", backbone=str(bert), params={"adapter": "none", "batch_size": 8, **FAST}
    )
    member = build_member(config, MemberContext(seed=3, device="cpu")).fit(texts, soft)
    tricky = [*texts, "x", "emoji 😀 and {braces} {text}", "a long tweet " * 80]
    expected = member.predict_proba(tricky)
    fp32 = load_member(export_student(member, tmp_path / "fp32", precision="fp32"))
    assert fp32._token_ids(tricky) == member._tokenize(tricky)  # same ids, truncation included
    np.testing.assert_allclose(fp32.predict_proba(tricky), expected, atol=1e-5)
    int8 = load_member(export_student(member, tmp_path / "int8", precision="int8"))
    assert np.abs(int8.predict_proba(tricky) - expected).max() < 0.05
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < 0.5 * (tmp_path / "fp32" / "model.onnx").stat().st_size


def test_pooled_finetune_learns_soft_targets(bert):
    texts, labels = make_tweets(32, seed=2)
    soft = np.where(labels == 1, 0.9, 0.05).astype(np.float32)
    config = MemberConfig(
        name="s",
        kind="pooled-finetune",
        backbone=str(bert),
        params={"adapter": "none", "batch_size": 8, "epochs": 6.0, "lr": 1e-3, **FAST},
    )
    member = build_member(config, MemberContext(seed=3, device="cpu")).fit(texts, soft)
    losses = [h["loss"] for h in member.train_stats_["history"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    # BCE on soft targets is minimised at the target itself, never below: a loss near that floor shows
    # the member fitted the soft values (hard 0/1 targets would push the floor to 0).
    floor = float(-(soft * np.log(soft) + (1 - soft) * np.log(1 - soft)).mean())
    assert min(losses) > floor - 1e-3


@pytest.mark.slow
def test_distill_refuses_unstacked_runs_changed_data_and_missing_files(tiny, tmp_path):
    with pytest.raises(RunNotFoundError, match="config.json"):
        distill(tmp_path / "nothing")
    run = RunFolder(tiny["run"])
    other = write_kaggle(tmp_path / "other", n_train=120, n_test=40, seed=9)
    with pytest.raises(DataError, match="fingerprint"):
        distill(run.path, tmp_path / "s", settings=DistillSettings(student=str(tiny["bert"])), data_dir=other)
    with pytest.raises(DataError, match="does not exist"):
        distill(
            run.path, tmp_path / "s", unlabeled=[tmp_path / "missing.txt"], settings=DistillSettings(student=str(tiny["bert"]))
        )
    stack_oof = load_array(run.stack_file("oof"))
    assert np.isfinite(stack_oof).all()  # the run was left as it was


def test_length_batches_cover_every_text_once_within_the_token_budget():
    lengths = np.array([5, 120, 7, 64, 3, 3, 90, 12] * 20)
    batches = length_batches(lengths, batch_size=16, max_tokens=256)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 16 and (len(batch) == 1 or len(batch) * lengths[batch].max() <= 256)


def test_onnx_threads_follow_the_library_policy(monkeypatch):
    import os

    from embedensemble.members.onnx_classifier import onnx_num_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.delenv("EMBEDENSEMBLE_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert onnx_num_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what `predict --threads 2` sets
    assert onnx_num_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # oversubscribed: one thread
    assert onnx_num_threads() == 1
    monkeypatch.setenv("EMBEDENSEMBLE_NUM_THREADS", "3")  # an explicit setting wins
    assert onnx_num_threads() == 3
