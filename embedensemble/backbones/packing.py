"""Padding-free packing of variable-length token id lists for decoder backbones.

Tweets are 5-120 tokens, so a padded batch spends much of its work on padding and its shapes
change with every batch. Packing puts several texts side by side in rows of ``width`` tokens
(best-fit decreasing), with position ids that restart at 0 for every text and a block-diagonal
causal attention mask, so each text sees exactly what it would see alone: the same RoPE
positions and only its own earlier tokens. The last token of each text is read off by a flat
index. Slack at the end of a row is one extra "text" of pad tokens that attends only to itself
(a fully masked row would give NaN in SDPA) and is never read.

Used by :func:`embed_packed` (frozen embedding) and by fine-tuning when ``packing`` is set (the
pooled classifier takes ``segment_ids`` and ``last_index``; see :func:`packed_last_hidden`).
The padded path is kept: both give the same vectors up to floating-point rounding.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_WIDTH = 256
SLACK_SEGMENT = -1


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Indices of texts per row: best-fit decreasing into rows of ``width`` tokens.

    Longest texts first, each into the open row with the least room that still fits it, so rows
    come out nearly full (tweets leave a few tokens of slack per row at most).
    """
    lengths = [int(n) for n in lengths]
    if lengths and max(lengths) > width:
        raise ValueError(f"a text of {max(lengths)} tokens does not fit a packed row of {width}; raise the width")
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (free tokens, row number), sorted
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        n = lengths[i]
        at = bisect.bisect_left(room, (n, -1))
        if at == len(room):
            rows.append([i])
            free, row = width - n, len(rows) - 1
        else:
            free, row = room.pop(at)
            rows[row].append(i)
            free -= n
        if free > 0:
            bisect.insort(room, (free, row))
    return rows


