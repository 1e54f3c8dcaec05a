"""Logging and progress bars behind one switch.

Every module calls ``get_logger(__name__)``. Progress bars follow sentence-transformers'
rule: ``show_progress_bar=None`` means "show when the package logger is at INFO or DEBUG",
with one more condition: bars are drawn only when stderr is a terminal. Written to a log file
or a pipe, nested bars (members, folds, batches) would each write hundreds of lines; there
:func:`progress` logs one INFO line per loop at most every ``PROGRESS_LOG_SECONDS`` instead
(loops shorter than that log nothing).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
_ROOT = "embedensemble"


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")


def set_verbosity(level: int | str) -> None:
    """Set the package log level (e.g. ``logging.INFO`` or ``"WARNING"``)."""
    logger = logging.getLogger(_ROOT)
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)


PROGRESS_LOG_SECONDS = 30.0


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_enabled(show_progress_bar: bool | None = None) -> bool:
    """Whether to draw a bar: as asked, else when the package logs at INFO and stderr is a terminal."""
    if show_progress_bar is not None:
        return show_progress_bar
    return logging.getLogger(_ROOT).getEffectiveLevel() <= logging.INFO and _stderr_is_terminal()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, show_progress_bar: bool | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar when progress is enabled; off a terminal at INFO, in rate-limited log lines."""
    if progress_enabled(show_progress_bar):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False)
    if show_progress_bar is None and logging.getLogger(_ROOT).isEnabledFor(logging.INFO):
        return _logged_progress(iterable, desc, total)
    return iterable


def _logged_progress(iterable: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    logger = logging.getLogger(f"{_ROOT}.progress")
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    start = last = now = time.monotonic()
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= PROGRESS_LOG_SECONDS:
            last = now
            logger.info("%s: %d%s (%.0f s)", desc, done, f"/{total}" if total else "", now - start)
    if last != start:  # the loop logged along the way: say when it ends
        logger.info("%s: %d done (%.0f s)", desc, done, now - start)


@contextmanager
def quiet_transformers(show_progress_bar: bool | None = None) -> Iterator[None]:
    """Silence transformers' load reports and progress bars unless embedensemble logs at DEBUG / shows bars."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    if not logging.getLogger(_ROOT).isEnabledFor(logging.DEBUG):
        hf_logging.set_verbosity_error()
    if not progress_enabled(show_progress_bar):
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def root_logging_kept() -> Iterator[None]:
    """Undo what the block does to the root logger's handlers and level.

    ONNX Runtime's quantisation logs through ``logging.info``, which configures the root logger when it has no
    handler; every embedensemble record (which propagates) would then be printed twice for the rest of the process.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
