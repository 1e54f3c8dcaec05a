"""``ema_decay``: fine-tunes that end with an exponential moving average of their trainable weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import make_tweets
from tiny_models import make_tiny_st_encoder

from embedensemble.config import MemberConfig
from embedensemble.errors import ConfigError
from embedensemble.finetune import FinetuneArgs
from embedensemble.finetune.averaging import WeightAverage
from embedensemble.finetune.checkpoint import trainable_state
from embedensemble.members.base import MemberContext, build_member

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"adapter": "none", "batch_size": 8, "warmup_ratio": 0.0, "predict_batch_size": 7, "lr": 5e-3}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_tiny_st_encoder(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def tweets() -> tuple[list[str], np.ndarray]:
    texts, labels = make_tweets(32, seed=5)
    return texts, labels.astype(np.float32)


def _member(encoder, **params):
    config = MemberConfig(name="m", kind="pooled-finetune", backbone=str(encoder), params={**FAST, **params})
    return build_member(config, MemberContext(seed=3, device="cpu"))


def _weights(member) -> dict[str, torch.Tensor]:
    return {name: p.detach().float().clone() for name, p in trainable_state(member.model).items()}


def test_average_follows_the_warmed_up_formula():
    layer = torch.nn.Linear(2, 1)
    start = layer.weight.detach().clone()
    average = WeightAverage(layer, decay=0.5)
    assert average.factor(1) == pytest.approx(2 / 11) and average.factor(100) == 0.5
    with torch.no_grad():
        layer.weight.add_(1.0)
    average.update(layer, step=1)
    torch.testing.assert_close(average.shadow["weight"], start * 2 / 11 + (start + 1.0) * 9 / 11)
    average.copy_to(layer)
    torch.testing.assert_close(layer.weight.detach(), average.shadow["weight"])


def test_fine_tune_ends_with_the_average_of_its_steps(encoder, tweets, monkeypatch):
    texts, labels = tweets
    member = _member(encoder, max_steps=6, ema_decay=0.6, save_every_steps=1000)
    started: dict[str, torch.Tensor] = {}

    class RecordingAverage(WeightAverage):
        def __init__(self, model, decay):
            super().__init__(model, decay)
            started.update({n: t.clone() for n, t in self.shadow.items()})

    monkeypatch.setattr("embedensemble.finetune.training.WeightAverage", RecordingAverage)
    expected: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}

    def track(step, record):
        last.update(_weights(member))
        keep = min(0.6, (1 + step) / (10 + step))
        base = dict(expected) if expected else started
        expected.update({n: keep * base[n] + (1 - keep) * w for n, w in last.items()})

    member.step_callback = track
    member.fit(texts, labels)
    assert member.train_stats_["steps"] == 6 and started
    final = _weights(member)
    for name, value in final.items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
    # (some trainable tensors, such as an unused pooler, never change: at least one must differ)
    assert any(not torch.allclose(value, last[name]) for name, value in final.items()), "the last step's weights were kept"


def test_resumed_fine_tune_ends_with_the_same_average(encoder, tweets, tmp_path):
    texts, labels = tweets
    params = {"epochs": 3, "ema_decay": 0.7, "save_every_steps": 2}
    expected = _member(encoder, **params).fit(texts, labels).predict_proba(texts)

    class Interrupt(Exception):
        pass

    def crash(step, record):
        if step == 5:
            raise Interrupt

    first = _member(encoder, **params)
    first.step_callback = crash
    with pytest.raises(Interrupt):
        first.fit(texts, labels, workdir=tmp_path)
    assert (tmp_path / "checkpoint-4" / "averaged.safetensors").is_file()
    resumed = _member(encoder, **params).fit(texts, labels, workdir=tmp_path)
    assert resumed.train_stats_["resumed_from_step"] == 4
    np.testing.assert_allclose(resumed.predict_proba(texts), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("params", "message"),
    [({"ema_decay": 1.0}, "'ema_decay' must be in \\(0, 1\\)"), ({"ema_decay": 0.9, "eval_fraction": 0.2}, "set one")],
)
def test_bad_ema_settings_are_rejected(params, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneArgs.from_params({"adapter": "none", **params}, kind="pooled-finetune", where="member 'm': params")
