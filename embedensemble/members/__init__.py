"""Members: one model trained on one fold (texts in, emotion probabilities out), and their kinds.

Module map: ``base`` (the :class:`~.base.FoldModel` contract and the kind registry) <- the
built-in kinds: ``head_member`` (``head``: TF-IDF or frozen embeddings + a head),
``finetuned_head`` (``finetuned-head``: a head on another member's fine-tuned embeddings),
``finetune_member`` (what the fine-tuned kinds share) <- ``pooled_finetune`` (``pooled-finetune``)
and ``seqcls_finetune`` (``seqcls-finetune``), trained by the engine in :mod:`embedensemble.finetune`;
and ``embedensemble.members.onnx_classifier`` (``onnx-classifier``).

This package names the module of each built-in kind; the registry imports a kind's module the
first time that kind is asked for, so torch and peft load only when a fine-tuned member is built
or loaded, and ``base`` never imports its own subclasses.
"""

from __future__ import annotations

from .base import declare_kinds

declare_kinds(
    {
        "head": "embedensemble.members.head_member",
        "finetuned-head": "embedensemble.members.finetuned_head",
        "pooled-finetune": "embedensemble.members.pooled_finetune",
        "seqcls-finetune": "embedensemble.members.seqcls_finetune",
        "onnx-classifier": "embedensemble.members.onnx_classifier",
    }
)
