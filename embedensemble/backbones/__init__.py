"""Backbones: presets, offline weights (pip packages, GGUF conversion, HF cache) and the ``Encoder``.

>>> from embedensemble.backbones import Encoder
>>> X = Encoder("minilm").encode(["so happy today!", "this is awful"])  # float32 [2, 384]
"""

from __future__ import annotations

from .encoder import Encoder, default_num_threads, torch_threads
from .presets import (
    DEFAULT_TASK,
    INSTRUCT_TEMPLATE,
    PACKAGED_WEIGHTS,
    BackboneSpec,
    PackagedWeights,
    UnknownBackboneOptionError,
    get_backbone_spec,
    is_decoder_config,
    list_presets,
)
from .tokens import TextFormat, collate, pool, tokenize
from .weights import default_cache_root, load_hf_backbone, load_tokenizer, resolve_weights, weights_identity

__all__ = [
    "DEFAULT_TASK",
    "INSTRUCT_TEMPLATE",
    "PACKAGED_WEIGHTS",
    "BackboneSpec",
    "Encoder",
    "PackagedWeights",
    "TextFormat",
    "UnknownBackboneOptionError",
    "collate",
    "default_cache_root",
    "default_num_threads",
    "get_backbone_spec",
    "is_decoder_config",
    "list_presets",
    "load_hf_backbone",
    "load_tokenizer",
    "pool",
    "resolve_weights",
    "tokenize",
    "torch_threads",
    "weights_identity",
]
