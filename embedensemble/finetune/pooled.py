"""``pooled-finetune``: a backbone's pooled embedding under a multi-label linear head.

Encoders are mean-pooled (or CLS) over right-padded batches; decoders use their prompt template,
an appended EOS and the last token of left-padded batches, as embedding models such as
e5-mistral and gte-Qwen do. The fine-tuned backbone doubles as a feature source (:meth:`embed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import texts_digest
from ..labels import N_LABELS
from ..members.base import register_member
from .checkpoint import read_tensors, write_tensors
from .member import FinetuneMember
from .modeling import (
    apply_adapter,
    backbone_spec,
    hidden_size,
    load_adapter,
    load_base,
    load_full,
    save_adapter,
    save_full,
    text_format,
)

POOLINGS = ("mean", "cls", "last_token")


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, for left or right padding alike."""
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.flip(dims=[1]).argmax(dim=1)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool token states [batch, seq, dim] into [batch, dim]."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).bool()
        # masked_fill, not a product: padded positions of a decoder can hold NaN, and NaN * 0 is NaN.
        summed = hidden.masked_fill(~mask, 0.0).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1).to(hidden.dtype)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")


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


@register_member("pooled-finetune")
class PooledFinetuneMember(FinetuneMember):
    """Fine-tunes a backbone (LoRA, QLoRA or fully) with a linear head on its pooled embedding.

    Saved as ``adapter/`` (peft's ``adapter_model.safetensors`` + ``adapter_config.json``) or, for
    ``adapter="none"``, ``backbone.safetensors``; plus ``head.safetensors`` and ``finetune.json``.
    Loading reads the base backbone from its spec and applies the saved weights.
    """

    _last_pooled: tuple[str, np.ndarray] | None = None

    def _build(self, *, training: bool) -> None:
        self._last_pooled = None
        where = f"member '{self.config.name}'"
        self.spec = backbone_spec(self.config.backbone, self.args, where)
        backbone, self.tokenizer = load_base(self.spec, self.args, self.device, bf16=self.bf16, training=training)
        self.fmt = text_format(self.spec, self.tokenizer, self.args, append_eos=self.append_eos)
        pooling = getattr(self.spec, "pooling", None) or ("last_token" if self.fmt.padding_side == "left" else "mean")
        backbone = apply_adapter(backbone, self.args)
        model = PooledClassifier(backbone, hidden_size(backbone), pooling)
        model.head.to(self.device)
        self.model = model

    def _is_head_param(self, name: str) -> bool:
        return name.startswith("head.")

    def embed(self, texts: list[str] | tuple[str, ...], *, normalize: bool | None = None) -> np.ndarray:
        """Pooled embeddings [n, hidden] (float32) of the fine-tuned backbone.

        ``normalize`` defaults to the backbone spec's setting; L2-normalised vectors suit
        cosine-based heads, raw ones are what the classification head saw.
        """
        vectors = np.array(self._pooled(list(texts)))
        if normalize is None:
            normalize = bool(getattr(self.spec, "normalize", False))
        if normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        pooled = np.array(self._pooled(texts))
        head = self.model.head
        with torch.no_grad():
            logits = head(torch.from_numpy(pooled).to(head.weight.device, head.weight.dtype)).float().cpu()
        return torch.sigmoid(logits).numpy()

    def _pooled(self, texts: list[str]) -> np.ndarray:
        """Raw pooled embeddings (read-only). The last batch's are kept, so predicting and embedding the
        same texts (a member that is stacked and also feeds heads) runs the backbone once."""
        self._require_model()
        digest = texts_digest(texts)
        if self._last_pooled is None or self._last_pooled[0] != digest:
            if texts:
                vectors = self._run(self.model.embed, texts)
            else:
                vectors = np.zeros((0, hidden_size(self.model.backbone)), dtype=np.float32)
            vectors.setflags(write=False)
            self._last_pooled = (digest, vectors)
        return self._last_pooled[1]

    def release(self) -> None:
        self._last_pooled = None
        super().release()

    def _fit(self, texts: list[str], labels: np.ndarray, *, workdir: Path | None) -> None:
        self._last_pooled = None
        super()._fit(texts, labels, workdir=workdir)
        self._last_pooled = None  # the weights changed

    def _save_weights(self, path: Path) -> None:
        if self.args.adapter == "none":
            save_full(self.model.backbone, path / "backbone.safetensors")
        else:
            save_adapter(self.model.backbone, path / "adapter")
        write_tensors(path / "head.safetensors", self.model.head.state_dict())

    def _load_weights(self, path: Path) -> None:
        if self.args.adapter == "none":
            load_full(self.model.backbone, path / "backbone.safetensors")
        else:
            load_adapter(self.model.backbone, path / "adapter")
        head: dict[str, Any] = read_tensors(path / "head.safetensors")
        self.model.head.load_state_dict(head)
        for param in self.model.parameters():
            param.requires_grad_(False)
