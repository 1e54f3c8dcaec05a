"""Fine-tuning members: ``pooled-finetune`` (pooled embedding + linear head) and ``seqcls-finetune``.

Importing this package registers both kinds with :mod:`embedensemble.members.base`; peft (and,
for ``quantize_4bit``, bitsandbytes) is needed only when a member is built. Hyperparameters
come from ``MemberConfig.params`` and are parsed by :class:`FinetuneArgs`::

    {"name": "e5-qlora", "kind": "pooled-finetune", "backbone": "e5-mistral-7b-instruct",
     "params": {"adapter": "lora", "quantize_4bit": true, "lora_r": 32, "lr": 1e-4, "epochs": 2}}

Both members train with the same plain-torch loop (:mod:`.training`): length-bucketed batches,
BCE with optional per-emotion ``pos_weight``, AdamW + warm-up/decay, bf16 autocast on CUDA,
resumable checkpoints in the fit's ``workdir`` every ``save_every_steps``. A fitted
:class:`PooledFinetuneMember` also gives the fine-tuned backbone's embeddings (:meth:`embed`).

Module map: ``args`` (hyperparameters) -> ``batching`` (tokens, buckets, padding) ->
``checkpoint`` -> ``training`` (loop, prediction) -> ``modeling`` (loading, 4-bit, adapters) ->
``member`` (shared fit/predict/save/load) -> ``pooled`` / ``seqcls`` (the two kinds).
"""

from __future__ import annotations

from .args import FinetuneArgs
from .member import FinetuneMember
from .pooled import PooledClassifier, PooledFinetuneMember, last_token_index, pool
from .seqcls import SeqClsFinetuneMember

__all__ = [
    "FinetuneArgs",
    "FinetuneMember",
    "PooledClassifier",
    "PooledFinetuneMember",
    "SeqClsFinetuneMember",
    "last_token_index",
    "pool",
]
