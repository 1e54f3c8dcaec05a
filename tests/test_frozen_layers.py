"""``train_top_layers``: only the top encoder layers train; the frozen ones run once per text (cached)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_tweets
from tiny_models import make_tiny_decoder, make_tiny_st_encoder

from embedensemble.config import MemberConfig
from embedensemble.errors import ArtifactError, ConfigError
from embedensemble.finetune import frozen_layers
from embedensemble.finetune.frozen_layers import TopLayersBackbone, clear_frozen_states
from embedensemble.members.base import MemberContext, build_member, load_member

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-encoders")
    return {arch: make_tiny_st_encoder(root / arch, architecture=arch, seed=1) for arch in ("bert", "mpnet")}


@pytest.fixture(autouse=True)
def _empty_cache():
    clear_frozen_states()
    yield
    clear_frozen_states()


def _member(backbone: Path, **params):
    params = {"adapter": "none", "batch_size": 8, "warmup_ratio": 0.0, "save_every_steps": 1000, "predict_batch_size": 5,
              "train_top_layers": 1, "lr": 2e-3, **params}
    config = MemberConfig(name="top", kind="pooled-finetune", backbone=str(backbone), params=params)
    return build_member(config, MemberContext(seed=3, device="cpu"))


def _batch(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("architecture", ["bert", "mpnet"])
def test_top_layers_output_equals_the_whole_encoder_for_every_padding(encoders, architecture):
    from transformers import AutoModel, AutoTokenizer

    folder = encoders[architecture]
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    wrapped = TopLayersBackbone(AutoModel.from_pretrained(folder), 1, cache_key=f"test-{architecture}").eval()
    texts = ["a", "so happy today", "what a long and winding day this was, honestly", "ok"]
    for batch in (texts, texts[1:3], texts[::-1]):  # the same text padded to other widths, cached or not
        ids, mask = _batch(tokenizer, batch)
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask).last_hidden_state
            got = wrapped(input_ids=ids, attention_mask=mask).last_hidden_state
        real = mask.bool()
        torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)
    assert len(frozen_layers._STATES[(f"test-{architecture}", wrapped.n_frozen, None)]) == len(texts)


def test_states_under_bf16_autocast_are_kept_apart(encoders):
    from transformers import AutoModel, AutoTokenizer

    folder = encoders["mpnet"]
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    wrapped = TopLayersBackbone(AutoModel.from_pretrained(folder), 1, cache_key="test-bf16").eval()
    ids, mask = _batch(tokenizer, ["so happy today", "what a long and winding day this was"])
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = wrapped(input_ids=ids, attention_mask=mask).last_hidden_state
        got = wrapped(input_ids=ids, attention_mask=mask).last_hidden_state  # not the bf16 states
        want = model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(low[real].float(), want[real], atol=1e-5)
    assert {key[-1] for key in frozen_layers._STATES if key[0] == "test-bf16"} == {None, torch.bfloat16}


@pytest.mark.parametrize("architecture", ["bert", "mpnet"])
def test_only_the_top_layers_train_and_only_they_are_saved(encoders, tmp_path, architecture):
    from transformers import AutoModel

    texts, labels = make_tweets(32, seed=5)
    member = _member(encoders[architecture], max_steps=6)
    member.fit(texts, labels.astype(np.float32))
    losses = [h["loss"] for h in member.train_stats_["history"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    base = AutoModel.from_pretrained(encoders[architecture]).state_dict()
    trained = member.model.backbone.model.state_dict()
    top = [k for k in base if k.startswith("encoder.layer.1.")]
    # Everything else stays as loaded, also weights the layers share (MPNet's relative_attention_bias).
    unchanged = [k for k in base if k not in top]
    assert any("embeddings" in k for k in unchanged) and any(k.startswith("encoder.layer.0.") for k in unchanged)
    assert [k for k in unchanged if not torch.equal(base[k], trained[k])] == []
    assert not any(torch.equal(base[k], trained[k]) for k in top if k.endswith("weight"))
    assert sorted(member.model.backbone.trainable_state_dict()) == sorted(top)

    before = member.predict_proba(texts)
    clear_frozen_states()  # recomputed frozen states give the same predictions as cached ones
    np.testing.assert_allclose(member.predict_proba(texts), before, rtol=1e-5, atol=1e-6)
    member.save(tmp_path / "fold")
    assert (tmp_path / "fold" / "top_layers.safetensors").is_file()
    assert not (tmp_path / "fold" / "backbone.safetensors").exists()
    reloaded = load_member(tmp_path / "fold", MemberContext(seed=9, device="cpu"))
    np.testing.assert_allclose(reloaded.predict_proba(texts), before, rtol=1e-5, atol=1e-6)


def test_saved_top_layers_of_another_depth_are_refused(encoders, tmp_path):
    from embedensemble.finetune.checkpoint import read_tensors, write_tensors

    texts, labels = make_tweets(16, seed=2)
    member = _member(encoders["bert"], max_steps=1)
    member.fit(texts, labels.astype(np.float32))
    member.save(tmp_path / "fold")
    weights = tmp_path / "fold" / "top_layers.safetensors"
    tensors = read_tensors(weights)
    write_tensors(weights, {k: v for k, v in tensors.items() if "attention" not in k})
    with pytest.raises(ArtifactError, match="top_layers.safetensors.*missing"):
        load_member(tmp_path / "fold", MemberContext(seed=9, device="cpu"))


def test_bad_train_top_layers_settings_are_named(encoders, tmp_path):
    with pytest.raises(ConfigError, match="'train_top_layers' needs kind 'pooled-finetune' with adapter"):
        _member(encoders["bert"], adapter="lora")
    texts, labels = make_tweets(8, seed=1)
    with pytest.raises(ConfigError, match=r"must be in 1\.\.2"):
        _member(encoders["bert"], train_top_layers=3).fit(texts, labels.astype(np.float32))
    decoder = make_tiny_decoder(tmp_path / "qwen2", "qwen2")
    with pytest.raises(ConfigError, match="needs an encoder"):
        _member(decoder).fit(texts, labels.astype(np.float32))
