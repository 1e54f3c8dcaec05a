"""``python -m benchmarks.run --quick`` on the shared data writes every section's JSON (slow, e2e); the README
and docs/benchmarks.md results blocks are what the committed JSON renders (fast)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
METRIC_KEYS = ("macro_f1", "micro_f1", "jaccard")

QUICK_RUN_MARKS = (
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "semeval2018-ec").is_dir() or not (DATA / "kaggle-emotion").is_dir(), reason=f"{DATA} is missing"),
)


def quick_run(test):
    """Marks of the tests that read the ``--quick`` run's JSON."""
    for mark in QUICK_RUN_MARKS:
        test = mark(test)
    return test


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
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out), "--no-readme"], check=False,
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line or "Error" in line]
    assert proc.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + proc.stderr[-3000:]
    assert _results_block() == block, "--quick --no-readme must not touch the README's results block"
    return {name: json.loads((out / f"{name}.json").read_text()) for name in ("quality", "cv", "speed", "finetune")}, out


@quick_run
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


@quick_run
def test_cv(results):
    cv = results[0]["cv"]
    _check_machine(cv)
    assert cv["n_folds"] == 2
    _check_metrics(cv["stack"]["oof"], "cv stack")
    for name, member in cv["members"].items():
        _check_metrics(member["oof"], name)


@quick_run
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


@quick_run
def test_finetune(results):
    finetune = results[0]["finetune"]
    _check_machine(finetune)
    # Its config is in the repository: "skipped" here would hide a failure (only an absent config may skip).
    assert finetune["skipped"] is False, finetune.get("reason")
    _check_metrics(finetune["stack_with_finetuned"]["eval"], "stack with")
    _check_metrics(finetune["stack_without_finetuned"]["eval"], "stack without")
    assert finetune["finetuned_members"] and finetune["comparison"]["members"]


@quick_run
def test_readme_block_renders_from_json(results, tmp_path):
    from benchmarks.readme import END, START, stale, update_readme

    readme, docs = tmp_path / "README.md", tmp_path / "benchmarks.md"
    for path in (readme, docs):
        path.write_text(f"# title\n\nbefore\n\n{START}\nPLACEHOLDER-TEXT\n{END}\n\nafter\n", encoding="utf-8")
    assert stale(results[1], readme, docs) == [readme, docs]
    update_readme(results[1], readme, docs)
    assert stale(results[1], readme, docs) == []
    for path in (readme, docs):
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# title\n\nbefore\n\n" + START) and text.endswith(END + "\n\nafter\n")
        assert "PLACEHOLDER-TEXT" not in text
    full, short = docs.read_text(encoding="utf-8"), readme.read_text(encoding="utf-8")
    assert "### Quality" in full and "### Speed" in full and "SpanEmo" in full and "**Splits.**" in full
    assert "| result | value | measured on | thresholds tuned on | choices made on |" in short and "### Quality" not in short


def test_committed_readme_and_docs_blocks_equal_what_the_results_json_renders():
    """README's headline table and docs/benchmarks.md's results are rendered from benchmarks/results/*.json, never typed."""
    from benchmarks.readme import DOCS, README, RESULTS_DIR, stale

    outdated = stale(RESULTS_DIR, README, DOCS)
    assert outdated == [], f"{[str(p) for p in outdated]}: run `python -m benchmarks.readme` after changing benchmarks/results/*.json"


def test_every_headline_number_names_its_split():
    """Each headline row says which rows it is measured on, where its thresholds and the config's choices were made."""
    from benchmarks.readme import RESULTS_DIR, render_headline

    rows = [line for line in render_headline(RESULTS_DIR).splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows, "no headline rows"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 5 and cells[2], row
        if "macro-F1" in cells[0]:  # a quality number: its split, thresholds and choices are named
            assert any(split in cells[2] for split in ("dev", "OOF")), row
            assert cells[3] not in ("", "–"), row


def test_cache_hits_and_misses_counted_over_every_cache_object(tmp_path):
    """benchmarks.count_cache_hits reads the library's public counters (no patching of EmbeddingCache)."""
    import numpy as np

    from benchmarks import count_cache_hits
    from embedensemble.cache import EmbeddingCache

    def compute(texts):
        return np.ones((len(texts), 3), dtype=np.float32)

    EmbeddingCache(tmp_path / "a").get_or_compute("ns", ["x"], compute)  # outside the block: not counted
    with count_cache_hits() as stats:
        EmbeddingCache(tmp_path / "a").get_or_compute("ns", ["x", "y", "y"], compute)  # x cached, y computed once
        EmbeddingCache(tmp_path / "b").get_or_compute("ns", ["x"], compute)  # another object and folder
    assert stats == {"hits": 1, "misses": 2}
