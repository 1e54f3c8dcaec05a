"""GPU check of the QLoRA pooled fine-tuning path, sized to finish within 5 minutes on one H100.

A Mistral with the shapes of a 7B model (hidden 4096, MLP 14336, 32 heads, 8 KV heads, random
bf16 weights) is built with a few layers (default 2 and 4). For each layer count it measures the
library's frozen bf16 embedding (:class:`Encoder`, length-sorted batches) and, for each training
batch size, the real ``pooled-finetune`` member: 4-bit NF4 base + LoRA on all projections,
length-bucketed batches, bf16 autocast (``--batch-sizes 32,256gc``: suffix ``gc`` = gradient
checkpointing), then embedding with the fine-tuned model. The first measurements are discarded
(CUDA context, kernel selection). Results are read off at 32 layers (:func:`extrapolate`) as a lower bound
(time per tweet scaled by depth) and a line fit over the two deepest counts. A real small model
(default ``smollm2-135m``, skipped when its weights are not installed; any local folder works)
checks correctness: the loss falls and a saved/reloaded member predicts the same.

Synthetic tweets are 5-45 words of a word-level tokenizer (one token per word), with a
prompt template and EOS as e5-mistral uses; real BPE tokenizers give ~1.3 tokens per word.

    python benchmarks/gpu_check.py --layers 2,4,8 --batch-sizes 32,128,256gc --out gpu_check.json   # on CUDA
    python benchmarks/gpu_check.py --cpu --tiny --out /tmp/x.json                                   # smoke test

The JSON report goes to stdout (last line) and to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedensemble._logging import get_logger
from embedensemble.config import MemberConfig
from embedensemble.io import write_json
from embedensemble.labels import N_LABELS
from embedensemble.members.base import MemberContext, build_member, load_member

logger = get_logger("benchmarks.gpu_check")

SHAPES = {
    "7b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
    },
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512},
}
TARGET_LAYERS = 32
PROMPT = {
    "prompt_template": "Instruct: {task}\nQuery: {text}",
    "task": "Identify the emotions expressed in the tweet",
    "pooling": "last_token",
    "append_eos": True,
}
WORDS = ["i", "you", "we", "the", "a", "my", "so", "just", "really", "today", "tonight", "work", "game", "love", "hate", "happy", "sad", "angry", "afraid", "hope", "wow", "never", "always", "again", "can't", "believe", "this", "that", "what", "why", "how", "morning", "coffee", "bus", "rain", "sun", "friends", "family", "team", "win", "lose", "news", "phone", "music", "movie", "people", "life", "time", "day", "night", "week", "best", "worst", "ever", "more"]


def synthetic_tweets(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.gamma(4.0, 4.5, size=n).astype(int), 5, 45)
    texts = [" ".join(rng.choice(WORDS, size=k)) for k in lengths]
    labels = (rng.random((n, N_LABELS)) < 0.25).astype(np.float32)
    return texts, labels


def word_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    extra = ["Instruct", "Query", ":", "Identify", "the", "emotions", "expressed", "in", "tweet"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<unk>", "<s>", "</s>", *WORDS, *extra]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)


def build_mistral(folder: Path, shape: str, layers: int, device: str) -> None:
    """Random-weight Mistral of ``shape`` with ``layers`` layers, saved in bf16 (initialised on ``device``: fast on a GPU)."""
    import torch
    from transformers import AutoModel, MistralConfig

    config = MistralConfig(num_hidden_layers=layers, max_position_embeddings=4096, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModel.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    word_tokenizer(folder)
    del model


def measure(
    backbone: Path,
    texts: list[str],
    labels: np.ndarray,
    embed_texts: list[str],
    device: str,
    args: argparse.Namespace,
    batch_size: int,
    checkpointing: bool = False,
) -> dict[str, Any]:
    import torch

    cuda = device.startswith("cuda")
    # The settings of experiments/finetune-gpu-*-qlora.json, so the peak memory answers whether they fit.
    params = {
        "adapter": "lora",
        "quantize_4bit": True,
        "lora_r": args.lora_r,
        "lr": 1e-4,
        "batch_size": batch_size,
        "max_steps": args.steps,
        "warmup_ratio": 0.0,
        "gradient_checkpointing": checkpointing,
        "max_length": 128,
        "save_every_steps": 10_000,
        "predict_batch_size": args.embed_batch_size,
        "backbone_options": PROMPT,
    }
    member = build_member(
        MemberConfig(name="qlora", kind="pooled-finetune", backbone=str(backbone), params=params),
        MemberContext(seed=0, device=device),
    )
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    member.fit(texts, labels)
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    history = member.train_stats_["history"]
    # The first step pays for kernel selection and allocator warm-up: time the rest.
    timed = history[1:] if len(history) > 1 else history
    seconds = timed[-1]["seconds"] - (history[0]["seconds"] if len(history) > 1 else 0.0)
    train_tps = sum(h["examples"] for h in timed) / seconds
    losses = [h["loss"] for h in history]
    out = {
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "train_texts_per_second": train_tps,
        "train_steps": len(history),
        "train_padding_fraction": member.train_stats_["padding_fraction"],
        "train_peak_gib": train_peak,
        # Warm-up on other texts: the member keeps its last batch, so the same texts would be served from memory.
        **timed_embedding(member.embed, [t + " again" for t in embed_texts[: args.embed_batch_size]], embed_texts, cuda),
    }
    del member
    if cuda:
        torch.cuda.empty_cache()
    return out


def timed_embedding(embed: Any, warmup_texts: list[str], texts: list[str], cuda: bool) -> dict[str, Any]:
    """Throughput and peak GPU memory of ``embed(texts)`` after one warm-up call."""
    import torch

    embed(warmup_texts)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    vectors = embed(texts)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "embed_texts_per_second": len(texts) / seconds,
        "embed_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "embedding_dim": int(vectors.shape[1]),
        "finite": bool(np.isfinite(vectors).all()),
    }


def measure_frozen(backbone: Path, embed_texts: list[str], device: str, batch_size: int, cache_root: Path) -> dict[str, Any]:
    """The library's frozen embedding path (:class:`Encoder`: bf16 on CUDA, length-sorted batches, last-token pooling)."""
    import torch

    from embedensemble.backbones import Encoder, get_backbone_spec

    cuda = device.startswith("cuda")
    encoder = Encoder(get_backbone_spec(str(backbone), **PROMPT), device=device, batch_size=batch_size, cache_root=cache_root)
    out = timed_embedding(encoder.encode, embed_texts[:batch_size], embed_texts, cuda)
    del encoder
    if cuda:
        torch.cuda.empty_cache()
    return out


