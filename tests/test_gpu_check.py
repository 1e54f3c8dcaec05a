"""GPU check (issue 12) on CPU: packing gives the padded path's numbers, and the one-command check
(both sides, one JSON) runs end to end with tiny shapes and renders its ratios in the README block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_tweets
from tiny_models import make_tiny_decoder

from embedensemble.backbones.tokens import TextFormat, collate, pool
from embedensemble.backbones.packing import SLACK_SEGMENT, embed_packed, pack, pack_rows
from embedensemble.config import MemberConfig
from embedensemble.members.base import MemberContext, build_member

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "gpu-reference" / "plain_reference.py"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_mistral(attn: str):
    from transformers import MistralConfig, MistralModel

    config = MistralConfig(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=2, vocab_size=300, max_position_embeddings=512,
    )
    config._attn_implementation = attn
    torch.manual_seed(0)
    return MistralModel(config).eval()


def _random_ids(n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 300, size=int(k)).tolist() for k in rng.integers(2, 60, size=n)]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_pack_rows_place_every_text_once_within_the_width():
    lengths = [5, 120, 30, 31, 64, 64, 1, 127, 90]
    rows = pack_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) == 5  # sum 532 -> at least 5 rows of 128; best-fit decreasing reaches it
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([129], 128)


def test_pack_layout_positions_segments_and_last_index():
    ids = [[7, 8, 9], [4], [5, 6]]
    batch = pack(ids, pad_id=0, width=4)
    flat = batch["input_ids"].flatten()
    for i, row in enumerate(ids):
        assert int(flat[batch["last_index"][i]]) == row[-1]
        assert int(batch["position_ids"].flatten()[batch["last_index"][i]]) == len(row) - 1
    assert int(batch["attention_mask"].sum()) == 6 and batch["input_ids"].shape == (2, 4)
    assert (batch["segment_ids"][batch["attention_mask"] == 0] == SLACK_SEGMENT).all()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_embedding_equals_padded(attn):
    model = _tiny_mistral(attn)
    ids = _random_ids(40)
    packed = embed_packed(model, ids, pad_id=0, batch_size=8, width=64)
    with torch.no_grad():
        padded_batch = collate(ids, TextFormat(max_length=max(map(len, ids)), padding_side="left", pad_token_id=0))
        input_ids, mask = padded_batch["input_ids"], padded_batch["attention_mask"]
        hidden = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).last_hidden_state
        padded = pool(hidden, mask, "last_token").numpy()
    assert packed.shape == padded.shape
    assert _cosine(packed, padded).min() > 0.999
    np.testing.assert_allclose(packed, padded, atol=1e-4)


def test_encoder_packing_option_matches_and_keys_the_cache(tmp_path):
    from embedensemble.backbones import Encoder, get_backbone_spec

    folder = make_tiny_decoder(tmp_path / "mistral", "mistral", with_pad_token=False)
    spec = get_backbone_spec(str(folder), normalize=False)
    texts, _ = make_tweets(24, seed=3)
    plain = Encoder(spec, device="cpu", batch_size=8, cache_root=tmp_path)
    packed = Encoder(spec, device="cpu", batch_size=8, cache_root=tmp_path, packing=True)
    assert _cosine(plain.encode(texts), packed.encode(texts)).min() > 0.999
    assert plain.identity != packed.identity  # rounding differs: cached vectors of one are not served for the other


def _fit(folder: Path, texts, labels, **params):
    base = {"batch_size": 8, "max_steps": 4, "lr": 5e-3, "warmup_ratio": 0.0, "lora_dropout": 0.0, "save_every_steps": 1000,
            "predict_batch_size": 8, "lora_r": 4}
    config = MemberConfig(name="m", kind="pooled-finetune", backbone=str(folder), params={**base, **params})
    return build_member(config, MemberContext(seed=3, device="cpu")).fit(texts, labels)


@pytest.mark.parametrize("quantize_4bit", [False, True])
def test_packed_finetuning_gives_the_padded_loss_curve_and_embeddings(tmp_path, quantize_4bit):
    if quantize_4bit:
        pytest.importorskip("bitsandbytes")
    folder = make_tiny_decoder(tmp_path / "mistral", "mistral", with_pad_token=False)
    texts, labels = make_tweets(32, seed=5)
    labels = labels.astype(np.float32)
    padded = _fit(folder, texts, labels, quantize_4bit=quantize_4bit)
    packed = _fit(folder, texts, labels, quantize_4bit=quantize_4bit, packing=True)
    assert packed.fmt.packing and not padded.fmt.packing
    loss_padded = [h["loss"] for h in padded.train_stats_["history"]]
    loss_packed = [h["loss"] for h in packed.train_stats_["history"]]
    np.testing.assert_allclose(loss_packed, loss_padded, rtol=1e-4)
    assert loss_packed[-1] != loss_packed[0]  # the weights moved: the comparison covers updates, not only the start
    assert packed.train_stats_["padding_fraction"] < padded.train_stats_["padding_fraction"]
    assert _cosine(packed.embed(texts), padded.embed(texts)).min() > 0.999
    np.testing.assert_allclose(packed.predict_proba(texts), padded.predict_proba(texts), atol=1e-4)


def test_packing_is_rejected_for_sequence_classifiers(tmp_path):
    from embedensemble.errors import ConfigError
    from embedensemble.finetune import FinetuneArgs

    with pytest.raises(ConfigError, match="'packing'"):
        FinetuneArgs.from_params({"packing": True}, kind="seqcls-finetune", where="member 'x'")
