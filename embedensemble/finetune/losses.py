"""The fine-tunes' multi-label loss: BCE, optionally weighting positive labels, optionally blended with a
label-correlation-aware ranking term.

BCE scores each emotion on its own. The LCA term of SpanEmo (Alhuzali & Ananiadou, EACL 2021) looks at a tweet's
emotions together: every emotion it expresses should score above every emotion it does not, which is what a
label set decoded by thresholds needs. It is taken here on probabilities, not logits, so that one badly ranked
pair cannot produce an unbounded term (``exp`` of a logit gap) early in training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .args import FinetuneArgs


def pos_weight_vector(args: FinetuneArgs, labels: np.ndarray) -> np.ndarray | None:
    """Per-emotion positive weights: ``"auto"`` = negatives / positives, clipped to ``[1, pos_weight_max]``."""
    if args.pos_weight is None:
        return None
    if isinstance(args.pos_weight, list):
        return np.asarray(args.pos_weight, dtype=np.float32)
    positives = labels.sum(axis=0)
    ratio = (len(labels) - positives) / np.maximum(positives, 1.0)
    return np.clip(ratio, 1.0, args.pos_weight_max).astype(np.float32)


def label_correlation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the mean, over (expressed p, not expressed q) emotion pairs, of ``exp(P_q - P_p)``
    (``P``: sigmoid probabilities). A row expressing all emotions or none has no pair and adds 0."""
    proba = torch.sigmoid(logits)
    gaps = proba[:, None, :] - proba[:, :, None]  # [row, p, q] = P_q - P_p
    pairs = target[:, :, None] * (1.0 - target[:, None, :])  # p expressed, q not
    per_row = (gaps.exp() * pairs).sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1.0)
    return per_row.mean()


class MultiLabelLoss(nn.Module):
    """``(1 - lca_weight) * BCE + lca_weight * LCA``; ``pos_weight`` [11] weighs positive labels in the BCE."""

    def __init__(self, pos_weight: np.ndarray | None = None, lca_weight: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= lca_weight <= 1.0:
            raise ValueError(f"lca_weight must be in [0, 1], got {lca_weight}")
        self.lca_weight = float(lca_weight)
        self.register_buffer("pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        if self.lca_weight == 0.0:
            return bce
        return (1.0 - self.lca_weight) * bce + self.lca_weight * label_correlation_loss(logits, target)