def extrapolate(per_layers: dict[int, dict[str, Any]], target: int, keys: tuple[str, ...] = ("train", "embed")) -> dict[str, Any]:
    """Read ``<key>_texts_per_second`` and ``<key>_peak_gib`` off at ``target`` layers.

    Throughput gets a lower bound (the deepest measurement's time per text scaled by depth, as if
    every cost grew with it) and a line ``time = a + b * layers`` through the two deepest counts
    (None when noise makes it meaningless); shallow runs are dominated by fixed costs, so only the
    two deepest are used. Peak memory: the same line, which memory follows closely.
    """
    counts = sorted(per_layers)
    result: dict[str, Any] = {"layers": target, "from_layers": counts}
    (l1, r1), (l2, r2) = [(c, per_layers[c]) for c in counts[-2:]] if len(counts) > 1 else [(counts[0], per_layers[counts[0]])] * 2
    for key in keys:
        rate, peak = f"{key}_texts_per_second", f"{key}_peak_gib"
        result[f"{rate}_lower_bound"] = r2[rate] * l2 / target
        slope = (1 / r2[rate] - 1 / r1[rate]) / (l2 - l1) if l2 > l1 else 0.0
        intercept = 1 / r1[rate] - slope * l1
        result[f"{rate}_line"] = 1 / (intercept + target * slope) if slope > 0 and intercept >= 0 else None
        if r1.get(peak) is None or r2.get(peak) is None:
            result[peak] = None
        else:
            result[peak] = r2[peak] + ((r2[peak] - r1[peak]) / (l2 - l1) if l2 > l1 else r2[peak] / l2) * (target - l2)
    return result


