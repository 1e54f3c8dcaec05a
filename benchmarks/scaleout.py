"""Scale-out on Ray, measured on this machine's CPUs (the engine's overhead, not a model's speed).

    python -m benchmarks.scaleout [--only predict|fit] [--n 200000]

* ``predict``: a cheap TF-IDF ensemble (fitted on synthetic tweets) scores ``--n`` synthetic tweets
  (made here, never the licensed data) with ``predict --engine ray`` on 1 and 2 single-threaded
  actors, and with the single-process ``python -m embedensemble.predict`` given both cores;
  peak memory per actor at ``--n``/10 and ``--n`` rows.
* ``fit``: ``fit --engine ray`` of the default config on the Kaggle train file (in a temp run
  folder; nothing of the data is kept) with 1 and 2 workers vs the sequential fit: ``oof.npy``
  compared member by member, wall times.

Writes ``benchmarks/results/scaleout.json`` (the 1-minute load average before and after each
step: the machine is shared) and renders the block between the markers of ``docs/scaleout.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scaleout.json"
DOC = ROOT / "docs" / "scaleout.md"
BEGIN, END = "<!-- scaleout-benchmark:begin -->", "<!-- scaleout-benchmark:end -->"
PLAN_BEGIN, PLAN_END = "<!-- scaleout-plan:begin -->", "<!-- scaleout-plan:end -->"
TARGETS = {"two_vs_one_min": 1.8, "ray_vs_local_max": 1.10, "oof_atol": 1e-6}
ROWS_PER_SHARD = 10_000


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _ensemble(tmp: Path) -> Path:
    from embedensemble.config import CVConfig, EnsembleConfig, MemberConfig
    from embedensemble.training import fit_ensemble
    from tests.synthetic import make_tweets

    texts, labels = make_tweets(3000, seed=0)
    config = EnsembleConfig(
        name="tfidf-bench", members=[MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg")],
        cv=CVConfig(n_folds=3), cache_dir=str(tmp / "cache"),
    )
    return fit_ensemble(config, texts, labels, run_dir=tmp / "run").save(tmp / "ensemble")


def _inputs(tmp: Path, n: int) -> dict[int, Path]:
    import pandas as pd

    from tests.synthetic import make_tweets

    texts, _ = make_tweets(n, seed=11)
    frame = pd.DataFrame({"ID": [f"s{i:07d}" for i in range(n)], "Tweet": texts})
    files = {}
    for rows in (n // 10, n):
        files[rows] = tmp / f"tweets-{rows}.parquet"
        frame.iloc[:rows].to_parquet(files[rows], row_group_size=ROWS_PER_SHARD)
    frame.to_csv(tmp / f"tweets-{n}.csv", index=False)  # only for the planner's speed
    return files


def _planning(csv_file: Path) -> dict[str, Any]:
    """How fast the driver cuts a CSV into shards (one streaming pass over the bytes)."""
    from embedensemble.distributed.shards import plan_shards

    times = []
    for _ in range(3):  # the best of 3: the first also pays for imports and a cold page cache
        started = time.perf_counter()
        shards = plan_shards(csv_file, ROWS_PER_SHARD)
        times.append(time.perf_counter() - started)
    seconds = min(times)
    size_mb = csv_file.stat().st_size / 2**20
    return {"csv_mb": round(size_mb, 1), "shards": len(shards), "seconds": round(seconds, 3), "mb_per_s": round(size_mb / seconds, 1)}


def _ray_run(ensemble: Path, source: Path, out: Path, workers: int) -> dict[str, Any]:
    from embedensemble.distributed.ray_predict import predict_with_ray

    load = _load()
    started = time.perf_counter()
    result = predict_with_ray(ensemble, source, out, num_workers=workers, rows_per_shard=ROWS_PER_SHARD, cpus_per_worker=1)
    wall = time.perf_counter() - started
    per_worker: dict[int, dict[str, float]] = {}
    for s in result.shard_stats:
        w = per_worker.setdefault(s["pid"], {"rows": 0, "seconds": 0.0, "peak_rss_mb": 0.0})
        w["rows"] += s["rows"]
        w["seconds"] += s["seconds"]
        w["peak_rss_mb"] = max(w["peak_rss_mb"], s["peak_rss_mb"])
    return {
        "workers": workers, "rows": result.rows_written, "shards": len(result.shards_written), "wall_s": round(wall, 2),
        "rows_per_s": round(result.rows_written / wall, 1),
        "per_worker": [{"rows": w["rows"], "busy_s": round(w["seconds"], 2), "rows_per_busy_s": round(w["rows"] / w["seconds"], 1),
                        "peak_rss_mb": w["peak_rss_mb"]} for w in per_worker.values()],
        "loadavg_before": load, "loadavg_after": _load(),
    }


_PEAK_WRAPPER = (
    "import resource, runpy, sys\n"
    "sys.argv = ['embedensemble.predict', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('embedensemble.predict', run_name='__main__')\n"
    "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
    "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def _local_run(ensemble: Path, source: Path, out: Path, threads: int) -> dict[str, Any]:
    """The single-process CLI in a fresh process, timed from outside (its start and load included, like an actor's)."""
    import pyarrow.parquet as pq

    load = _load()
    arguments = ["--ensemble", str(ensemble), "--input", str(source), "--output", str(out), "--threads", str(threads)]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *arguments], check=True, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - started
    peak_kb = int(done.stderr.strip().splitlines()[-1].split()[-1])
    rows = int(pq.ParquetFile(out).metadata.num_rows)
    return {"threads": threads, "rows": rows, "wall_s": round(wall, 2), "rows_per_s": round(rows / wall, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1), "loadavg_before": load, "loadavg_after": _load()}


