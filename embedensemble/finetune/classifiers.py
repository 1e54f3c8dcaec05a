"""The two logits modules the fine-tuning engine trains: a pooled embedding under a linear head,
and a transformers sequence classifier (adapters applied by :mod:`.modeling`)."""

from __future__ import annotations

import torch
from torch import nn

from ..backbones.tokens import POOLINGS, pool
from ..errors import ConfigError
from ..labels import N_LABELS


class PooledClassifier(nn.Module):
    """``backbone`` -> pooled embedding -> ``Linear(hidden, n_labels)`` logits."""

    def __init__(self, backbone: nn.Module, hidden: int, pooling: str, n_labels: int = N_LABELS) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        self.backbone = backbone
        self.pooling = pooling
        self.head = nn.Linear(hidden, n_labels)

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        last_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if segment_ids is not None:  # a packed batch (backbones.packing.pack): one vector per text, in input order
            if self.pooling != "last_token":
                raise ValueError(f"packed batches support last_token pooling only, not {self.pooling!r}")
            from ..backbones.packing import packed_last_hidden

            return packed_last_hidden(self.backbone, input_ids, position_ids, segment_ids, last_index).float()
        extra = {} if position_ids is None else {"position_ids": position_ids}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return pool(hidden, attention_mask, self.pooling).float()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        last_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask, position_ids, segment_ids, last_index))


HEAD_NAMES = ("score", "classifier")


class SequenceClassifierLogits(nn.Module):
    """Calls a (peft-wrapped) sequence classifier and returns its logits only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        extra = {} if position_ids is None else {"position_ids": position_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def head_name(model: nn.Module) -> str:
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise ConfigError(f"{type(model).__name__} has none of the classification heads {list(HEAD_NAMES)}")
