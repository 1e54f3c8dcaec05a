"""The label-attention head of pooled-finetune members: one attention query per emotion over token states."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import make_tweets
from tiny_models import make_tiny_st_encoder

from embedensemble.config import MemberConfig
from embedensemble.errors import ConfigError
from embedensemble.finetune.classifiers import LabelAttentionHead
from embedensemble.members.base import MemberContext, build_member, load_member

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"batch_size": 8, "warmup_ratio": 0.0, "save_every_steps": 1000, "predict_batch_size": 7, "adapter": "none"}


def _member(backbone, **params):
    config = MemberConfig(name="la", kind="pooled-finetune", backbone=str(backbone), params={**FAST, **params})
    return build_member(config, MemberContext(seed=3, device="cpu"))


def test_each_emotion_attends_over_real_tokens_only_and_scores_its_own_vector() -> None:
    torch.manual_seed(0)
    head = LabelAttentionHead(hidden=8, n_labels=3)
    hidden, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    logits = head(hidden, mask)
    assert logits.shape == (2, 3)
    # what sits under padding changes nothing
    noisy = hidden.clone()
    noisy[0, 3:] = 100.0
    torch.testing.assert_close(head(noisy, mask), logits)
    # emotion 1 of text 0, by hand
    weights = torch.softmax(hidden[0, :3] @ head.queries[1] / 8**0.5, dim=0)
    expected = (weights @ hidden[0, :3]) @ head.weight[1] + head.bias[1]
    torch.testing.assert_close(logits[0, 1], expected)


def test_label_attention_member_trains_on_top_layers_saves_and_reloads(tmp_path) -> None:
    texts, labels = make_tweets(32, seed=7)
    member = _member(make_tiny_st_encoder(tmp_path / "bert"), lr=2e-3, head_lr=1e-2, max_steps=8, head="label_attention",
                     train_top_layers=1)
    member.fit(texts, labels.astype(np.float32))
    losses = [h["loss"] for h in member.train_stats_["history"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert isinstance(member.model.head, LabelAttentionHead)
    before = member.predict_proba(texts)
    assert before.shape == (32, 11) and np.all((before > 0) & (before < 1))
    member.save(tmp_path / "fold")
    reloaded = load_member(tmp_path / "fold", MemberContext(seed=99, device="cpu"))
    np.testing.assert_allclose(reloaded.predict_proba(texts), before, rtol=1e-5, atol=1e-6)
    assert reloaded.embed(texts[:4]).shape == (4, member.model.head.queries.shape[1])  # still a feature source


@pytest.mark.parametrize("kind,params,match", [
    ("pooled-finetune", {"head": "attention"}, "'head' 'attention' is not one of"),
    ("seqcls-finetune", {"head": "label_attention"}, "needs kind 'pooled-finetune'"),
    ("pooled-finetune", {"head": "label_attention", "packing": True, "adapter": "lora"}, "without 'packing'"),
])
def test_label_attention_config_errors_name_the_key(tmp_path, kind, params, match) -> None:
    config = MemberConfig(name="bad", kind=kind, backbone="minilm", params=params)
    with pytest.raises(ConfigError, match=match):
        build_member(config, MemberContext(seed=0, device="cpu"))


def test_label_attention_member_is_refused_by_the_onnx_export(tmp_path) -> None:
    from embedensemble.onnx_export import export_student

    texts, labels = make_tweets(16, seed=1)
    member = _member(make_tiny_st_encoder(tmp_path / "bert"), max_steps=1, head="label_attention")
    member.fit(texts, labels.astype(np.float32))
    with pytest.raises(ConfigError, match="only a linear head"):
        export_student(member, tmp_path / "onnx")
