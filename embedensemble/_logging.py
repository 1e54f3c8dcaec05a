"""Logging and progress bars behind one switch.

Every module calls ``get_logger(__name__)``. Progress bars follow sentence-transformers'
rule: ``show_progress_bar=None`` means "show when the package logger is at INFO or DEBUG".
"""

from __future__ import annotations

import logging
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


def progress_enabled(show_progress_bar: bool | None = None) -> bool:
    if show_progress_bar is not None:
        return show_progress_bar
    return logging.getLogger(_ROOT).getEffectiveLevel() <= logging.INFO


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, show_progress_bar: bool | None = None) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar when progress is enabled."""
    if not progress_enabled(show_progress_bar):
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


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
