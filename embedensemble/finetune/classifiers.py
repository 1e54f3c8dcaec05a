"""The two logits modules the fine-tuning engine trains: a pooled embedding under a linear head,
and a transformers sequence classifier (adapters applied by :mod:`.modeling`)."""

from __future__ import annotations

import torch
from torch import nn

from ..backbones.tokens import POOLINGS, pool
from ..errors import ConfigError
from ..labels import N_LABELS
from .args import HEADS


class LabelAttentionHead(nn.Module):
    """One learned attention query per emotion over the token states (as in RoBERTa-MA): each emotion
    pools the tokens that speak to it, and scores its own vector. Logits [batch, n_labels]."""

    def __init__(self, hidden: int, n_labels: int = N_LABELS) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(n_labels, hidden) * hidden**-0.5)
        self.weight = nn.Parameter(torch.randn(n_labels, hidden) * hidden**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("btd,ld->blt", hidden, self.queries) * hidden.shape[-1] ** -0.5
        scores = scores.masked_fill(attention_mask[:, None, :] == 0, torch.finfo(scores.dtype).min)
        per_label = torch.einsum("blt,btd->bld", scores.softmax(dim=-1), hidden)
        return (per_label * self.weight).sum(-1) + self.bias


class PooledClassifier(nn.Module):
    """``backbone`` -> pooled embedding -> ``Linear(hidden, n_labels)`` logits; with ``head="label_attention"``
    the logits come from a :class:`LabelAttentionHead` over the token states instead (``embed`` still pools)."""

    def __init__(self, backbone: nn.Module, hidden: int, pooling: str, n_labels: int = N_LABELS, head: str = "linear") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
        self.backbone = backbone
        self.pooling = pooling
        self.head_type = head
        self.head = nn.Linear(hidden, n_labels) if head == "linear" else LabelAttentionHead(hidden, n_labels)

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
        if self.head_type == "label_attention":
            if segment_ids is not None:
                raise ValueError("packed batches have no per-text token states for a label_attention head")
            extra = {} if position_ids is None else {"position_ids": position_ids}
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            return self.head(hidden.float(), attention_mask)
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
