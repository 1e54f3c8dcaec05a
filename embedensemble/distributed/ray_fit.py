"""Cross-fitting on Ray: ``python -m embedensemble.fit --engine ray [--address ...] [--num-workers N]``.

Every fold of every member is an independent job, so each runs as a Ray task that fits the fold
exactly as the sequential path does (:func:`embedensemble.cv.fit_fold`: same model, same seed,
same ``fold_<k>/`` folder with its ``DONE`` marker). When a member's folds are done the driver
gathers them with :func:`embedensemble.fitting.fit_member`, which finds every fold finished with
the same inputs and only averages and writes ``oof.npy``/``test.npy``/``member.json`` — so the run
folder is the one a sequential ``fit`` writes, and ``oof.npy`` the same array.

Order and resources:

* A member that reads other members (``MemberConfig.requires``, e.g. a head on
  ``finetuned:<source>`` features) starts only after its sources are gathered, and runs as one
  task (its kind first prepares what it reads from the sources, then its folds in sequence).
* A fine-tuning fold (kind ``*-finetune``) asks Ray for one GPU when the cluster has GPUs; other
  tasks ask for ``cpus_per_task`` CPUs (Ray then sets ``OMP_NUM_THREADS`` to match).
* At most ``num_workers`` tasks are in flight (default: as many as the cluster runs at once).

Tasks of members on the same backbone share the embedding cache folder (``cache_dir``): its
shards have unique names and a meta file written last, so processes never write the same file;
the first tasks to need a text may each compute it once. On a cluster, the run folder and the
cache must be on a file system every node sees at the same path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._logging import get_logger
from ..config import EnsembleConfig, MemberConfig
from ..context import MemberContext
from ..data import Corpus
from ..errors import ConfigError, EmbedEnsembleError
from ..fileio import texts_digest
from ..run_folder import MemberFolder, RunFolder, read_fold_done

logger = get_logger(__name__)


def import_ray():
    """Ray, or a clear message saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray, which is not installed: pip install embedensemble[ray]") from None
    return ray


def is_finetune(member: MemberConfig) -> bool:
    return member.kind.endswith("finetune")


def _context(config: EnsembleConfig) -> MemberContext:
    return MemberContext(cache_dir=config.cache_dir, seed=config.seed, device=config.device)


def _import_plugins(plugins: Sequence[str]) -> None:
    """Modules that register member kinds (``register_member``) must be imported in each worker too."""
    import importlib

    for name in plugins:
        importlib.import_module(name)


def fit_fold_task(
    member: MemberConfig, config: EnsembleConfig, train: Corpus, folds: np.ndarray, k: int, member_dir: str,
    predict_on: dict[str, list[str]], fold_inputs: dict, plugins: Sequence[str] = (),
) -> dict:
    """Fit fold ``k`` of ``member`` into ``member_dir/fold_<k>`` (unless done with the same inputs)."""
    from ..cv import fit_fold

    _import_plugins(plugins)
    started = time.perf_counter()
    folder = MemberFolder(member_dir)
    done = read_fold_done(folder.fold_dir(k))
    if done is None or done.get("inputs") != fold_inputs:
        fit_fold(member, train, folds, k, folder, predict_on, _context(config), fold_inputs)
    return {"member": member.name, "fold": k, "pid": os.getpid(), "seconds": time.perf_counter() - started}


def fit_member_task(
    member: MemberConfig, config: EnsembleConfig, train: Corpus, run_dir: str, splits: dict[str, list[str]], plugins: Sequence[str] = ()
) -> dict:
    """Fit a member that reads other members, whole (its sources are gathered already)."""
    from ..fitting import fit_member

    _import_plugins(plugins)
    started = time.perf_counter()
    fit_member(member, config, train, RunFolder(run_dir), splits, _context(config))
    return {"member": member.name, "fold": None, "pid": os.getpid(), "seconds": time.perf_counter() - started}


