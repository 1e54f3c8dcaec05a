"""One process at a time per run folder: ``fit`` and ``stack`` hold an exclusive lock on it.

A second ``fit`` (or ``stack``) of the same run waits for the first to finish instead of writing
the same files at the same time; it then finds the finished members and reuses them. The lock
is an ``fcntl.flock`` on ``<run>/.lock``, released by the kernel when its process dies, so a
killed process never leaves a run locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ._logging import get_logger
from .run_folder import RunFolder

logger = get_logger(__name__)


@contextlib.contextmanager
def run_lock(run: RunFolder) -> Iterator[None]:
    """Hold the run folder's lock (waiting for another process that holds it)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one process per run is then the user's to ensure
        yield
        return
    run.path.mkdir(parents=True, exist_ok=True)
    fd = os.open(run.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("run folder %s is in use by another process; waiting for it to finish", run.path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
