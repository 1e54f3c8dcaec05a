"""An exponential moving average (EMA) of the trainable weights, kept beside the training loop.

A fine-tune here ends after two or three epochs; the last step's weights still carry the noise of the
last batches. The running average of the weights along the path (Polyak averaging; the same idea as
SWA and timm's ``ModelEmaV2``) sits nearer the middle of the basin and often predicts a little
better, at no extra forward or backward pass. Only trainable tensors are averaged, so a QLoRA member
averages its adapters and head, never its 4-bit base. The average lives on the parameters' device, in
float32, and travels in checkpoints, so a resumed run ends with the same average.
"""

from __future__ import annotations

import torch

from .checkpoint import copy_named, load_trainable_state, trainable_state


class WeightAverage:
    """``shadow = d * shadow + (1 - d) * weights`` after each optimizer step.

    ``d = min(decay, (1 + step) / (10 + step))``: the warm-up keeps the first steps from being
    dominated by the starting weights, which a short run would otherwise never forget.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in trainable_state(model).items()}

    def factor(self, step: int) -> float:
        """The weight ``d`` that the average keeps at optimizer step ``step`` (1-based)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        keep = self.factor(step)
        for name, param in trainable_state(model).items():
            self.shadow[name].lerp_(param.detach().float(), 1.0 - keep)

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the average from a checkpoint's tensors (same names as the trainable weights)."""
        copy_named(self.shadow, tensors, "averaged weights")

    def copy_to(self, model: torch.nn.Module) -> None:
        """Put the averaged weights into ``model`` (cast to each parameter's dtype)."""
        load_trainable_state(model, self.shadow)
