"""Batch prediction on Ray Data: ``python -m embedensemble.predict --engine ray --input PATH --output DIR``.

The input (a CSV/JSONL/Parquet file, or a folder of them) is cut into deterministic shards of
``rows_per_shard`` rows (:mod:`.shards`). Ray Data streams the shards' descriptions through
``map_batches`` with an actor pool: each actor loads the ensemble once (on a GPU when
``num_gpus`` > 0), reads only its shard, scores it ``batch_size`` rows at a time and writes
``DIR/<shard>.parquet`` (atomically) then the shard's done marker ``DIR/<shard>.done.json``.
A worker therefore holds one shard at a time, whatever the input size.

Output folder: ``_plan.json`` (the shards, the input files' sizes and times, the ensemble's
manifest digest, the options), one Parquet file per shard (ID column when the input has one, then
0/1 or probabilities per emotion, rows in input order), their done markers, and ``_SUCCESS.json``
when every shard is written. Reading ``DIR/part-*.parquet`` in name order gives the input order.

A rerun with the same input, ensemble and options (``resume=True``) skips every shard whose
marker and Parquet file exist, so a crashed job loses at most the shards in flight; a changed
input, ensemble or option is refused rather than mixed into old output (``resume=False`` starts
the folder afresh). On a cluster (``address``), the input, the ensemble and the output folder
must be at the same path on every node (a shared file system).
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import errors
from .._logging import get_logger
from ..data import TEXT_COLUMN
from ..errors import ArtifactError, ConfigError, EmbedEnsembleError
from ..fileio import read_json, sha256_file, write_json
from .shards import Shard, input_signature, plan_shards, read_shard

logger = get_logger(__name__)

PLAN_FILE = "_plan.json"
SUCCESS_FILE = "_SUCCESS.json"
PLAN_FORMAT = 1
DEFAULT_ROWS_PER_SHARD = 20_000
DEFAULT_BATCH_SIZE = 1000


@dataclass
class RayPredictResult:
    """What a call did: shards written now and skipped (already done), rows written now, per-shard stats."""

    output_dir: Path
    shards_total: int
    shards_written: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)
    rows_written: int = 0
    seconds: float = 0.0
    workers: int = 0
    shard_stats: list[dict] = field(default_factory=list)


def shard_paths(output_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """The Parquet file and the done marker of shard ``name``."""
    output_dir = Path(output_dir)
    return output_dir / f"{name}.parquet", output_dir / f"{name}.done.json"


def shard_is_done(output_dir: str | os.PathLike, name: str) -> bool:
    parquet, marker = shard_paths(output_dir, name)
    return parquet.is_file() and marker.is_file()


class ShardPredictor:
    """A Ray Data actor: loads the ensemble once, then scores and writes whole shards."""

    def __init__(
        self,
        ensemble_dir: str,
        output_dir: str,
        *,
        text_column: str,
        id_column: str | None,
        proba: bool,
        batch_size: int,
        threads: int,
        device: str | None,
        use_cache: bool,
        cache_dir: str | None,
    ) -> None:
        from ..ensemble import load_ensemble

        self.ensemble = load_ensemble(ensemble_dir, use_cache=use_cache, cache_dir=cache_dir, device=device, threads=threads)
        self.output_dir = Path(output_dir)
        self.text_column, self.id_column = text_column, id_column
        self.proba, self.batch_size = proba, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        stats = []
        for item in batch["shard"]:
            shard = Shard(**json.loads(str(item)))
            try:
                stats.append({**self.predict_shard(shard), "error": ""})
            except EmbedEnsembleError as exc:
                # Sent back as data: Ray keeps only the text of a worker's exception, and the
                # driver re-raises it as the same class with the same file/row/column.
                error = {"type": type(exc).__name__, "message": str(exc), **{k: getattr(exc, k, None) for k in ("file", "row", "column")}}
                stats.append({"shard": shard.name, "rows": 0, "seconds": 0.0, "pid": os.getpid(), "peak_rss_mb": 0.0, "error": json.dumps(error)})
        return {key: np.array([s[key] for s in stats]) for key in stats[0]}

    def predict_shard(self, shard: Shard) -> dict:
        from ..text_io import PredictionWriter

        started = time.perf_counter()
        texts, ids = read_shard(shard, text_column=self.text_column, id_column=self.id_column)
        parquet, marker = shard_paths(self.output_dir, shard.name)
        with PredictionWriter(parquet, fmt="parquet", id_column=self.id_column, proba=self.proba) as writer:
            for start in range(0, len(texts), self.batch_size):
                chunk = texts[start : start + self.batch_size]
                scores = self.ensemble.predict_proba(chunk) if self.proba else self.ensemble.predict(chunk)
                writer.write(scores.to_numpy(), ids[start : start + self.batch_size] if ids is not None else None)
        stats = {
            "shard": shard.name,
            "rows": len(texts),
            "seconds": round(time.perf_counter() - started, 3),
            "pid": os.getpid(),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        write_json(marker, stats)  # last: its presence says the Parquet file is complete
        return stats


def predict_with_ray(
    ensemble_dir: str | os.PathLike,
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    text_column: str = TEXT_COLUMN,
    id_column: str | None = None,
    proba: bool = False,
    address: str | None = None,
    num_workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_gpus: float = 0,
    resume: bool = True,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    cpus_per_worker: float = 1,
    use_cache: bool = False,
    cache_dir: str | None = None,
) -> RayPredictResult:
    """Score every row of ``input_path`` with the ensemble in ``ensemble_dir``; Parquet shards in ``output_dir``.

    ``num_workers``: actors (default: as many as the cluster's CPUs / ``cpus_per_worker``, or GPUs /
    ``num_gpus``, and no more than the shards left). ``num_gpus`` per actor (e.g. 1, or 0.5 to put
    two actors on a GPU). ``id_column=None`` keeps an ``ID`` column when the input has one.
    ``address``: a Ray cluster (``auto``, ``ray://host:10001``); default: join the Ray instance this
    process already runs, else start a local one (shut down on return).
    """
    from .ray_fit import import_ray

    ray = import_ray()
    if batch_size < 1 or rows_per_shard < 1:
        raise ConfigError(f"batch_size and rows_per_shard must be at least 1, got {batch_size} and {rows_per_shard}")
    if num_workers is not None and num_workers < 1:
        raise ConfigError(f"num_workers must be at least 1, got {num_workers}")
    if cpus_per_worker <= 0 or num_gpus < 0:
        raise ConfigError(f"cpus_per_worker must be > 0 and num_gpus >= 0, got {cpus_per_worker} and {num_gpus}")
    started = time.perf_counter()
    ensemble_dir, output_dir = Path(ensemble_dir).resolve(), Path(output_dir).resolve()
    if not (ensemble_dir / "manifest.json").is_file():
        raise ArtifactError(f"{ensemble_dir} is not a saved ensemble (no manifest.json)")
    options = {"text_column": text_column, "id_column": id_column, "proba": proba, "rows_per_shard": rows_per_shard}
    shards = _plan(ensemble_dir, Path(input_path), output_dir, options, resume)
    pending = [s for s in shards if not shard_is_done(output_dir, s.name)]
    result = RayPredictResult(output_dir, len(shards), shards_skipped=[s.name for s in shards if s not in pending])
    if result.shards_skipped:
        logger.info("%d of %d shards already done in %s; predicting the other %d", len(result.shards_skipped), len(shards), output_dir, len(pending))
    if pending:
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        elif address:
            logger.warning("Ray is already initialised in this process; --address %s is ignored", address)
        try:
            result.workers = _worker_count(ray.cluster_resources(), num_workers, cpus_per_worker, num_gpus, len(pending))
            constructor = {
                "ensemble_dir": str(ensemble_dir), "output_dir": str(output_dir), "text_column": text_column, "id_column": id_column,
                "proba": proba, "batch_size": batch_size, "threads": max(1, int(cpus_per_worker)),
                "device": "cuda" if num_gpus > 0 else None, "use_cache": use_cache, "cache_dir": cache_dir,
            }
            for stats in _run(ray, pending, constructor, result.workers, cpus_per_worker, num_gpus):
                result.shards_written.append(stats["shard"])
                result.rows_written += stats["rows"]
                result.shard_stats.append(stats)
                logger.info("shard %s: %d rows in %.1fs (%d/%d)", stats["shard"], stats["rows"], stats["seconds"], len(result.shards_written), len(pending))
        finally:
            if started_here:
                ray.shutdown()
    missing = [s.name for s in shards if not shard_is_done(output_dir, s.name)]
    if missing:
        raise ArtifactError(f"{len(missing)} shard(s) were not written, e.g. {missing[:3]}; rerun to finish them")
    result.seconds = time.perf_counter() - started
    write_json(output_dir / SUCCESS_FILE, {"shards": len(shards), "rows": sum(s.n_rows for s in shards)})
    return result


def _run(ray, pending: list[Shard], constructor: dict, workers: int, cpus_per_worker: float, num_gpus: float):
    """Stream the pending shards through an actor pool; yield each shard's stats as it completes."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    items = [{"shard": json.dumps(s.to_dict())} for s in pending]
    # One block per shard: an actor takes one shard at a time, so shards spread evenly over actors.
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardPredictor,
        fn_constructor_kwargs=constructor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        num_gpus=num_gpus or None,
    )
    for row in dataset.iter_rows():
        stats = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        if stats.pop("error"):
            raise _rebuild_error(json.loads(row["error"]))
        yield stats


