"""Texts -> token ids -> padded batches -> one vector per text: the one path every backbone runs.

The frozen :class:`~embedensemble.backbones.Encoder` (decoders) and the fine-tuning engine
(:mod:`embedensemble.finetune`) both tokenise with :func:`tokenize`, pad with :func:`collate` and
pool with :func:`pool`, so a fine-tuned backbone sees its texts exactly as the frozen one does.
Decoders: prompt template, an appended EOS that truncation never drops, left padding with
position ids that count real tokens only, and the last token's state as the text's vector.

torch is imported inside the functions, so importing :mod:`embedensemble.backbones` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
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
        from .packing import pack

        return pack(ids, fmt.pad_token_id)
    import torch

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


POOLINGS = ("mean", "cls", "last_token")


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, for left or right padding alike."""
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.flip(dims=[1]).argmax(dim=1)


def additive_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A 2-D 0/1 padding mask as the prepared 4-D mask transformers takes as-is: 0 where a token may be
    attended, the most negative float where it is padding. Additive, because eager attention (MPNet's)
    adds the mask to the scores: a boolean mask there adds 1/0 and padding is attended."""
    import torch

    keep = attention_mask[:, None, None, :].to(torch.float32)
    return (1.0 - keep) * torch.finfo(torch.float32).min


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states [batch, seq, dim] into [batch, dim]."""
    import torch

    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).bool()
        # masked_fill, not a product: padded positions of a decoder can hold NaN, and NaN * 0 is NaN.
        summed = hidden.masked_fill(~mask, 0.0).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1).to(hidden.dtype)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
