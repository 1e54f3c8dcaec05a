"""Speed section: embedding throughput, cold vs warm fits, prediction throughput and latency, ONNX/int8.

Embedding variants are timed in this process on the same texts, interleaved and repeated (the best
repeat counts), so their ratios hold even on a shared, noisy machine. Fits and predictions run in
fresh child processes (``python -m benchmarks.speed <json spec>``) so that their peak memory and
their cold/warm start are their own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedensemble.manifest import MANIFEST
from embedensemble.run_folder import RunFolder

from . import ROOT, PeakRSS, Section, baselines, count_cache_hits, max_rss_mb, rss_mb, with_threads

if TYPE_CHECKING:
    from .run import Bench

logger = logging.getLogger("benchmarks.speed")


# ----------------------------------------------------------------------------- embedding throughput


def _encoder(backbone: str, threads: int | None = None, **kw: Any) -> Any:
    from embedensemble.backbones import Encoder

    return Encoder(backbone, num_threads=threads, **kw)


Variant = tuple[Callable[[list[str]], np.ndarray] | None, Any]


def _variants(backbone: str, tmp: Path, bench: Bench, extras: bool) -> dict[str, Variant]:
    """name -> (encode function, load seconds, or the reason it was skipped); the first is the reference."""
    from sentence_transformers import SentenceTransformer

    from embedensemble.backbones import resolve_weights
    from embedensemble.cache import EmbeddingCache, embed_texts

    d = bench.torch_default_threads
    out: dict[str, Variant] = {}
    t0 = time.perf_counter()
    st = SentenceTransformer(str(resolve_weights(backbone)), device="cpu")
    plain = lambda t: st.encode(t, show_progress_bar=False, convert_to_numpy=True)
    out[f"SentenceTransformer.encode, {d} threads (torch default)"] = (with_threads(d, plain), time.perf_counter() - t0)
    if d != 1:
        out["SentenceTransformer.encode, 1 thread"] = (with_threads(1, plain), None)
    t0 = time.perf_counter()
    encoder = _encoder(backbone)
    encoder.encode(["warm-up"])
    # torch's default thread count, so the library's load-aware policy (not this run's --threads) decides
    out["Encoder.encode (library thread policy)"] = (with_threads(d, encoder.encode), time.perf_counter() - t0)
    out["embed_texts, empty cache"] = (with_threads(d, lambda t: embed_texts(t, encoder, EmbeddingCache(tmp / f"cold-{uuid.uuid4().hex}"))), None)
    warm_root = tmp / f"warm-{backbone}"

    def warm(texts: list[str]) -> np.ndarray:  # a new cache object each time, as a new process would read it
        return embed_texts(texts, encoder, EmbeddingCache(warm_root))

    out["embed_texts, warm cache"] = (with_threads(d, warm), None)
    if not extras:
        return out
    for n in sorted({1, d}):
        out[f"Encoder.encode, {n} thread{'s' if n > 1 else ''}"] = (_encoder(backbone, threads=n).encode, None)
    for batch in () if bench.quick else (32, 128):
        out[f"Encoder.encode, batch {batch} (default 64)"] = (_encoder(backbone, batch_size=batch).encode, None)
    for int8 in (False, True):
        for n in sorted({1, d}):
            name = f"ONNX Runtime {'int8 (dynamic quantization)' if int8 else 'fp32'}, {n} thread{'s' if n > 1 else ''}"
            try:
                t0 = time.perf_counter()
                onnx = baselines.OnnxEncoder(backbone, bench.runs_root / "bench-onnx" / backbone, int8=int8, threads=n).load()
                out[name] = (onnx.encode, time.perf_counter() - t0)
            except ImportError as exc:  # onnx/onnxruntime not installed (optional): skipped; an export failure fails
                logger.warning("%s skipped: %s", name, exc)
                out[name] = (None, f"{type(exc).__name__}: {exc}")
    return out


def embedding_throughput(bench: Bench, backbone: str, texts: list[str], repeats: int, extras: bool) -> dict[str, Any]:
    from embedensemble.cache import EmbeddingCache, embed_texts

    with tempfile.TemporaryDirectory(prefix="bench-emb-") as tmp:
        variants = _variants(backbone, Path(tmp), bench, extras)
        embed_texts(texts, _encoder(backbone), EmbeddingCache(Path(tmp) / f"warm-{backbone}"))  # fill the warm cache
        runnable = {name: fn for name, (fn, _) in variants.items() if fn is not None}
        for fn in runnable.values():
            fn(texts[:16])  # warm-up: first-call costs (lazy init, allocator) are not throughput
        seconds: dict[str, list[float]] = {name: [] for name in runnable}
        outputs: dict[str, np.ndarray] = {}
        for _ in range(repeats):  # interleaved, so background load hits every variant alike
            for name, fn in runnable.items():
                started = time.perf_counter()
                outputs[name] = np.asarray(fn(texts))
                seconds[name].append(time.perf_counter() - started)
                logger.info("%s %s: %.1f tweets/s", backbone, name, len(texts) / seconds[name][-1])
    reference = next(iter(variants))
    result: dict[str, Any] = {"n_texts": len(texts), "repeats": repeats, "reference": reference, "order": list(variants), "variants": {}}
    for name, (fn, load) in variants.items():
        if fn is None:
            result["variants"][name] = {"skipped": load}
            continue
        best = min(seconds[name])
        a, b = outputs[name], outputs[reference]
        cosine = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        result["variants"][name] = {
            "seconds": [round(x, 2) for x in seconds[name]],
            "tweets_per_s": round(len(texts) / best, 1),
            "ratio_vs_reference": round(min(seconds[reference]) / best, 3),
            "load_seconds": round(load, 2) if isinstance(load, float) else None,
            "min_cosine_vs_reference": round(float(cosine.min()), 5),
            "mean_cosine_vs_reference": round(float(cosine.mean()), 5),
        }
    return result


def onnx_quality(bench: Bench, backbone: str) -> dict[str, Any]:
    """Dev macro-F1 of backbone + one-vs-rest LogisticRegression (threshold 0.5) with torch vs ONNX vectors."""
    from embedensemble.cache import EmbeddingCache, embed_texts
    from embedensemble.metrics import evaluate

    from .baselines import _ovr_logreg

    train, dev = bench.semeval_train, bench.semeval_dev
    texts = train.texts + dev.texts
    sources: dict[str, Callable[[list[str]], np.ndarray]] = {
        "torch (Encoder, cached)": lambda t: embed_texts(t, backbone, EmbeddingCache(bench.cache_dir) if bench.cache_dir else EmbeddingCache()),
    }
    for int8 in (False, True):
        name = f"ONNX Runtime {'int8 (dynamic)' if int8 else 'fp32'}"
        try:
            sources[name] = baselines.OnnxEncoder(backbone, bench.runs_root / "bench-onnx" / backbone, int8=int8, threads=bench.threads).load().encode
        except ImportError as exc:  # onnx/onnxruntime not installed (optional)
            logger.warning("%s skipped: %s", name, exc)
    result: dict[str, Any] = {"backbone": backbone, "n_train": len(train), "n_eval": len(dev), "head": "one-vs-rest LogisticRegression, threshold 0.5"}
    for name, encode in sources.items():
        started = time.perf_counter()
        X = np.asarray(encode(texts))
        embed_s = time.perf_counter() - started
        model = _ovr_logreg().fit(X[: len(train)], train.labels)
        proba = np.asarray(model.predict_proba(X[len(train):]))
        metrics = evaluate(dev.labels, (proba >= 0.5).astype(int))
        result[name] = {"eval": metrics, "embed_seconds": round(embed_s, 1)}
        logger.info("onnx quality %s %s: macro-F1 %.4f", backbone, name, metrics["macro_f1"])
    return result


def onnx_verdict(embedding: dict[str, Any], quality: dict[str, Any], min_speedup: float = 1.1, max_f1_loss: float = 0.002) -> dict[str, Any]:
    """Keep an ONNX backend only if its best throughput beats the torch Encoder's best by ``min_speedup`` without losing macro-F1."""
    variants = embedding["variants"]
    torch_best = max(v["tweets_per_s"] for name, v in variants.items() if name.startswith("Encoder.encode") and "tweets_per_s" in v)
    torch_f1 = quality.get("torch (Encoder, cached)", {}).get("eval", {}).get("macro_f1")
    verdict: dict[str, Any] = {"rule": f"speed-up >= {min_speedup} over the best torch Encoder variant and dev macro-F1 loss <= {max_f1_loss}"}
    for kind, quality_name in (("fp32", "ONNX Runtime fp32"), ("int8 (dynamic quantization)", "ONNX Runtime int8 (dynamic)")):
        runs = [v["tweets_per_s"] for name, v in variants.items() if name.startswith(f"ONNX Runtime {kind},") and "tweets_per_s" in v]
        f1 = quality.get(quality_name, {}).get("eval", {}).get("macro_f1")
        if not runs or f1 is None or torch_f1 is None:
            verdict[quality_name] = {"keep": False, "reason": "not measured"}
            continue
        speedup, loss = max(runs) / torch_best, torch_f1 - f1
        verdict[quality_name] = {"speedup_vs_best_torch": round(speedup, 3), "macro_f1_change": round(-loss, 4),
                                 "keep": bool(speedup >= min_speedup and loss <= max_f1_loss)}
    return verdict


