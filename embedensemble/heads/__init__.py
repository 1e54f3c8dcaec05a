"""One-vs-rest multi-label heads: features [n, d] in, probabilities [n, L] (float32) out.

Build heads by name with :func:`make_head`; reload any saved head with :func:`load_head`.
Module map: ``base`` (the :class:`Head` contract, registry, save/load) <- ``linear``
(``logreg``, ``ridge``) and ``lgbm`` (``lgbm``). Importing this package registers all three;
LightGBM and sklearn themselves load only when a head is fitted or loaded.
"""

from __future__ import annotations

from .base import Head, available_heads, load_head, make_head, register_head
from .lgbm import LGBMHead
from .linear import LogRegHead, RidgeHead

__all__ = [
    "Head",
    "LGBMHead",
    "LogRegHead",
    "RidgeHead",
    "available_heads",
    "load_head",
    "make_head",
    "register_head",
]
