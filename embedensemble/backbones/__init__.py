"""Backbones: presets, offline weights (pip packages, GGUF conversion, HF cache) and the ``Encoder``.

>>> from embedensemble.backbones import Encoder
>>> X = Encoder("minilm").encode(["so happy today!", "this is awful"])  # float32 [2, 384]
"""

from __future__ import annotations

from .encoder import Encoder, default_num_threads, last_token_pool, left_pad, torch_threads
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
from .weights import default_cache_root, load_hf_backbone, load_tokenizer, resolve_weights, weights_identity

__all__ = [
    "DEFAULT_TASK",
    "INSTRUCT_TEMPLATE",
    "PACKAGED_WEIGHTS",
    "BackboneSpec",
    "Encoder",
    "PackagedWeights",
    "UnknownBackboneOptionError",
    "default_cache_root",
    "default_num_threads",
    "get_backbone_spec",
    "is_decoder_config",
    "last_token_pool",
    "left_pad",
    "list_presets",
    "load_hf_backbone",
    "load_tokenizer",
    "resolve_weights",
    "torch_threads",
    "weights_identity",
]
