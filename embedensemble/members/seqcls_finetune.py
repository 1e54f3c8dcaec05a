"""``seqcls-finetune``: ``AutoModelForSequenceClassification`` with LoRA or IA3 adapters.

The model's own classification head (``score`` for decoders, ``classifier`` for encoders) is
new, so it is trained fully (peft ``modules_to_save``) while the body gets the adapter. Decoder
classifiers read the last token that is not ``pad_token_id``; pad is set to a token that is not
the appended EOS so that the EOS is what they read.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._logging import get_logger
from ..finetune.classifiers import HEAD_NAMES, SequenceClassifierLogits, head_name
from ..finetune.modeling import (
    apply_adapter,
    backbone_spec,
    load_adapter,
    load_base,
    load_full,
    save_adapter,
    save_full,
    text_format,
)
from ..labels import EMOTIONS, N_LABELS
from .base import register_member
from .finetune_member import FinetuneMember

logger = get_logger(__name__)


@register_member("seqcls-finetune")
class SeqClsFinetuneMember(FinetuneMember):
    """Fine-tunes ``AutoModelForSequenceClassification`` (multi-label, 11 emotions) with LoRA/IA3 or fully.

    Saved as ``adapter/`` (adapter + head, peft format) or, for ``adapter="none"``,
    ``model.safetensors``; plus ``finetune.json``.
    """

    def _build(self, *, training: bool) -> None:
        from transformers import AutoModelForSequenceClassification

        where = f"member '{self.config.name}'"
        self.spec = backbone_spec(self.config.backbone, self.args, where)
        overrides = {
            "num_labels": N_LABELS,
            "problem_type": "multi_label_classification",
            "id2label": dict(enumerate(EMOTIONS)),
            "label2id": {name: i for i, name in enumerate(EMOTIONS)},
        }
        model, self.tokenizer = load_base(
            self.spec,
            self.args,
            self.device,
            bf16=self.bf16,
            training=training,
            model_class=AutoModelForSequenceClassification,
            config_overrides=overrides,
        )
        fmt = text_format(self.spec, self.tokenizer, self.args, append_eos=self.append_eos)
        if fmt.append_eos and fmt.pad_token_id == self.tokenizer.eos_token_id:
            # The classifier reads the last token that is not pad_token_id, so an EOS that doubles
            # as pad would be skipped: pad with UNK instead, or else drop the appended EOS.
            if self.tokenizer.unk_token_id is not None and self.tokenizer.unk_token_id != self.tokenizer.eos_token_id:
                fmt.pad_token_id = int(self.tokenizer.unk_token_id)
            else:
                fmt.append_eos = False
        self.fmt = fmt
        model.config.pad_token_id = fmt.pad_token_id
        head = head_name(model)
        getattr(model, head).to(torch.float32)
        model = apply_adapter(model, self.args, task_type="SEQ_CLS", modules_to_save=[head])
        self.model = SequenceClassifierLogits(model)

    def _is_head_param(self, name: str) -> bool:
        return "modules_to_save" in name or any(f".{head}." in name for head in HEAD_NAMES)

    def _save_weights(self, path: Path) -> None:
        if self.args.adapter == "none":
            save_full(self.model.model, path / "model.safetensors")
        else:
            save_adapter(self.model.model, path / "adapter")

    def _load_weights(self, path: Path) -> None:
        if self.args.adapter == "none":
            load_full(self.model.model, path / "model.safetensors")
        else:
            load_adapter(self.model.model, path / "adapter")
        for param in self.model.parameters():
            param.requires_grad_(False)
