"""The fine-tuning engine behind the ``pooled-finetune`` and ``seqcls-finetune`` members.

The member kinds themselves live in :mod:`embedensemble.members` (``pooled_finetune``,
``seqcls_finetune``); this package trains and runs their torch modules and never imports a
member. peft (and, for ``quantize_4bit``, bitsandbytes) is needed only when a member is built.
Hyperparameters come from ``MemberConfig.params`` and are parsed by :class:`FinetuneArgs`::

    {"name": "e5-qlora", "kind": "pooled-finetune", "backbone": "e5-mistral-7b-instruct",
     "params": {"adapter": "lora", "quantize_4bit": true, "lora_r": 32, "lr": 1e-4, "epochs": 2}}

Both members train with the same plain-torch loop (:mod:`.training`): length-bucketed batches,
BCE with optional per-emotion ``pos_weight`` and label-correlation term (:mod:`.losses`), AdamW + warm-up/decay, bf16 autocast on CUDA,
resumable checkpoints in the fit's ``workdir`` every ``save_every_steps``.

Module map: ``args`` (hyperparameters) -> ``batching`` (length-bucketed batch orders; tokenising,
padding and pooling are :mod:`embedensemble.backbones.tokens`') -> ``checkpoint`` -> ``training``
(loop, prediction) -> ``modeling`` (loading, 4-bit, adapters) -> ``classifiers`` (the two logits
modules: pooled embedding + linear head, sequence classifier).
"""

from __future__ import annotations

from .args import FinetuneArgs
from .classifiers import PooledClassifier, SequenceClassifierLogits

__all__ = ["FinetuneArgs", "PooledClassifier", "SequenceClassifierLogits"]
