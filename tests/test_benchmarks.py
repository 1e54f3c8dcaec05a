"""End-to-end: ``python -m benchmarks.run --quick`` on the shared data writes every section's JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
METRIC_KEYS = ("macro_f1", "micro_f1", "jaccard")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "semeval2018-ec").is_dir() or not (DATA / "kaggle-emotion").is_dir(), reason=f"{DATA} is missing"),
]


def _check_metrics(metrics, where):
    for key in METRIC_KEYS:
        assert 0.0 <= metrics[key] <= 1.0, f"{where}: {key}={metrics[key]}"
    assert len(metrics["per_emotion_f1"]) == 11, where
    assert all(0.0 <= f <= 1.0 for f in metrics["per_emotion_f1"].values()), where


def _check_machine(result):
    machine = result["machine"]
    for key in ("cpu", "cores", "ram_gb", "os", "python", "versions", "date"):
        assert key in machine, key
    assert "torch" in machine["versions"]
    assert result["wall_seconds"] > 0 and result["quick"] is True


def _results_block():
    from benchmarks.readme import END, START

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index(START) : text.index(END)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    block = _results_block()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out), "--no-readme"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line or "Error" in line]
    assert proc.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + proc.stderr[-3000:]
    assert _results_block() == block, "--quick --no-readme must not touch the README's results block"
    return {name: json.loads((out / f"{name}.json").read_text()) for name in ("quality", "cv", "speed", "finetune")}, out


def test_quality(results):
    quality = results[0]["quality"]
    _check_machine(quality)
    assert quality["members"], "no members"
    for name, member in quality["members"].items():
        for split in ("eval", "eval_at_0.5", "oof", "oof_at_0.5"):
            _check_metrics(member[split], f"{name} {split}")
    _check_metrics(quality["stack"]["eval"], "stack eval")
    _check_metrics(quality["stack"]["oof"], "stack oof")
    assert set(quality["baselines"]) == {"tfidf-logreg (sklearn)", "minilm SentenceTransformer + LR", "minilm HF Trainer fine-tune"}
    for name, baseline in quality["baselines"].items():
        _check_metrics(baseline["eval"], name)
    verdict = quality["stack_vs_best_member"]
    assert isinstance(verdict["stack_beats_best_member"], bool) and verdict["best_member"] in quality["members"]
    assert [r["metrics"]["macro_f1"] for r in quality["references"]] == [0.528, 0.578]


def test_cv(results):
    cv = results[0]["cv"]
    _check_machine(cv)
    assert cv["n_folds"] == 2
    _check_metrics(cv["stack"]["oof"], "cv stack")
    for name, member in cv["members"].items():
        _check_metrics(member["oof"], name)


def test_speed(results):
    speed = results[0]["speed"]
    _check_machine(speed)
    variants = speed["embedding"]["minilm"]["variants"]
    reference = speed["embedding"]["minilm"]["reference"]
    assert variants[reference]["ratio_vs_reference"] == 1.0
    for name, variant in variants.items():
        if "skipped" not in variant:
            assert variant["tweets_per_s"] > 0, name
    assert variants["Encoder.encode (library thread policy)"]["min_cosine_vs_reference"] > 0.999
    fit = speed["fit"]
    assert fit["cold"]["cache_misses"] > 0 and fit["warm"]["cache_misses"] == 0 and fit["warm"]["cache_hits"] > 0
    predict = speed["predict"]
    assert predict["fresh_cache"]["tweets_per_s"] > 0 and predict["no_cache"]["tweets_per_s"] > 0
    latency = predict["fresh_cache"]["latency_ms"]
    assert latency["calls"] > 0 and latency["median"] > 0
    assert predict["fresh_cache"]["peak_rss_mb"] > 0 and predict["no_cache"]["peak_rss_mb"] > 0
    for name, entry in speed["onnx_quality"].items():
        if isinstance(entry, dict) and "eval" in entry:
            _check_metrics(entry["eval"], name)


def test_finetune(results):
    finetune = results[0]["finetune"]
    _check_machine(finetune)
    if finetune["skipped"]:
        assert finetune["reason"]
        return
    _check_metrics(finetune["stack_with_finetuned"]["eval"], "stack with")
    _check_metrics(finetune["stack_without_finetuned"]["eval"], "stack without")
    assert finetune["finetuned_members"] and finetune["comparison"]["members"]


def test_readme_block_renders_from_json(results, tmp_path):
    from benchmarks.readme import END, START, update_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{START}\nPLACEHOLDER-TEXT\n{END}\n\nafter\n", encoding="utf-8")
    update_readme(results[1], readme)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# title\n\nbefore\n\n" + START) and text.endswith(END + "\n\nafter\n")
    assert "PLACEHOLDER-TEXT" not in text and "### Quality" in text and "### Speed" in text and "SpanEmo" in text