def measure_predict(n: int, tmp: Path, rounds: int = 2) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import ray

    from embedensemble.ensemble import EmotionEnsemble

    tmp.mkdir(parents=True, exist_ok=True)
    ensemble = _ensemble(tmp)
    files = _inputs(tmp, n)
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray_init_s = time.perf_counter() - started
    try:
        runs = {}
        for rows in (n // 10, n):  # the smaller input first: a reused actor process would carry its peak upward
            for workers in (1, 2):
                runs[f"ray_{rows}_{workers}w"] = _ray_run(ensemble, files[rows], tmp / f"out-{rows}-{workers}", workers)
        for r in range(1, rounds):  # more rounds on the big input, alternating 1 and 2 actors; the fastest of each is kept
            for workers in (1, 2):
                key, again = f"ray_{n}_{workers}w", _ray_run(ensemble, files[n], tmp / f"out-{n}-{workers}-r{r}", workers)
                walls = [*runs[key].pop("round_walls_s", [runs[key]["wall_s"]]), again["wall_s"]]
                runs[key] = {**min(runs[key], again, key=lambda x: x["wall_s"]), "round_walls_s": walls}
    finally:
        ray.shutdown()
    for rows in (n // 10, n):
        runs[f"local_{rows}_2t"] = _local_run(ensemble, files[rows], tmp / f"local-{rows}.parquet", 2)
    runs[f"local_{n}_1t"] = _local_run(ensemble, files[n], tmp / f"local-{n}-1t.parquet", 1)  # how much the 2nd thread helps
    # Same scores: the Ray output of the big run equals the single-process output row for row.
    ray_out = pd.concat([pd.read_parquet(p) for p in sorted((tmp / f"out-{n}-2").glob("part-*.parquet"))], ignore_index=True)
    local_out = pd.read_parquet(tmp / f"local-{n}.parquet")
    sample = pd.read_parquet(files[n]).iloc[:: max(1, n // 2000)]
    in_process = EmotionEnsemble.load(ensemble, use_cache=False).predict(sample["Tweet"].tolist()).to_numpy()
    one, two, local = runs[f"ray_{n}_1w"], runs[f"ray_{n}_2w"], runs[f"local_{n}_2t"]
    return {
        "n": n, "rounds": rounds, "rows_per_shard": ROWS_PER_SHARD, "ensemble": "tfidf-logreg, 3 folds + stacker, fitted on 3000 synthetic tweets",
        "ray_init_s": round(ray_init_s, 2), "runs": runs, "csv_planning": _planning(tmp / f"tweets-{n}.csv"),
        "two_vs_one": round(one["wall_s"] / two["wall_s"], 3),
        "two_vs_one_busy": round(sum(w["rows_per_busy_s"] for w in two["per_worker"]) / one["per_worker"][0]["rows_per_busy_s"], 3),
        "ray2_vs_local_wall": round(two["wall_s"] / local["wall_s"], 3),
        "ray_equals_local": bool(ray_out.equals(local_out)),
        "ray_equals_in_process_sample": bool(np.array_equal(ray_out.iloc[sample.index][in_process_columns()].to_numpy(), in_process)),
        "peak_rss_mb_per_worker": {str(rows): max(w["peak_rss_mb"] for w in runs[f"ray_{rows}_2w"]["per_worker"]) for rows in (n // 10, n)},
    }


def in_process_columns() -> list[str]:
    from embedensemble.labels import EMOTIONS

    return list(EMOTIONS)


def measure_fit(tmp: Path, data: Path) -> dict[str, Any]:
    import numpy as np
    import ray
    import torch

    from embedensemble.cache import cache_counters
    from embedensemble.data import load_dataset
    from embedensemble.defaults import default_config
    from embedensemble.distributed.ray_fit import fit_members_ray
    from embedensemble.fileio import load_array
    from embedensemble.fitting import fit_members

    tmp.mkdir(parents=True, exist_ok=True)
    splits = load_dataset(data)
    config = default_config()
    torch.set_num_threads(1)  # the same single thread as each Ray task
    timings = {}
    load = _load()
    before = cache_counters()
    started = time.perf_counter()
    fit_members(config, splits.train, tmp / "seq", test=splits.test, eval=splits.eval)
    embedded = cache_counters()["misses"] - before["misses"]  # texts the sequential fit had to embed (0: a warm cache)
    timings["sequential"] = {"wall_s": round(time.perf_counter() - started, 2), "loadavg_before": load, "loadavg_after": _load()}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        for workers in (1, 2):
            load = _load()
            started = time.perf_counter()
            fit_members_ray(config, splits.train, tmp / f"ray{workers}", test=splits.test, eval=splits.eval, num_workers=workers)
            timings[f"ray_{workers}w"] = {"wall_s": round(time.perf_counter() - started, 2), "loadavg_before": load, "loadavg_after": _load()}
    finally:
        ray.shutdown()
    members = {}
    for member in config.members:
        seq = load_array(tmp / "seq" / "members" / member.name / "oof.npy")
        diffs = {f"ray_{w}w": load_array(tmp / f"ray{w}" / "members" / member.name / "oof.npy") for w in (1, 2)}
        members[member.name] = {k: {"bitwise_equal": bool(np.array_equal(v, seq)), "max_abs_diff": float(np.nanmax(np.abs(v - seq)))}
                                for k, v in diffs.items()}
    return {
        "config": "default (" + ", ".join(m.name for m in config.members) + f"), {config.cv.n_folds} folds",
        "n_train": len(splits.train), "texts_embedded_by_sequential_fit": embedded,
        "timings": timings, "members": members,
        "two_vs_one": round(timings["ray_1w"]["wall_s"] / timings["ray_2w"]["wall_s"], 3),
    }


def render(result: dict[str, Any]) -> str:
    """The markdown block of docs/scaleout.md (every number read from the result)."""
    lines = [f"Measured {result['measured']} on {result['cpus']} CPUs shared with other jobs (1-min load average per step below); Ray {result['ray']}."]
    p = result.get("predict")
    if p:
        n, small = p["n"], p["n"] // 10
        lines += [
            "",
            (f"**Batch prediction** of {n:,} synthetic tweets ({p['ensemble']}; Parquet in, {p['rows_per_shard']:,}-row shards; "
            f"Ray started once, {p['ray_init_s']:.1f} s, not counted):"),
            "",
            "| run | rows | wall s | rows/s | rows/s per busy worker | peak RSS per worker (MB) | load before/after |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in p["runs"].items():
            if name.startswith("ray"):
                busy = ", ".join(f"{w['rows_per_busy_s']:.0f}" for w in r["per_worker"])
                rss = ", ".join(f"{w['peak_rss_mb']:.0f}" for w in r["per_worker"])
                label = f"Ray, {r['workers']} single-threaded actor(s)"
            else:
                busy, rss, label = "-", f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "-", f"`predict` one process, {r['threads']} threads"
            lines.append(f"| {label} | {r['rows']:,} | {r['wall_s']:.1f} | {r['rows_per_s']:.0f} | {busy} | {rss} | {r['loadavg_before']:.1f}/{r['loadavg_after']:.1f} |")
        t = result["targets"]
        lines += [
            "",
            f"- 2 actors vs 1: **{p['two_vs_one']:.2f}x** wall ({p['two_vs_one_busy']:.2f}x in summed per-worker busy rates; target >= {t['two_vs_one_min']}x)"
            + (f"; walls of the {p['rounds']} rounds on {n:,} rows: 1 actor {p['runs'][f'ray_{n}_1w']['round_walls_s']} s, "
               f"2 actors {p['runs'][f'ray_{n}_2w']['round_walls_s']} s." if p.get("rounds", 1) > 1 else "."),
            (f"- Ray with 2 actors vs single-process `predict` with 2 threads: **{p['ray2_vs_local_wall']:.2f}x** its wall time "
             f"(target <= {t['ray_vs_local_max']:.2f}x). The single process with 1 thread took {p['runs'][f'local_{n}_1t']['wall_s']:.1f} s "
             f"and with 2 threads {p['runs'][f'local_{n}_2t']['wall_s']:.1f} s on {n:,} rows."),
            f"- Peak RSS per actor: {p['peak_rss_mb_per_worker'][str(small)]:.0f} MB at {small:,} rows, {p['peak_rss_mb_per_worker'][str(n)]:.0f} MB at {n:,} rows (an actor holds one shard).",
            (f"- Planning shards of a {p['csv_planning']['csv_mb']:.0f} MB CSV ({p['csv_planning']['shards']} shards): {p['csv_planning']['seconds']:.2f} s "
            f"({p['csv_planning']['mb_per_s']:.0f} MB/s, one streaming pass in the driver, best of 3)."),
            f"- Ray output equals the single-process output: {p['ray_equals_local']}; equals in-process `EmotionEnsemble.predict` on a sample: {p['ray_equals_in_process_sample']}.",
        ]
    f = result.get("fit")
    if f:
        cache = "warm" if f["texts_embedded_by_sequential_fit"] == 0 else f"filled by the sequential fit ({f['texts_embedded_by_sequential_fit']:,} texts embedded)"
        lines += ["", f"**`fit --engine ray`**, {f['config']}, {f['n_train']:,} Kaggle train tweets; embedding cache {cache}, then warm for the Ray fits:", ""]
        lines += ["| fit | wall s | load before/after |", "|---|---|---|"]
        for name, tm in f["timings"].items():
            lines.append(f"| {name.replace('_', ' ')} | {tm['wall_s']:.1f} | {tm['loadavg_before']:.1f}/{tm['loadavg_after']:.1f} |")
        same = all(v["bitwise_equal"] for m in f["members"].values() for v in m.values())
        worst = max(v["max_abs_diff"] for m in f["members"].values() for v in m.values())
        lines += ["", f"- `oof.npy` of every member vs the sequential fit: bitwise equal {same}; largest difference {worst:.2g}.",
                  f"- 2 workers vs 1: {f['two_vs_one']:.2f}x."]
    return "\n".join(lines)


def render_plan(result: dict[str, Any], n_plan: int = 10_000_000, gpus: int = 8) -> str:
    """The 10M-tweets / 8-GPU plan, its arithmetic done on measured rates (this file's and the other benchmarks')."""
    p = result.get("predict")
    if not p:
        return ""
    results = RESULTS.parent
    speed = json.loads((results / "speed.json").read_text()) if (results / "speed.json").is_file() else None
    gpu = json.loads((results / "gpu_check_h200.json").read_text()) if (results / "gpu_check_h200.json").is_file() else None
    two = p["runs"][f"ray_{p['n']}_2w"]
    overhead = 1 - sum(w["busy_s"] for w in two["per_worker"]) / (two["wall_s"] * len(two["per_worker"]))
    plan = p["csv_planning"]
    mb_per_row = plan["csv_mb"] / p["n"]
    shards = -(-n_plan // 20_000)
    lines = [
        f"Arithmetic on measured rates (rendered by `python -m benchmarks.scaleout --render-only`); {n_plan:,} tweets, {gpus} GPUs.",
        "",
        (f"1. **Driver** (one CPU process, the node that runs `predict --engine ray --address auto`): plans {shards:,} shards of 20,000 rows. "
        f"A CSV of {n_plan:,} tweets like the synthetic ones is about {mb_per_row * n_plan / 1024:.1f} GB; at the measured "
        f"{plan['mb_per_s']:.0f} MB/s planning takes about {mb_per_row * n_plan / plan['mb_per_s'] / 60:.1f} min (Parquet input: "
        "row counts from the footer, no pass). It then only streams shard descriptions and collects one small record per shard."),
        (f"2. **Actors**: one per GPU (`--num-gpus 1`: {gpus} actors), each loading the ensemble once. Engine cost measured here: "
        f"with 2 actors, {100 * overhead:.0f}% of actor wall time was spent outside scoring (start, ensemble load, shard read/write), on "
        f"{p['n']:,} rows; it is per actor and per shard, so it shrinks as shards are scored more slowly on bigger models."),
    ]
    n_train = result.get("fit", {}).get("n_train", 7724)
    if gpu:
        frozen = gpu["synthetic"]["frozen"]["embed_texts_per_second_lower_bound"]
        qlora = gpu["synthetic"]["qlora_batch_128"]["embed_texts_per_second_lower_bound"]
        train = gpu["synthetic"]["qlora_batch_128"]["train_texts_per_second_lower_bound"]
        peak = gpu["synthetic"]["frozen"]["embed_peak_gib"]
        lines += [
            (f"3. **7B members on the GPUs** (H200 rates from `benchmarks/results/gpu_check_h200.json`, 32-layer lower bounds): a frozen 7B "
            f"embedding at >= {frozen:.0f} tweets/s per GPU is {n_plan / (gpus * frozen) / 60:.0f} min for {n_plan:,} tweets on {gpus} GPUs; "
            f"a QLoRA fine-tuned 7B at >= {qlora:.0f} tweets/s per GPU is {n_plan / (gpus * qlora) / 60:.0f} min per model pass. A fine-tuned "
            f"member cross-fitted with K folds runs K models per tweet, so ship the refitted ensemble (`ensemble_full`, one model per member): "
            f"with K = 5 the same member would take {5 * n_plan / (gpus * qlora) / 3600:.1f} h. Peak GPU memory of the frozen 7B embedding "
            f"(estimated for 32 layers from {'/'.join(map(str, gpu['synthetic']['frozen']['from_layers']))}-layer runs) was {peak:.0f} GiB per GPU."),
            (f"4. **Fitting on the same {gpus} GPUs**: `fit --engine ray` puts each fold on its own GPU (K = 5 folds: 5 GPUs busy, no "
            f"communication); QLoRA trained at >= {train:.0f} tweets/s per H200 (batch 128), so a fold of 3 epochs (the default) over 80% of "
            f"{n_train:,} Kaggle train tweets takes about {0.8 * n_train * 3 / train / 60:.1f} min. DDP (`torchrun --nproc_per_node={gpus}`) is for one "
            "fine-tune too long for one GPU (a large training set): its measured property here is equality of the loss curve, not speed."),
        ]
    if speed:
        cpu_rate = speed["predict"]["no_cache"]["tweets_per_s"]
        threads = speed["predict"]["no_cache"]["torch_threads"]
        lines.append(
            f"5. **Without GPUs**: the default CPU ensemble (TF-IDF, MiniLM, mpnet) scored {cpu_rate:.1f} tweets/s with {threads} threads "
            f"(`benchmarks/results/speed.json`); at that rate per {threads} cores, {n_plan:,} tweets need "
            f"{n_plan / cpu_rate / 3600:.0f} hours of a {threads}-core worker, e.g. {n_plan / cpu_rate / 3600 / 32:.1f} h on 32 such actors."
        )
    lines.append(
        f"6. **Memory and restarts**: an actor holds one shard (peak RSS with the TF-IDF ensemble: "
        f"{p['peak_rss_mb_per_worker'][str(p['n'] // 10)]:.0f} MB at {p['n'] // 10:,} rows, {p['peak_rss_mb_per_worker'][str(p['n'])]:.0f} MB "
        f"at {p['n']:,} rows), so its memory is the model plus one shard whatever the input size; a lost node costs its shards in "
        "flight, and a rerun of the same command skips every finished shard."
    )
    return "\n".join(lines)


def write_doc(block: str, doc: Path = DOC, *, begin: str = BEGIN, end: str = END) -> None:
    text = doc.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise SystemExit(f"{doc} lacks the markers {begin} / {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{block}\n{end}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("predict", "fit"), help="measure one part (the other is kept from --out)")
    parser.add_argument("--n", type=int, default=200_000, help="synthetic tweets to predict")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the 1- and 2-actor runs on --n rows (fastest kept)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "kaggle-emotion", help="data folder for the fit part")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true", help="re-render docs/scaleout.md from --out")
    args = parser.parse_args(argv)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if not args.render_only:
        import ray

        result.update({"measured": time.strftime("%Y-%m-%d", time.gmtime()), "cpus": os.cpu_count(), "ray": ray.__version__, "targets": TARGETS})
        with tempfile.TemporaryDirectory(prefix="scaleout-") as tmp:
            if args.only in (None, "predict"):
                result["predict"] = measure_predict(args.n, Path(tmp) / "predict", args.rounds)
            if args.only in (None, "fit"):
                result["fit"] = measure_fit(Path(tmp) / "fit", args.data)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    write_doc(render(result))
    write_doc(render_plan(result), begin=PLAN_BEGIN, end=PLAN_END)
    print(render(result))
    print(render_plan(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
