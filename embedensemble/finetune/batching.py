"""Batch orders for fine-tuning: length-bucketed training batches, length-sorted prediction batches.

Tweets are short and their lengths vary a lot, so with random batches most of each batch is
padding. Training batches are drawn from length-sorted chunks (then the batches are shuffled, so
an epoch still mixes lengths); prediction batches are simply length-sorted. Tokenising, padding, prediction batch order
and pooling are :mod:`embedensemble.backbones.tokens`' (shared with the frozen encoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, bucket_batches: int = 32
) -> list[np.ndarray]:
    """Shuffled batches of indices whose members have similar lengths.

    The indices are shuffled, cut into chunks of ``batch_size * bucket_batches``, each chunk is
    sorted by length and cut into batches, and the batches are shuffled. Larger chunks mean less
    padding but less randomness in which texts share a batch.
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    chunk = batch_size * max(1, bucket_batches)
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
