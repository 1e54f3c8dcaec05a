"""Logging and progress bars behind one switch.

Every module calls ``get_logger(__name__)``. Progress bars follow sentence-transformers'
rule: ``show_progress_bar=None`` means "show when the package logger is at INFO or DEBUG".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
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
