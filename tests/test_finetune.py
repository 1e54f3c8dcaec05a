"""Fine-tuning members on tiny random models: training, 4-bit, save/load, resume, pooling, config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_tweets
from tiny_models import make_tiny_decoder, make_tiny_st_encoder

from embedensemble.backbones.tokens import TextFormat, collate, last_token_index
from embedensemble.config import MemberConfig
from embedensemble.errors import ConfigError, NumericalError
from embedensemble.finetune import FinetuneArgs, PooledClassifier
from embedensemble.finetune.batching import length_bucketed_batches
from embedensemble.members.base import MemberContext, build_member, load_member

ROOT = Path(__file__).resolve().parents[1]

# -- fixtures ----------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        # Mistral checkpoints have no pad token: the member must pick one.
        "mistral": make_tiny_decoder(root / "mistral", "mistral", with_pad_token=False),
        "qwen2": make_tiny_decoder(root / "qwen2", "qwen2"),
        "gemma": make_tiny_decoder(root / "gemma", "gemma"),
        "bert": make_tiny_st_encoder(root / "bert"),
    }


@pytest.fixture(scope="module")
def tweets() -> tuple[list[str], np.ndarray]:
    texts, labels = make_tweets(32, seed=7)
    return texts, labels.astype(np.float32)


FAST = {"batch_size": 8, "warmup_ratio": 0.0, "save_every_steps": 1000, "predict_batch_size": 7}


def _member(kind: str, backbone: Path, **params):
    config = MemberConfig(name="m", kind=kind, backbone=str(backbone), params={**FAST, **params})
    return build_member(config, MemberContext(seed=3, device="cpu"))


def _assert_learns(member) -> None:
    losses = [h["loss"] for h in member.train_stats_["history"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses


def _roundtrip(member, texts, tmp_path: Path) -> None:
    before = member.predict_proba(texts)
    member.save(tmp_path / "fold")
    reloaded = load_member(tmp_path / "fold", MemberContext(seed=99, device="cpu"))
    assert type(reloaded) is type(member)
    np.testing.assert_allclose(reloaded.predict_proba(texts), before, rtol=1e-6, atol=1e-7)
    assert before.shape == (len(texts), 11) and np.all((before > 0) & (before < 1))


# -- members -------------------------------------------------------------------------------------------


def test_pooled_lora_decoder_trains_saves_and_reloads(models, tweets, tmp_path):
    texts, labels = tweets
    member = _member(
        "pooled-finetune", models["mistral"], lr=5e-3, max_steps=8, pos_weight="auto", backbone_options={"append_eos": True}
    )
    member.fit(texts, labels)
    _assert_learns(member)
    assert member.fmt.padding_side == "left" and member.fmt.append_eos
    _roundtrip(member, texts, tmp_path)
    saved = sorted(p.name for p in (tmp_path / "fold" / "adapter").iterdir())
    assert saved == ["adapter_config.json", "adapter_model.safetensors"]
    emb = member.embed(texts[:5])
    assert emb.shape == (5, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(member.embed(texts[:5], normalize=True), axis=1), 1.0, rtol=1e-5)
    member.release()
    with pytest.raises(RuntimeError, match="not fitted or loaded"):
        member.predict_proba(texts[:2])


def test_pooled_qlora_4bit(models, tweets, tmp_path):
    pytest.importorskip("bitsandbytes")
    texts, labels = tweets
    member = _member("pooled-finetune", models["qwen2"], quantize_4bit=True, lr=5e-3, max_steps=8, lora_r=4)
    member.fit(texts, labels)
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in member.model.modules())
    _assert_learns(member)
    _roundtrip(member, texts, tmp_path)


def test_pooled_full_finetune_encoder(models, tweets, tmp_path):
    texts, labels = tweets
    member = _member("pooled-finetune", models["bert"], adapter="none", lr=2e-3, max_steps=8)
    member.fit(texts, labels)
    _assert_learns(member)
    assert member.fmt.padding_side == "right" and member.model.pooling == "mean"
    _roundtrip(member, texts, tmp_path)
    assert (tmp_path / "fold" / "backbone.safetensors").is_file()


def test_normalise_param_feeds_normalised_tweets_to_training_and_prediction(models, tweets, tmp_path):
    from embedensemble.normalise import normalise_tweet

    texts = ["so happy \U0001F602 #BestDayEver @friend", "&amp; soooo scared http://t.co/x"] + tweets[0][:14]
    labels = tweets[1][:16]
    plain = _member("pooled-finetune", models["bert"], adapter="none", max_steps=2)
    member = _member("pooled-finetune", models["bert"], adapter="none", max_steps=2, normalise=True)
    member.fit(texts, labels)
    plain._build(training=False)
    assert member._tokenize(texts[:2]) == plain._tokenize([normalise_tweet(t) for t in texts[:2]])
    assert member._tokenize(texts[:2]) != plain._tokenize(texts[:2])
    _roundtrip(member, texts, tmp_path)  # the reloaded member normalises too: same probabilities
    with pytest.raises(ConfigError, match="'normalise' must be true/false"):
        FinetuneArgs.from_params({"normalise": "yes"}, kind="pooled-finetune")


@pytest.mark.parametrize("adapter,family,lr", [("lora", "gemma", 5e-3), ("ia3", "mistral", 5e-2)])
def test_seqcls_adapters(models, tweets, tmp_path, adapter, family, lr):
    texts, labels = tweets
    member = _member(
        "seqcls-finetune", models[family], adapter=adapter, lr=lr, max_steps=8, backbone_options={"append_eos": True}
    )
    member.fit(texts, labels)
    _assert_learns(member)
    inner = member.model.model
    assert inner.config.problem_type == "multi_label_classification" and inner.config.num_labels == 11
    assert inner.config.id2label[4] == "joy"
    # The classifier reads the last token that is not pad: the appended EOS must not be the pad.
    assert member.fmt.append_eos and inner.config.pad_token_id == member.fmt.pad_token_id != member.tokenizer.eos_token_id
    trainable = [n for n, p in member.model.named_parameters() if p.requires_grad]
    assert any("score.modules_to_save" in n for n in trainable)
    _roundtrip(member, texts, tmp_path)


def test_resume_after_interruption_equals_uninterrupted(models, tweets, tmp_path):
    texts, labels = tweets
    # Dropout on and 3 epochs (4 steps each): resuming must restore RNG state and data order.
    params = {"lr": 5e-3, "epochs": 3, "lora_dropout": 0.2, "save_every_steps": 2, "eval_fraction": 0.25}
    reference = _member("pooled-finetune", models["mistral"], **params).fit(texts, labels)
    expected = reference.predict_proba(texts)

    class Interrupt(Exception):
        pass

    def crash(step, record):
        if step == 5:
            raise Interrupt

    workdir = tmp_path / "work"
    first = _member("pooled-finetune", models["mistral"], **params)
    first.step_callback = crash
    with pytest.raises(Interrupt):
        first.fit(texts, labels, workdir=workdir)
    assert sorted(p.name for p in workdir.iterdir()) == ["checkpoint-4"]

    resumed = _member("pooled-finetune", models["mistral"], **params).fit(texts, labels, workdir=workdir)
    assert resumed.train_stats_["resumed_from_step"] == 4
    assert resumed.train_stats_["steps"] == reference.train_stats_["steps"]
    np.testing.assert_allclose(resumed.predict_proba(texts), expected, rtol=1e-6, atol=1e-7)
    ref_losses = [h["loss"] for h in reference.train_stats_["history"]]
    assert [h["loss"] for h in resumed.train_stats_["history"]] == pytest.approx(ref_losses, rel=1e-5)


def test_checkpoint_for_other_data_is_ignored(models, tweets, tmp_path):
    texts, labels = tweets
    params = {"lr": 5e-3, "max_steps": 4, "save_every_steps": 2}
    workdir = tmp_path / "work"
    _member("pooled-finetune", models["bert"], adapter="none", **params).fit(texts, labels, workdir=workdir)
    assert (workdir / "checkpoint-2").is_dir()
    other = _member("pooled-finetune", models["bert"], adapter="none", **params).fit(texts[:24], labels[:24], workdir=workdir)
    assert other.train_stats_["resumed_from_step"] is None


def test_diverged_training_stops_with_the_step_and_keeps_no_nan_weights(models, tweets, monkeypatch):
    texts, labels = tweets
    member = _member("pooled-finetune", models["mistral"], lr=1e-3, max_steps=4, lora_r=4)
    real_forward = PooledClassifier.forward
    calls = {"n": 0}

    def forward_then_nan(self, *args, **kwargs):
        calls["n"] += 1
        logits = real_forward(self, *args, **kwargs)
        return logits * float("nan") if calls["n"] >= 3 and self.training else logits

    monkeypatch.setattr(PooledClassifier, "forward", forward_then_nan)
    with pytest.raises(NumericalError, match="member .m.: fine-tuning diverged at step 3"):  # forward 3 = step 3
        member.fit(texts, labels)
    trained = [p for p in member.model.parameters() if p.requires_grad]
    assert trained and all(torch.isfinite(p).all() for p in trained)  # the NaN step was never applied


def test_non_finite_predictions_name_the_texts():
    from embedensemble.finetune.training import predict_outputs

    def model(input_ids, attention_mask, position_ids=None):
        out = torch.zeros((input_ids.shape[0], 11))
        out[attention_mask.sum(dim=1) == 2] = float("inf")  # only the 2-token text overflows
        return out

    fmt = TextFormat(max_length=16, padding_side="left", pad_token_id=0, position_ids=True)
    ids = [[5, 6, 7], [5, 6], [1, 2, 3, 4]]
    with pytest.raises(NumericalError, match=r"text\(s\) \[1\]"):
        predict_outputs(model, ids, fmt, batch_size=2, device=torch.device("cpu"), bf16=False)


# -- pooling and batching ------------------------------------------------------------------------------


def test_last_token_index_handles_left_and_right_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]])
    assert last_token_index(mask).tolist() == [3, 3, 1]


def test_last_token_pooling_reads_last_real_token_with_left_padding(models, tweets):
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(models["mistral"]).eval()
    model = PooledClassifier(backbone, 32, "last_token")
    fmt = TextFormat(max_length=64, padding_side="left", pad_token_id=0, position_ids=True)
    short, long = [5, 6, 7], [5, 8, 9, 10, 11, 12, 6, 7]
    batch = collate([short, long], fmt)
    assert batch["attention_mask"][0].tolist() == [0] * 5 + [1] * 3
    with torch.no_grad():
        together = model.embed(**batch)
        alone = model.embed(**collate([short], fmt))
        hidden = backbone(**{k: v for k, v in collate([short], fmt).items()}).last_hidden_state
    # The padded row's embedding is its own last token's state, unaffected by the padding.
    torch.testing.assert_close(together[0], alone[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone[0], hidden[0, -1], rtol=0, atol=0)


def test_length_bucketed_batches_cover_every_index_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    batches = length_bucketed_batches(lengths, 16, np.random.default_rng(1), bucket_batches=8)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 0.3 * np.ptp(lengths)


# -- configuration -------------------------------------------------------------------------------------


def test_unknown_param_is_rejected_naming_the_key(models):
    with pytest.raises(ConfigError, match="lerning_rate"):
        _member("pooled-finetune", models["bert"], lerning_rate=1e-3)
    with pytest.raises(ConfigError, match="'lora_r' must be an integer"):
        FinetuneArgs.from_params({"lora_r": "16"}, kind="pooled-finetune")
    with pytest.raises(ConfigError, match="adapter"):
        FinetuneArgs.from_params({"adapter": "ia3"}, kind="pooled-finetune")
    with pytest.raises(ConfigError, match="quantize_4bit"):
        FinetuneArgs.from_params({"adapter": "none", "quantize_4bit": True}, kind="seqcls-finetune")
    args = FinetuneArgs.from_params({"lr": 1, "pos_weight": "auto"}, kind="seqcls-finetune")
    assert args.lr == 1.0 and isinstance(args.lr, float) and args.alpha() == 32.0


def test_experiment_configs_parse():
    from embedensemble.config import EnsembleConfig

    paths = sorted((ROOT / "experiments").glob("finetune-*.json"))
    assert paths
    for path in paths:
        config = EnsembleConfig.load(path)
        for member in config.members:
            if member.kind != "head":
                FinetuneArgs.from_params(member.params, kind=member.kind, where=f"{path.name}: {member.name}")
