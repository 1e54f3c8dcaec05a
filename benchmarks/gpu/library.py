"""The library's paths, measured the way the plain reference measures itself.

Frozen embedding: :class:`~embedensemble.backbones.Encoder` (bf16 on CUDA, last-token pooling),
padded (the unoptimised path) and packed (``packing=True``, optionally with compiled layers);
one warm-up call on the same texts, then one timed call. Fine-tuning: the real
``pooled-finetune`` member (NF4 + double quant, LoRA on every projection, linear head, BCE), a
fresh member per setting; like the reference, the rate is the batch over the median step time
after 2 warm-up steps.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedensemble.config import MemberConfig
from embedensemble.members.base import MemberContext, build_member

# The reference's model input: no prompt, no appended EOS, last-token pooling, raw vectors.
SPEC_OPTIONS = {"pooling": "last_token", "prompt_template": None, "append_eos": False, "normalize": False, "max_length": 128}
WARMUP_STEPS = 2


def _free(cuda: bool) -> None:
    gc.collect()
    if cuda:
        import torch

        torch.cuda.empty_cache()


def frozen(
    folder: Path, texts: list[str], device: str, batch: int, *, packing: bool, compile_layers: bool, cache_root: Path
) -> tuple[dict[str, Any], np.ndarray]:
    """Tweets/s and peak memory of one frozen-embedding setting, and its vectors (for the equivalence check)."""
    import torch

    from embedensemble.backbones import Encoder, get_backbone_spec

    cuda = device.startswith("cuda")
    spec = get_backbone_spec(str(folder), **SPEC_OPTIONS)
    encoder = Encoder(spec, device=device, batch_size=batch, cache_root=cache_root, packing=packing, compile_layers=compile_layers)
    start = time.perf_counter()
    encoder.encode(texts)  # warm-up on the same texts: kernel choice, allocator growth, compilation of these shapes
    warmup = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    vectors = encoder.encode(texts)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    row = {
        "batch": batch,
        "packing": packing,
        "compiled": compile_layers,
        "tweets_per_s": len(texts) / seconds,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "peak_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "finite": bool(np.isfinite(vectors).all()),
    }
    del encoder
    _free(cuda)
    return row, vectors


def parse_train_setting(token: str) -> dict[str, Any]:
    """``"128pgc"`` -> batch 128, packing, gradient checkpointing; ``"32"`` -> batch 32 padded."""
    rest = token.strip()
    gc_on = rest.endswith("gc")
    rest = rest.removesuffix("gc")
    packing = rest.endswith("p")
    rest = rest.removesuffix("p")
    if not rest.isdigit() or int(rest) < 1:
        raise ValueError(f"training setting {token!r}: expected <batch>[p][gc], e.g. 32, 32p, 256pgc")
    return {"batch": int(rest), "packing": packing, "gradient_checkpointing": gc_on}


def setting_name(setting: dict[str, Any]) -> str:
    return f"b{setting['batch']}{'_packed' if setting['packing'] else '_padded'}{'_gc' if setting['gradient_checkpointing'] else ''}"


def finetune(
    folder: Path, texts: list[str], labels: np.ndarray, device: str, setting: dict[str, Any], *, steps: int, lora_r: int, lora_dropout: float
) -> dict[str, Any]:
    """One QLoRA training setting: tweets/s (batch / median step after warm-up), peak memory, the loss curve."""
    import torch

    cuda = device.startswith("cuda")
    batch = setting["batch"]
    params = {
        "adapter": "lora", "quantize_4bit": True, "lora_r": lora_r, "lora_dropout": lora_dropout, "lr": 2e-4,
        "batch_size": batch, "max_steps": steps, "warmup_ratio": 0.0, "gradient_checkpointing": setting["gradient_checkpointing"],
        "packing": setting["packing"], "max_length": 128, "save_every_steps": 10_000, "backbone_options": SPEC_OPTIONS,
    }
    member = build_member(MemberConfig(name="qlora", kind="pooled-finetune", backbone=str(folder), params=params),
                          MemberContext(seed=0, device=device))
    _free(cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    n = batch * steps
    member.fit(texts[:n], labels[:n])
    history = member.train_stats_["history"]
    ends = [h["seconds"] for h in history]
    step_seconds = np.diff([0.0, *ends])
    timed = step_seconds[WARMUP_STEPS:] if len(step_seconds) > WARMUP_STEPS else step_seconds
    median = float(np.median(timed))
    losses = [float(h["loss"]) for h in history]
    row = {
        **setting,
        "lora_r": lora_r,
        "lora_dropout": lora_dropout,
        "steps": len(history),
        "tweets_per_s": batch / median,
        "median_step_s": median,
        "peak_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "padding_fraction": member.train_stats_["padding_fraction"],
        "losses": losses,
        "finite": bool(np.isfinite(losses).all()),
    }
    del member
    _free(cuda)
    return row


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


def loss_curve_diff(a: list[float], b: list[float]) -> dict[str, float]:
    x, y = np.asarray(a), np.asarray(b)
    n = min(len(x), len(y))
    diff = np.abs(x[:n] - y[:n])
    return {"steps": n, "max_abs_diff": float(diff.max()), "max_rel_diff": float((diff / np.maximum(np.abs(y[:n]), 1e-12)).max())}
