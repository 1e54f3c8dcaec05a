"""What a member needs besides its own config: run-wide settings and one pool of shared resources.

A :class:`MemberContext` is made by whoever owns a set of members (a run being fitted, a loaded
:class:`~embedensemble.ensemble.EmotionEnsemble`) and passed to every member it builds or loads.
Its :class:`ResourcePool` holds what members share: loaded fold models (a fine-tuned member that
is stacked and the heads that read its embeddings use one copy of each fold), feature extractors
(one encoder per backbone) and the embeddings of the batch being predicted (K fold models of a
member, and other members on the same backbone, embed a batch once). The pool lives as long as
its owner; nothing is cached process-wide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .fileio import texts_digest

T = TypeVar("T")


class ResourcePool:
    """Objects shared by the members of one owner, by key; and per-key results for the current batch."""

    def __init__(self) -> None:
        self._objects: dict[tuple, Any] = {}
        self._batch: dict[tuple, tuple[str, Any]] = {}

    def shared(self, key: tuple, make: Callable[[], T]) -> T:
        """The object stored under ``key``, made by ``make()`` on first use."""
        if key not in self._objects:
            self._objects[key] = make()
        return self._objects[key]

    def for_batch(self, key: tuple, texts: Sequence[str], compute: Callable[[list[str]], T]) -> T:
        """``compute(texts)``, reused while the same texts are asked for under ``key``.

        Only the latest batch is kept per key: members predicting one batch share it, and the
        next batch replaces it, so memory stays one batch per key.
        """
        texts = list(texts)
        digest = texts_digest(texts)
        held = self._batch.get(key)
        if held is None or held[0] != digest:
            held = (digest, compute(texts))
            self._batch[key] = held
        return held[1]

    def forget_batches(self, key_prefix: tuple = ()) -> None:
        """Drop batch results whose key starts with ``key_prefix`` (e.g. after a model's weights change)."""
        for key in [k for k in self._batch if k[: len(key_prefix)] == key_prefix]:
            del self._batch[key]

    def clear(self) -> None:
        self._objects.clear()
        self._batch.clear()

    def __len__(self) -> int:
        return len(self._objects)


@dataclass
class MemberContext:
    """Run-wide settings a member needs besides its own config, and the owner's resource pool."""

    cache_dir: str | None = None
    seed: int = 42
    device: str | None = None
    show_progress_bar: bool | None = None
    use_cache: bool = True
    # Fold folders of other members, by name: a member that declares it reads another member
    # (``MemberConfig.requires``) finds that member's fold models here.
    member_folds: dict[str, list[Path]] = field(default_factory=dict)
    resources: ResourcePool = field(default_factory=ResourcePool, compare=False, repr=False)

    def with_member_folds(self, folds: dict[str, list[Path]]) -> MemberContext:
        """The same context (and pool) that also finds ``folds``."""
        return dataclasses.replace(self, member_folds={**self.member_folds, **folds})

    def settings_key(self) -> tuple:
        """The settings that change what a shared resource computes (part of every pool key)."""
        return (self.cache_dir, self.use_cache, self.show_progress_bar, str(self.device))
