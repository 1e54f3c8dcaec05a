"""The fine-tunes' loss: BCE with pos_weight, and SpanEmo's label-correlation-aware term blended in by lca_weight."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_tweets
from tiny_models import make_tiny_st_encoder

from embedensemble.config import MemberConfig
from embedensemble.errors import ConfigError
from embedensemble.finetune import FinetuneArgs
from embedensemble.finetune.losses import MultiLabelLoss, label_correlation_loss
from embedensemble.members.base import MemberContext, build_member

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_the_lca_term_averages_exp_of_each_non_expressed_minus_expressed_probability_over_a_rows_pairs() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.1, -0.2], [1.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])  # the last row has no pair
    p = [[_sigmoid(float(v)) for v in row] for row in logits]
    row0 = (math.exp(p[0][1] - p[0][0]) + math.exp(p[0][2] - p[0][0])) / 2
    row1 = (math.exp(p[1][2] - p[1][0]) + math.exp(p[1][2] - p[1][1])) / 2
    assert float(label_correlation_loss(logits, target)) == pytest.approx((row0 + row1 + 0.0) / 3, rel=1e-6)


def test_the_lca_term_falls_when_expressed_emotions_rise_above_the_others() -> None:
    target = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    logits = torch.zeros(1, 4, requires_grad=True)
    label_correlation_loss(logits, target).backward()
    assert (logits.grad[0, [0, 2]] < 0).all() and (logits.grad[0, [1, 3]] > 0).all()  # descent raises 0 and 2


def test_without_lca_the_loss_is_torchs_bce_with_the_same_pos_weight_and_blends_by_the_weight() -> None:
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(6, 11)), dtype=torch.float32)
    target = torch.tensor(rng.random((6, 11)) < 0.3, dtype=torch.float32)
    weights = np.linspace(1.0, 5.0, 11).astype(np.float32)
    bce = torch.nn.BCEWithLogitsLoss(pos_weight=torch.as_tensor(weights))(logits, target)
    assert float(MultiLabelLoss(weights)(logits, target)) == pytest.approx(float(bce), rel=1e-6)
    blended = MultiLabelLoss(weights, lca_weight=0.2)(logits, target)
    assert float(blended) == pytest.approx(0.8 * float(bce) + 0.2 * float(label_correlation_loss(logits, target)), rel=1e-6)
    with pytest.raises(ValueError, match="lca_weight"):
        MultiLabelLoss(None, lca_weight=1.5)


def test_lca_weight_is_checked_in_the_config_and_a_member_trains_with_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'lca_weight' must be in \\[0, 1\\]"):
        FinetuneArgs.from_params({"lca_weight": -0.1}, kind="pooled-finetune")
    texts, labels = make_tweets(32, seed=7)
    params = {"adapter": "none", "lr": 2e-3, "max_steps": 8, "batch_size": 8, "warmup_ratio": 0.0, "save_every_steps": 1000}
    encoder, probas = make_tiny_st_encoder(tmp_path / "bert"), []
    for lca in (0.0, 0.5):
        config = MemberConfig(name="m", kind="pooled-finetune", backbone=str(encoder), params=params | {"lca_weight": lca})
        member = build_member(config, MemberContext(seed=3, device="cpu")).fit(texts, labels.astype(np.float32))
        losses = [h["loss"] for h in member.train_stats_["history"]]
        assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
        probas.append(member.predict_proba(texts))
    assert np.abs(probas[0] - probas[1]).max() > 1e-4  # the term changes what is learned
