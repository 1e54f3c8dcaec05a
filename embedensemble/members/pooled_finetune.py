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

from ..errors import ArtifactError
from ..fileio import texts_digest
from ..finetune.checkpoint import read_tensors, write_tensors
from ..finetune.classifiers import PooledClassifier
from ..finetune.frozen_layers import TopLayersBackbone
from ..finetune.modeling import (
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
from .base import register_member
from .finetune_member import FinetuneMember

TOP_LAYERS_FILE = "top_layers.safetensors"


@register_member("pooled-finetune")
class PooledFinetuneMember(FinetuneMember):
    """Fine-tunes a backbone (LoRA, QLoRA or fully) with a linear head on its pooled embedding.

    Saved as ``adapter/`` (peft's ``adapter_model.safetensors`` + ``adapter_config.json``) or, for
    ``adapter="none"``, ``backbone.safetensors`` (with ``train_top_layers``, ``top_layers.safetensors``: only
    the trained layers); plus ``head.safetensors`` and ``finetune.json``.
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
        if self.args.train_top_layers is not None:
            backbone = TopLayersBackbone(
                backbone,
                self.args.train_top_layers,
                cache_key=f"{self.config.backbone}|{self.device}|{self.bf16}",
                max_bytes=int(self.args.frozen_cache_gb * 2**30),
            )
        model = PooledClassifier(backbone, hidden_size(backbone), pooling, head=self.args.head)
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
        if self.args.head != "linear":  # the head reads token states, not the pooled embedding
            return super()._predict_proba(texts)
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
        if isinstance(self.model.backbone, TopLayersBackbone):
            write_tensors(path / TOP_LAYERS_FILE, self.model.backbone.trainable_state_dict())
        elif self.args.adapter == "none":
            save_full(self.model.backbone, path / "backbone.safetensors")
        else:
            save_adapter(self.model.backbone, path / "adapter")
        write_tensors(path / "head.safetensors", self.model.head.state_dict())

    def _load_weights(self, path: Path) -> None:
        if isinstance(self.model.backbone, TopLayersBackbone):
            _load_top_layers(self.model.backbone, path / TOP_LAYERS_FILE)
        elif self.args.adapter == "none":
            load_full(self.model.backbone, path / "backbone.safetensors")
        else:
            load_adapter(self.model.backbone, path / "adapter")
        head: dict[str, Any] = read_tensors(path / "head.safetensors")
        self.model.head.load_state_dict(head)
        for param in self.model.parameters():
            param.requires_grad_(False)


def _load_top_layers(backbone: TopLayersBackbone, path: Path) -> None:
    """The trained top layers over the base weights; the file must hold exactly those layers."""
    if not path.is_file():
        raise ArtifactError(f"missing weights file {path}")
    tensors = read_tensors(path)
    expected = set(backbone.trainable_state_dict())
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        raise ArtifactError(f"{path} does not hold this backbone's top layers (unexpected {extra[:3]}, missing {missing[:3]})")
    backbone.model.load_state_dict(tensors, strict=False)