def _rebuild_error(error: dict) -> EmbedEnsembleError:
    """A worker's embedensemble error, raised again in the driver (a DataError names file, row and column)."""
    klass = getattr(errors, error["type"], None)
    if klass is errors.DataError:
        message = error["message"].split(": ", 1)[1] if any(error[k] is not None for k in ("file", "row", "column")) else error["message"]
        return errors.DataError(message, file=error["file"], row=error["row"], column=error["column"])
    if isinstance(klass, type) and issubclass(klass, EmbedEnsembleError):
        return klass(error["message"])
    return EmbedEnsembleError(error["message"])


def _worker_count(resources: dict, requested: int | None, cpus_per_worker: float, num_gpus: float, pending: int) -> int:
    """Actors to start: ``requested`` or what the cluster holds now, at most one per pending shard."""
    gpus, cpus = resources.get("GPU", 0), resources.get("CPU", 1)
    if num_gpus > 0 and gpus < num_gpus:
        raise ConfigError(f"num_gpus={num_gpus} per worker, but the Ray cluster has {gpus} GPU(s)")
    capacity = max(1, int(gpus // num_gpus) if num_gpus > 0 else int(cpus // cpus_per_worker))
    if requested is not None and requested > capacity:
        # Actors that can never be placed would leave the pool waiting; an autoscaling cluster
        # that grows later is not seen here, so say what happened.
        logger.warning("%d workers requested, but the cluster fits %d now (%s CPU, %s GPU); starting %d", requested, capacity, cpus, gpus, capacity)
    return max(1, min(requested or capacity, capacity, pending))


def _plan(ensemble_dir: Path, input_path: Path, output_dir: Path, options: dict, resume: bool) -> list[Shard]:
    """The shards to write: the saved plan when it matches this call, else a new one (or a refusal)."""
    identity = {
        "format": PLAN_FORMAT,
        "ensemble_manifest_sha256": sha256_file(ensemble_dir / "manifest.json"),
        "inputs": input_signature(input_path),
        "options": options,
    }
    plan_file = output_dir / PLAN_FILE
    if plan_file.is_file():
        saved = read_json(plan_file)
        changed = [key for key in identity if saved.get(key) != identity[key]]
        if resume and not changed:
            for partial in output_dir.glob(".part-*.tmp"):  # a shard being written when the last run died
                partial.unlink(missing_ok=True)
            return [Shard(**s) for s in saved["shards"]]
        if resume:
            raise ArtifactError(
                f"{output_dir} holds predictions made with a different {', '.join(changed)}; "
                "pass another output folder, or resume=False (--no-resume) to start it afresh"
            )
        _clear(output_dir)
    elif output_dir.is_dir() and any(output_dir.iterdir()):
        raise ArtifactError(f"{output_dir} is not empty and holds no {PLAN_FILE}: give an empty or new output folder")
    shards = plan_shards(input_path, options["rows_per_shard"])
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(plan_file, {**identity, "shards": [s.to_dict() for s in shards]})
    logger.info("planned %d shard(s) of up to %d rows from %s", len(shards), options["rows_per_shard"], input_path)
    return shards


def _clear(output_dir: Path) -> None:
    """Remove this module's files from a previous prediction (and nothing else)."""
    for path in output_dir.iterdir():
        ours = path.name.startswith(("part-", ".part-")) and path.name.endswith((".parquet", ".done.json", ".tmp"))
        if path.name in (PLAN_FILE, SUCCESS_FILE) or ours:
            path.unlink()
