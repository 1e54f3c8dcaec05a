"""Tokenising once, length-bucketed batches and padding.

Tweets are short and their lengths vary a lot, so with random batches most of each batch is
padding. Training batches are drawn from length-sorted chunks (then the batches are shuffled, so
an epoch still mixes lengths); prediction batches are simply length-sorted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class TextFormat:
    """How texts become token ids for one backbone."""

    max_length: int
    prompt_template: str | None = None
    task: str | None = None
    append_eos: bool = False
    padding_side: str = "right"
    pad_token_id: int = 0
    position_ids: bool = False
    packing: bool = False  # decoders: padding-free rows (see backbones.packing)


def format_texts(texts: Sequence[str], fmt: TextFormat) -> list[str]:
    """Apply the backbone's prompt template (e.g. ``"Instruct: {task}\\nQuery: {text}"``)."""
    if not fmt.prompt_template:
        return list(texts)
    # str.replace, not str.format: tweets contain braces.
    template = fmt.prompt_template.replace("{task}", fmt.task or "")
    return [template.replace("{text}", text) for text in texts]


def tokenize(tokenizer: Any, texts: Sequence[str], fmt: TextFormat) -> list[list[int]]:
    """Token ids per text, truncated to ``fmt.max_length`` including an appended EOS."""
    eos = tokenizer.eos_token_id if fmt.append_eos else None
    # Leave room for the EOS so that truncation never drops it: last-token pooling reads it.
    budget = fmt.max_length - (1 if eos is not None else 0)
    encoded = tokenizer(format_texts(texts, fmt), add_special_tokens=True, truncation=True, max_length=budget)["input_ids"]
    if eos is None:
        return [list(ids) for ids in encoded]
    return [list(ids) if ids and ids[-1] == eos else list(ids) + [eos] for ids in encoded]


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


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Batches of indices sorted by decreasing length (the largest batch runs first, so memory errors show at once)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(ids: Sequence[Sequence[int]], fmt: TextFormat) -> dict[str, torch.Tensor]:
    """Pad token ids to a batch: ``input_ids``, ``attention_mask`` and, for decoders, ``position_ids``.

    Decoders are padded on the left so the last position is every row's last real token. Position
    ids count real tokens only, so a text's embedding does not depend on how much padding its batch has.
    """
    if fmt.packing:
        from ..backbones.packing import pack

        return pack(ids, fmt.pad_token_id)
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), fmt.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        n = len(row)
        cols = slice(width - n, width) if fmt.padding_side == "left" else slice(0, n)
        input_ids[i, cols] = torch.as_tensor(row, dtype=torch.long)
        mask[i, cols] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if fmt.position_ids:
        batch["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return batch
