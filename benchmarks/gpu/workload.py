"""The workload both sides share: a random-weight Mistral of the 7B shape and tweet-length inputs.

Token lengths follow the plain reference's draw (log-normal around 30 tokens, clipped to 5..120),
so tweets/s mean the same on both sides. The library takes texts, so each synthetic tweet is a
BOS plus ``k - 1`` words of a word-level tokenizer in which every word is one token: ``k`` tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from embedensemble.labels import N_LABELS

SHAPES = {
    "7b": {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32000},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512},
}
LENGTHS = "log-normal(median 30 tokens, sigma 0.45), clipped to 5..120 (as plain_reference.py draws them)"
WORDS = ["i", "you", "we", "the", "a", "my", "so", "just", "really", "today", "tonight", "work", "game", "love", "hate", "happy",
         "sad", "angry", "afraid", "hope", "wow", "never", "always", "again", "believe", "this", "that", "what", "why", "how",
         "morning", "coffee", "bus", "rain", "sun", "friends", "family", "team", "win", "lose", "news", "phone", "music",
         "movie", "people", "life", "time", "day", "night", "week", "best", "worst", "ever", "more"]


def tweet_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Token counts per tweet, the reference's distribution."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(math.log(30), 0.45, size=n)), 5, 120).astype(int)


def synthetic_tweets(lengths: np.ndarray, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Texts of exactly ``lengths`` tokens (BOS + words) under :func:`word_tokenizer`, and random labels."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(k) - 1)) for k in lengths]
    labels = (rng.random((len(lengths), N_LABELS)) < 0.25).astype(np.float32)
    return texts, labels


def word_tokenizer(folder: Path) -> None:
    """A word-level tokenizer (one token per word of :data:`WORDS`, BOS prepended) saved in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<unk>", "<s>", "</s>", *WORDS]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(folder)


def build_mistral(folder: Path, shape: str, layers: int, device: str) -> None:
    """Random-weight Mistral of ``shape`` with ``layers`` layers, saved in bf16 (fp32 on the CPU) with its tokenizer."""
    import torch
    from transformers import AutoModel, MistralConfig

    config = MistralConfig(num_hidden_layers=layers, max_position_embeddings=512, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):  # initialising on the GPU takes seconds, on the CPU minutes
        model = AutoModel.from_config(config, dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model.save_pretrained(folder)
    word_tokenizer(folder)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