def fit_members_ray(
    config: EnsembleConfig,
    train: Corpus,
    run_dir: str | os.PathLike,
    *,
    test: Corpus | None = None,
    eval: Corpus | None = None,
    data_info: dict | None = None,
    address: str | None = None,
    num_workers: int | None = None,
    cpus_per_task: float = 1,
    plugins: Sequence[str] = (),
) -> Path:
    """:func:`embedensemble.fitting.fit_members` with folds and members as Ray tasks; the same run folder.

    ``address``: a Ray cluster; default: the Ray instance this process runs, else a local one
    (shut down on return). ``plugins``: modules to import in every worker (custom member kinds).
    """
    ray = import_ray()
    from ..fitting import fit_member, member_inputs, start_run
    from ..locking import run_lock
    from ..members.base import check_requirements

    if num_workers is not None and num_workers < 1:
        raise ConfigError(f"num_workers must be at least 1, got {num_workers}")
    check_requirements(config)
    run = RunFolder(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    started_here = not ray.is_initialized()
    with run_lock(run):
        start_run(config, train, run, test, eval, data_info or {})
        splits = {name: corpus.texts for name, corpus in (("test", test), ("eval", eval)) if corpus is not None}
        if started_here:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        try:
            scheduler = _Scheduler(ray, config, train, run, splits, num_workers, cpus_per_task, plugins)
            scheduler.run(lambda member: fit_member(member, config, train, run, splits, _context(config)), member_inputs)
        finally:
            if started_here:
                ray.shutdown()
    logger.info("all %d members fitted in %s (Ray)", len(config.members), run.path)
    return run.path


class _Scheduler:
    """Submits fold and member tasks as their sources allow, at most ``limit`` in flight; gathers members."""

    def __init__(self, ray, config, train, run: RunFolder, splits, num_workers, cpus_per_task, plugins) -> None:
        self.ray, self.config, self.run_folder, self.splits = ray, config, run, splits
        self.cpus, self.plugins = cpus_per_task, tuple(plugins)
        resources = ray.cluster_resources()
        self.gpus = resources.get("GPU", 0) > 0
        self.limit = num_workers or max(1, int(resources.get("CPU", 1) // cpus_per_task))
        self.train = train
        self.train_ref = ray.put(train)  # one copy in the object store for every task
        self.fold_remote = ray.remote(fit_fold_task)
        self.member_remote = ray.remote(fit_member_task)
        self.stats: list[dict] = []

    def _options(self, member: MemberConfig) -> dict:
        if is_finetune(member) and self.gpus:
            return {"num_gpus": 1, "num_cpus": self.cpus}
        return {"num_cpus": self.cpus}

    def _jobs(self, member: MemberConfig, member_inputs) -> list[tuple]:
        """(remote function, args) of each job of ``member``: its folds, or the whole member."""
        if member.requires:
            return [(self.member_remote, (member, self.config, self.train_ref, str(self.run_folder.path), self.splits, self.plugins))]
        mode = member.cv or self.config.cv.mode
        folds = self.run_folder.folds(mode)
        _discard_if_config_changed(self.run_folder.member(member.name), member, mode)
        # What cross_fit records in each fold's DONE marker, so the gather reuses every fold.
        fold_inputs = {**member_inputs(self.train, folds), "splits": {s: texts_digest(t) for s, t in sorted(self.splits.items())}}
        folder = self.run_folder.member(member.name)
        todo = [k for k in range(int(folds.max()) + 1) if (read_fold_done(folder.fold_dir(k)) or {}).get("inputs") != fold_inputs]
        args = (member, self.config, self.train_ref, folds)
        return [(self.fold_remote, (*args, k, str(folder.path), self.splits, fold_inputs, self.plugins)) for k in todo]

    def run(self, gather, member_inputs) -> None:
        ray = self.ray
        waiting = list(self.config.members)  # members whose jobs are not submitted yet
        gathered: set[str] = set()
        queue: list[tuple[MemberConfig, object, tuple]] = []
        in_flight: dict = {}  # object ref -> member
        open_jobs: dict[str, int] = {}
        while waiting or queue or in_flight:
            unblocked = [m for m in waiting if set(m.requires) <= gathered]
            for member in unblocked:
                waiting.remove(member)
                jobs = self._jobs(member, member_inputs)
                if not jobs:  # every fold is done already (a rerun): gather at once
                    gather(member)
                    gathered.add(member.name)
                    continue
                open_jobs[member.name] = len(jobs)
                queue += [(member, remote, args) for remote, args in jobs]
            if unblocked and not (queue or in_flight):
                continue  # all gathered at once: members that read them may be unblocked now
            while queue and len(in_flight) < self.limit:
                member, remote, args = queue.pop(0)
                in_flight[remote.options(**self._options(member)).remote(*args)] = member
            if not in_flight:
                raise ConfigError(f"members {[m.name for m in waiting]} read members that never finish")
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            member = in_flight.pop(ready[0])
            try:
                self.stats.append(ray.get(ready[0]))
            except ray.exceptions.RayTaskError as exc:  # the worker's own error, not Ray's wrapper
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, EmbedEnsembleError) else exc) from None
            open_jobs[member.name] -= 1
            if open_jobs[member.name] == 0:
                if not member.requires:
                    gather(member)  # every fold is done: averages and member.json only
                gathered.add(member.name)
                logger.info("member %s done (Ray)", member.name)


def _discard_if_config_changed(folder, member: MemberConfig, mode: str) -> None:
    """What ``fit_member`` does before fitting: a member fitted with another config starts afresh."""
    import dataclasses
    import shutil

    status = folder.status()
    if status is not None and (status.get("config") != dataclasses.asdict(member) or status.get("cv_mode") != mode):
        logger.info("member %s changed since the last fit; refitting it", member.name)
        shutil.rmtree(folder.path)
