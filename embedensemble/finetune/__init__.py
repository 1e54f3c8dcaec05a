"""Fine-tuning members: ``pooled-finetune`` (pooled embedding + linear head) and ``seqcls-finetune``.

Importing this package registers both kinds with :mod:`embedensemble.members.base`. peft (and,
for ``quantize_4bit``, bitsandbytes) is needed only when a member is built.
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