def fit_width(lengths: Sequence[int], max_width: int = DEFAULT_WIDTH, multiple: int = 8) -> int:
    """The narrowest row width (a multiple of ``multiple``) that packs ``lengths`` into as few rows
    of about ``max_width`` as their total allows: almost no slack even for one small batch."""
    total, longest = int(sum(lengths)), int(max(lengths))
    n_rows = -(-total // max_width)
    width = max(longest, -(-total // n_rows))
    width = -(-width // multiple) * multiple
    while len(pack_rows(lengths, width)) > n_rows:
        width += multiple
    return width


def pack(ids: Sequence[Sequence[int]], pad_id: int, width: int | None = None, min_rows: int = 1) -> dict[str, Any]:
    """Pack token id lists into ``[rows, width]`` CPU tensors.

    Returns ``input_ids``, ``position_ids``, ``segment_ids`` (text number within the row,
    :data:`SLACK_SEGMENT` for slack), ``attention_mask`` (1 on real tokens: for counting only, the
    model builds its mask from ``segment_ids``) and ``last_index`` (flat ``row * width + column``
    of each text's last token, in the order of ``ids``). ``width`` defaults to :func:`fit_width`'s
    (rows of about :data:`DEFAULT_WIDTH` tokens with little slack); ``min_rows`` pads with slack
    rows so that fixed shapes can be kept (e.g. for ``torch.compile``).
    """
    import torch

    if not ids or any(len(row) == 0 for row in ids):
        raise ValueError("pack() needs at least one text and no empty token lists")
    width = width or fit_width([len(row) for row in ids])
    rows = pack_rows([len(row) for row in ids], width)
    n_rows = max(len(rows), min_rows)
    input_ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    position_ids = np.tile(np.arange(width, dtype=np.int64), (n_rows, 1))  # slack counts from its own start below
    segment_ids = np.full((n_rows, width), SLACK_SEGMENT, dtype=np.int64)
    last_index = np.empty(len(ids), dtype=np.int64)
    for r, members in enumerate(rows):
        col = 0
        for s, i in enumerate(members):
            n = len(ids[i])
            input_ids[r, col : col + n] = ids[i]
            position_ids[r, col : col + n] = np.arange(n)
            segment_ids[r, col : col + n] = s
            last_index[i] = r * width + col + n - 1
            col += n
        position_ids[r, col:] = np.arange(width - col)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy((segment_ids != SLACK_SEGMENT).astype(np.int64)),
        "position_ids": torch.from_numpy(position_ids),
        "segment_ids": torch.from_numpy(segment_ids),
        "last_index": torch.from_numpy(last_index),
    }


def block_causal_mask(segment_ids: Any, attn_implementation: str, dtype: Any) -> Any:
    """The ``[rows, 1, width, width]`` mask: token i sees token j <= i of its own segment.

    SDPA (and flex, through transformers' conversion) takes a boolean mask (True = attend);
    eager attention adds the mask to its scores, so it gets 0 / the dtype's minimum.
    """
    import torch

    width = segment_ids.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & causal
    allowed = allowed[:, None]
    if attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
    return allowed


def attn_implementation(model: Any) -> str:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return str(getattr(config, "_attn_implementation", None) or "sdpa")


def packed_last_hidden(
    backbone: Any, input_ids: Any, position_ids: Any, segment_ids: Any, last_index: Any, dtype: Any = None
) -> Any:
    """Hidden state of each text's last token, ``[texts, hidden]``, from one packed forward pass.

    ``dtype`` is the dtype of an additive (eager) mask; default the backbone's first floating weight's.
    """
    import torch

    if dtype is None:
        dtype = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), torch.float32)
    mask = block_causal_mask(segment_ids, attn_implementation(backbone), dtype)
    hidden = backbone(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).last_hidden_state
    return hidden.flatten(0, 1).index_select(0, last_index)


def packed_batches(lengths: Sequence[int], tokens_per_batch: int, width: int) -> list[np.ndarray]:
    """Text indices per forward pass: longest first, each batch about ``tokens_per_batch`` real tokens."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start, used = [], 0, 0
    for k, i in enumerate(order):
        used += int(lengths[i])
        if used > tokens_per_batch - width // 2:  # packing leaves some slack: stop a little early
            batches.append(order[start : k + 1])
            start, used = k + 1, 0
    if start < len(order):
        batches.append(order[start:])
    return batches


def embed_packed(
    model: Any,
    ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 256,
    width: int = DEFAULT_WIDTH,
    normalize: bool = False,
    compile_layers: bool = False,
) -> np.ndarray:
    """Last-token embeddings ``[len(ids), hidden]`` (float32) of a frozen decoder, padding-free.

    Each forward pass holds the tokens of about ``batch_size`` average texts, as a fixed number
    of rows of ``width`` tokens (the last batch is filled with slack rows, so ``compile_layers``
    compiles each decoder layer once; a batch whose slack spills into one more row runs as it is). Inputs go to
    the GPU from pinned memory without blocking and the vectors stay there until the end: no
    host synchronisation per batch.
    """
    import torch

    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    width = max(width, max(len(row) for row in ids))
    rows = max(1, round(batch_size * float(np.mean([len(row) for row in ids])) / width))
    if compile_layers:
        compile_decoder_layers(model)
    hidden_size = model.config.get_text_config().hidden_size if hasattr(model.config, "get_text_config") else model.config.hidden_size
    out = torch.empty((len(ids), hidden_size), dtype=torch.float32, device=device)
    batches = packed_batches([len(row) for row in ids], rows * width, width)
    with torch.inference_mode():
        for batch in batches:
            packed = pack([ids[i] for i in batch], pad_id, width, min_rows=rows)
            if cuda:
                packed = {k: v.pin_memory().to(device, non_blocking=True) for k, v in packed.items()}
            target = torch.from_numpy(np.asarray(batch, dtype=np.int64)).to(device, non_blocking=cuda)
            last = packed_last_hidden(
                model, packed["input_ids"], packed["position_ids"], packed["segment_ids"], packed["last_index"]
            ).float()
            if normalize:
                last = torch.nn.functional.normalize(last, p=2, dim=-1)
            out.index_copy_(0, target, last)
    return out.cpu().numpy()


def compile_decoder_layers(model: Any) -> None:
    """``torch.compile`` each decoder layer in place (regional compilation: one compile for all identical layers)."""
    layers = getattr(model, "layers", None) or getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no decoder layers to compile")
    for layer in layers:
        if not getattr(layer, "_compiled_call_impl", None):
            layer.compile(dynamic=False)