def check_real(backbone: str, device: str, texts: list[str], labels: np.ndarray, workdir: Path) -> dict[str, Any]:
    """Train a real small model a few steps; the loss must fall and a reloaded member must agree."""
    from embedensemble.errors import WeightsNotFoundError

    params = {
        "adapter": "lora",
        "quantize_4bit": True,
        "lora_r": 8,
        "lr": 5e-4,
        "batch_size": 16,
        "max_steps": 12,
        "warmup_ratio": 0.0,
        "save_every_steps": 10_000,
    }
    config = MemberConfig(name="real", kind="pooled-finetune", backbone=backbone, params=params)
    try:
        member = build_member(config, MemberContext(seed=0, device=device)).fit(texts, labels)
    except (WeightsNotFoundError, FileNotFoundError, OSError) as exc:
        return {"backbone": backbone, "skipped": f"{type(exc).__name__}: {exc}"}
    losses = [h["loss"] for h in member.train_stats_["history"]]
    before = member.predict_proba(texts[:64])
    member.save(workdir / "real")
    after = load_member(workdir / "real", MemberContext(seed=0, device=device)).predict_proba(texts[:64])
    return {
        "backbone": backbone,
        "loss_first": float(np.mean(losses[:3])),
        "loss_last": float(np.mean(losses[-3:])),
        "loss_fell": bool(np.mean(losses[-3:]) < np.mean(losses[:3])),
        "reload_max_abs_diff": float(np.abs(before - after).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (smoke test)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes instead of 7B-shaped layers")
    parser.add_argument("--layers", default="2,4", help="layer counts to measure, comma-separated")
    parser.add_argument("--n-train", type=int, default=None, help="synthetic training tweets")
    parser.add_argument("--n-embed", type=int, default=None, help="synthetic tweets to embed")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per measurement")
    parser.add_argument(
        "--batch-sizes", default="32,128,256gc", help="training batch sizes, comma-separated; suffix 'gc' = gradient checkpointing"
    )
    parser.add_argument("--lora-r", type=int, default=32)
    parser.add_argument("--embed-batch-size", type=int, default=256)
    parser.add_argument("--real-backbone", default=None, help="small real model to check ('none' to skip)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device; pass --cpu for a smoke test")
    device = "cpu" if args.cpu else "cuda"
    shape = "tiny" if args.tiny else "7b"
    args.steps = args.steps or (6 if args.tiny else 20)
    batch_runs = {f"qlora_batch_{x.strip()}": (int(x.strip().removesuffix("gc")), x.strip().endswith("gc")) for x in args.batch_sizes.split(",")}
    n_train = args.n_train or max(b for b, _ in batch_runs.values()) * args.steps
    n_embed = args.n_embed or (128 if args.tiny else 2048)
    real = args.real_backbone or ("none" if args.tiny else "smollm2-135m")
    layer_counts = sorted({int(x) for x in args.layers.split(",")})
    texts, labels = synthetic_tweets(max(n_train, n_embed))

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
        "shape": {**SHAPES[shape], "measured_layers": layer_counts},
        "settings": {
            "batch_sizes": args.batch_sizes,
            "steps": args.steps,
            "n_train": n_train,
            "n_embed": n_embed,
            "quantize_4bit": True,
            "lora_r": args.lora_r,
            "embed_batch_size": args.embed_batch_size,
            "bf16": device == "cuda" and torch.cuda.is_bf16_supported(),
        },
        "versions": _versions(),
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        runs = ["frozen", *batch_runs]
        per_layers: dict[str, dict[int, dict[str, Any]]] = {run: {} for run in runs}
        for i, count in enumerate(layer_counts):
            folder = Path(tmp) / f"mistral-{count}"
            build_mistral(folder, shape, count, device)
            if i == 0:  # the first runs pay for CUDA context, kernel selection and allocator growth: discard them
                measure_frozen(folder, texts[:n_embed], device, args.embed_batch_size, Path(tmp))
                measure(folder, texts[:64], labels[:64], texts[:n_embed], device, args, 32)
            per_layers["frozen"][count] = measure_frozen(folder, texts[:n_embed], device, args.embed_batch_size, Path(tmp))
            for run, (b, checkpointing) in batch_runs.items():
                n = args.n_train or b * args.steps
                per_layers[run][count] = measure(folder, texts[:n], labels[:n], texts[:n_embed], device, args, b, checkpointing)
            logger.warning("layers=%d: %s", count, {run: per_layers[run][count] for run in runs})
            shutil.rmtree(folder)
        target = TARGET_LAYERS if not args.tiny else max(layer_counts) * 2
        report["per_layers"] = {run: {str(k): v for k, v in rows.items()} for run, rows in per_layers.items()}
        report["synthetic"] = {
            run: extrapolate(rows, target, ("embed",) if run == "frozen" else ("train", "embed")) for run, rows in per_layers.items()
        }
        report["real_model"] = (
            {"skipped": "not requested"} if real == "none" else check_real(real, device, texts[:256], labels[:256], Path(tmp))
        )
    report["wall_seconds"] = time.perf_counter() - start
    if args.out:
        write_json(args.out, report)
    sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    return 0


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


if __name__ == "__main__":
    raise SystemExit(main())
