"""Benchmarks of embedensemble: ``python -m benchmarks.run [--quick] [--sections ...]``.

Each section writes ``<out>/<section>.json`` (with the machine it ran on); ``benchmarks.readme``
renders the JSON files into the README's results block. This module holds the helpers the
sections share: machine description, timers, peak-memory sampling and result writing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SECTIONS = ("quality", "cv", "speed", "finetune")

logger = logging.getLogger("benchmarks")


def setup_logging(quick: bool) -> None:
    """INFO for ``benchmarks``; the library's own handler at INFO (WARNING in quick runs); nothing printed twice."""
    from embedensemble._logging import set_verbosity

    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    set_verbosity("WARNING" if quick else "INFO")
    logging.getLogger("embedensemble").propagate = False


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def update_section(out: Path, doc: Path, section: str | None, measure: Callable[[], dict[str, Any]] | None,
                   render: Callable[[dict[str, Any]], str]) -> None:
    """Store ``measure()`` as ``section`` of the results JSON ``out`` (other sections kept; stamped with the
    time and machine), then render the whole JSON into ``doc``. ``measure=None``: only render."""
    from embedensemble.fileio import read_json, write_json

    result: dict[str, Any] = read_json(out) if out.is_file() else {}
    if measure is not None and section is not None:
        result[section] = measure()
        result.update({"created": now_iso(), "machine": machine_info()})
        write_json(out, result)
    doc.write_text(render(read_json(out) if out.is_file() else result), encoding="utf-8")  # as stored: keys sorted
    logger.info("wrote %s", doc)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bf16 features (Linux ``/proc/cpuinfo`` flags): without them bf16 autocast is slow."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile"))


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, OS, library versions, git commit and load average (the machine may be shared)."""
    import importlib.metadata

    import psutil

    versions = {}
    for name in ("torch", "transformers", "sentence-transformers", "scikit-learn", "lightgbm", "numpy", "onnxruntime", "onnx", "optimum"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cpu": _cpu_model(),
        "cpu_bf16_flags": cpu_bf16_flags(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(dirty) if dirty is not None else None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": now_iso(),
    }


def library_threads() -> int:
    """Torch threads the library's encoder would use now (its load-aware policy)."""
    from embedensemble.backbones import default_num_threads

    return int(default_num_threads())


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def max_rss_mb() -> float:
    """Peak resident memory of this process: ``VmHWM`` (reset by exec), else ``ru_maxrss``.

    On Linux ``ru_maxrss`` survives fork + exec, so a child started by a big parent would report
    the parent's size; ``VmHWM`` belongs to the child's own address space.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak_mb`` is the peak seen inside the ``with`` block."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self.peak_mb = rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = round(max(self.peak_mb, rss_mb()), 1)


@dataclass
class Section:
    """Collects one section's result; ``finish`` stamps times and writes ``<out>/<name>.json``."""

    name: str
    out: Path
    quick: bool
    result: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        import torch

        self.result.update(section=self.name, quick=self.quick, machine=machine_info(), started=now_iso(), timings={},
                           torch_threads=torch.get_num_threads())

    def time(self, key: str) -> _Timer:
        return _Timer(self.result["timings"], key)

    def finish(self) -> Path:
        from embedensemble.fileio import write_json

        self.result["finished"] = now_iso()
        self.result["wall_seconds"] = round(time.perf_counter() - self.started, 1)
        self.result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        self.result["process_peak_rss_mb"] = round(max_rss_mb(), 1)
        path = write_json(self.out / f"{self.name}.json", self.result)
        logger.info("%s: wrote %s (%.0fs)", self.name, path, self.result["wall_seconds"])
        return path


class _Timer:
    def __init__(self, store: dict[str, float], key: str) -> None:
        self.store, self.key = store, key

    def __enter__(self) -> _Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.store[self.key] = round(self.seconds, 2)


@contextlib.contextmanager
def count_cache_hits() -> Iterator[dict[str, int]]:
    """Embedding-cache hits and misses in this process inside the ``with`` block, over every cache object.

    The dict is filled when the block ends.
    """
    from embedensemble.cache import cache_counters

    stats = {"hits": 0, "misses": 0}
    before = cache_counters()
    try:
        yield stats
    finally:
        after = cache_counters()
        stats.update({key: after[key] - before[key] for key in stats})


def with_threads(n: int, fn: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """``fn`` run with ``n`` torch threads (restored afterwards)."""

    def call(texts: list[str]) -> Any:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn(texts)
        finally:
            torch.set_num_threads(before)

    return call
