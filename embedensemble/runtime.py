"""One process-wide thread policy for every compute path.

Every path that computes (the torch :class:`~embedensemble.backbones.Encoder`, the ONNX student,
``python -m embedensemble.predict``, the HTTP service and Ray actors) asks :func:`default_num_threads`
for its thread count, so they all follow one rule:

1. ``$EMBEDENSEMBLE_NUM_THREADS`` when set;
2. else the base count (torch's own count for torch paths; ``$OMP_NUM_THREADS``, which
   ``predict --threads`` sets, for torch-free paths; else the usable CPUs), capped at the usable CPUs;
3. one thread when the machine is oversubscribed (1-min load average >= CPUs + threads): OpenMP
   barriers then stall on descheduled peers, which made small-batch forward passes ~20x slower than
   single-threaded ones on a shared 2-core machine.

Nothing here imports torch: TF-IDF and ONNX-only ensembles never load it.
"""

from __future__ import annotations

import os
import sys

from ._logging import get_logger
from .errors import ConfigError

logger = get_logger(__name__)

THREADS_ENV = "EMBEDENSEMBLE_NUM_THREADS"
_threads: int | None = None
_policy_set = False


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _positive_env(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def default_num_threads(base: int | None = None) -> int:
    """Threads for one computation by the module's rule; ``base``: the engine's own default count."""
    wanted = _positive_env(THREADS_ENV)
    if wanted:
        return wanted
    available = usable_cpus()
    base = base or _positive_env("OMP_NUM_THREADS") or available
    threads = max(1, min(base, available))
    if threads > 1 and hasattr(os, "getloadavg") and os.getloadavg()[0] >= available + threads:
        logger.debug("load average %.1f exceeds %d CPUs: 1 thread", os.getloadavg()[0], available)
        return 1
    return threads


def set_thread_policy(threads: int | None = None) -> int | None:
    """Fix torch's intra-op thread count once for this process; returns it (``None``: torch's default, untouched).

    torch is not imported for this: when it is not loaded yet (TF-IDF or ONNX-only ensembles never
    load it), ``threads`` goes to ``$OMP_NUM_THREADS``, which torch reads when a member first imports
    it. Later calls keep the first choice instead of resizing the pool under running work.
    """
    global _threads, _policy_set
    if _policy_set:
        return _threads
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    _threads = threads or _positive_env("OMP_NUM_THREADS")
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if _threads is not None:
            torch.set_num_threads(_threads)
        _threads = torch.get_num_threads()
    elif _threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(_threads)
    _policy_set = True
    logger.debug("intra-op threads: %s", _threads or "torch's default")
    return _threads