# ----------------------------------------------------------------------------- fit and predict


def fit_phase(bench: Bench, run_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """Fit + stack the speed config on the first ``fit_rows`` train tweets (dev as eval) with ``cache_dir``."""
    from embedensemble.fitting import fit_members
    from embedensemble.stacking import stack_run

    config = bench.config()
    config.cache_dir = str(cache_dir)
    train = bench.semeval_train.subset(np.arange(min(bench.sizes["fit_rows"], len(bench.semeval_train))))
    with count_cache_hits() as stats:
        started = time.perf_counter()
        fit_members(config, train, run_dir, eval=bench.semeval_dev)
        stack_run(run_dir, write_report=False)
        wall = time.perf_counter() - started
    logger.info("fit in %s: %.1fs, cache hits %d, misses %d", run_dir.name, wall, stats["hits"], stats["misses"])
    return {"config": config.name, "members": [m.name for m in config.members], "n_folds": config.cv.n_folds, "n_train": len(train),
            "n_eval": len(bench.semeval_dev), "wall_seconds": round(wall, 1), "cache_hits": stats["hits"], "cache_misses": stats["misses"]}


def fit_cold_warm(bench: Bench, tmp: Path) -> dict[str, Any]:
    """The config fitted twice, each in a new process: an empty embedding cache, then the same cache and a new run folder."""
    result: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        child = _child(bench, "fit", tmp, run_dir=str(tmp / f"run-{phase}"), cache_dir=str(tmp / "cache"))
        for key in ("config", "members", "n_folds", "n_train", "n_eval"):
            result[key] = child.pop(key)
        result[phase] = child
    result["speedup_warm_vs_cold"] = round(result["cold"]["wall_seconds"] / max(result["warm"]["wall_seconds"], 1e-9), 2)
    result["ensemble_dir"] = str(RunFolder(tmp / "run-cold").ensemble_dir)
    result["note"] = "each fit runs in a fresh process; wall_seconds excludes interpreter start-up and imports (process_seconds includes them)"
    return result


def main_job(bench: Bench, run_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """What ``make run`` does, cold: the default config fitted and stacked on the whole Kaggle folder, empty cache."""
    from embedensemble import load_dataset
    from embedensemble.fitting import fit_members
    from embedensemble.stacking import stack_run

    config = bench.config()
    config.cache_dir = str(cache_dir)
    splits = load_dataset(bench.kaggle_dir)
    with count_cache_hits() as stats:
        started = time.perf_counter()
        fit_members(config, splits.train, run_dir, test=splits.test)
        stack_run(run_dir, write_report=False)
        wall = time.perf_counter() - started
    logger.info("main job (cold) in %.1fs", wall)
    return {"config": config.name, "data": str(bench.kaggle_dir), "n_train": len(splits.train),
            "n_test": len(splits.test) if splits.test is not None else 0, "n_folds": config.cv.n_folds,
            "wall_seconds": round(wall, 1), "cache_misses": stats["misses"],
            "submission_rows": sum(1 for _ in open(RunFolder(run_dir).submission_file, encoding="utf-8")) - 1}


def _unique_repeats(texts: list[str], n: int) -> list[str]:
    """``texts`` repeated up to ``n``; copy ``k`` gets ``k`` trailing spaces, which tokenizers drop but the cache key does not."""
    return [texts[i % len(texts)] + " " * (i // len(texts)) for i in range(n)]


def _timed_predict(ensemble: Any, texts: list[str]) -> dict[str, Any]:
    with count_cache_hits() as stats, PeakRSS() as memory:
        started = time.perf_counter()
        ensemble.predict(texts)
        seconds = time.perf_counter() - started
    return {"n_texts": len(texts), "seconds": round(seconds, 1), "tweets_per_s": round(len(texts) / seconds, 1),
            "peak_rss_mb": memory.peak_mb, "cache_hits": stats["hits"], "cache_misses": stats["misses"]}


def predict_speed(bench: Bench, ensemble_dir: Path, tmp: Path, *, use_cache: bool) -> dict[str, Any]:
    """Load an ensemble and time ``predict`` with an empty cache folder (``use_cache``) or without any cache."""
    from embedensemble import EmotionEnsemble

    n = bench.sizes["predict"] if use_cache else bench.sizes["no_cache"]
    n_latency = bench.sizes["latency_calls"] if use_cache else 0
    pool = bench.semeval_dev.texts + (bench.semeval_test.texts if bench.semeval_test is not None else [])
    texts = _unique_repeats(pool, n)
    unseen = bench.semeval_train.texts[-(n_latency + 2):]  # never in ``texts``; the fresh cache holds none of them
    result: dict[str, Any] = {"texts": "dev+test tweets repeated to n; copy k gets k trailing spaces, so no cache can serve repeats",
                              "use_cache_switch": True,  # EmotionEnsemble.load(use_cache=False): no cache at all
                              "rss_before_load_mb": round(rss_mb(), 1)}
    started = time.perf_counter()
    cache_dir = str(tmp / f"predict-cache-{uuid.uuid4().hex}") if use_cache else None
    ensemble = EmotionEnsemble.load(ensemble_dir, use_cache=use_cache, cache_dir=cache_dir)
    result["load_seconds"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    ensemble.predict(unseen[:2])
    result["first_call_seconds"] = round(time.perf_counter() - started, 2)
    result["members"] = ensemble.member_names
    result["folds_per_member"] = {name: len(folds) for name, folds in ensemble.member_folds_.items()}
    result.update(_timed_predict(ensemble, texts))
    logger.info("predict (%s): %.1f tweets/s", "empty cache" if use_cache else "no cache", result["tweets_per_s"])
    if use_cache:
        result["repeat_call_tweets_per_s"] = _timed_predict(ensemble, texts)["tweets_per_s"]
        latencies = []
        for tweet in unseen[2:]:
            started = time.perf_counter()
            ensemble.predict([tweet])
            latencies.append((time.perf_counter() - started) * 1000)
        result["latency_ms"] = {"median": round(statistics.median(latencies), 1), "p90": round(float(np.percentile(latencies, 90)), 1),
                                "max": round(max(latencies), 1), "calls": len(latencies), "tweets": "distinct, not in the cache"}
        logger.info("single-tweet latency: median %.0f ms", result["latency_ms"]["median"])
    return result


def predict_both(bench: Bench, ensemble_dir: Path, tmp: Path) -> dict[str, Any]:
    fresh = _child(bench, "predict", tmp, ensemble_dir=str(ensemble_dir), use_cache=True)
    none = _child(bench, "predict", tmp, ensemble_dir=str(ensemble_dir), use_cache=False)
    shared = {key: fresh.pop(key) for key in ("members", "folds_per_member", "use_cache_switch", "texts")}
    for key in shared:
        none.pop(key, None)
    none["vs_fresh_cache"] = round(none["tweets_per_s"] / fresh["tweets_per_s"], 3)
    return {"ensemble_dir": str(ensemble_dir), **shared, "fresh_cache": fresh, "no_cache": none,
            "note": "each measurement runs in a fresh process; peak_rss_mb is that process's peak (ru_maxrss)"}


# ----------------------------------------------------------------------------- child processes


def _child(bench: Bench, task: str, tmp: Path, **params: Any) -> dict[str, Any]:
    """Run ``task`` in a new Python process (clean peak memory); returns its result dict."""
    spec = {"task": task, "params": params, "result": str(tmp / f"child-{uuid.uuid4().hex}.json"), "bench": bench.to_spec()}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.speed", json.dumps(spec)], cwd=ROOT, check=True)
    result = json.loads(Path(spec["result"]).read_text())
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    return result


def _child_main(spec: dict[str, Any]) -> None:
    import torch

    from embedensemble.fileio import write_json

    from . import setup_logging
    from .run import Bench

    bench = Bench.from_spec(spec["bench"])
    setup_logging(bench.quick)
    # Children keep torch's default threads: what a user of the library gets (its encoder picks by load).
    load_start = [round(x, 2) for x in os.getloadavg()]
    params = spec["params"]
    if spec["task"] == "fit":
        result = fit_phase(bench, Path(params["run_dir"]), Path(params["cache_dir"]))
    elif spec["task"] == "main_job":
        result = main_job(bench, Path(params["run_dir"]), Path(params["cache_dir"]))
    else:
        result = predict_speed(bench, Path(params["ensemble_dir"]), Path(spec["result"]).parent, use_cache=params["use_cache"])
    result["peak_rss_mb"] = round(max_rss_mb(), 1)
    result.update(torch_threads=torch.get_num_threads(), load_average_at_start=load_start, load_average_at_end=[round(x, 2) for x in os.getloadavg()])
    write_json(spec["result"], result)


# ----------------------------------------------------------------------------- section


def run(bench: Bench) -> Path:
    import torch

    section = Section("speed", bench.out, bench.quick)
    res = section.result
    res["torch_threads"] = torch.get_num_threads()
    rng = np.random.default_rng(0)
    pool = bench.semeval_train.texts
    texts = [pool[i] for i in rng.choice(len(pool), size=min(bench.sizes["speed_texts"], len(pool)), replace=False)]
    res["embedding"] = {}
    for backbone in bench.speed_backbones:
        with section.time(f"embedding_{backbone}"):
            res["embedding"][backbone] = embedding_throughput(bench, backbone, texts, bench.sizes["repeats"] if backbone == "minilm" else 1, extras=backbone == "minilm")
    with section.time("onnx_quality"):
        res["onnx_quality"] = onnx_quality(bench, "minilm")
    res["onnx_verdict"] = onnx_verdict(res["embedding"]["minilm"], res["onnx_quality"])
    tmp = Path(tempfile.mkdtemp(prefix="bench-speed-", dir=bench.runs_root))
    try:
        with section.time("fit_cold_warm"):
            res["fit"] = fit_cold_warm(bench, tmp)
        if not bench.quick:  # ~10 min on 2 cores: the full run is where users meet it
            with section.time("main_job"):
                res["main_job"] = _child(bench, "main_job", tmp, run_dir=str(tmp / "run-main"), cache_dir=str(tmp / "cache-main"))
        trained = RunFolder(bench.run_dir("bench-semeval")).ensemble_dir
        ensemble_dir = trained if not bench.quick and (trained / MANIFEST).is_file() else Path(res["fit"]["ensemble_dir"])
        with section.time("predict"):
            res["predict"] = predict_both(bench, ensemble_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return section.finish()


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
