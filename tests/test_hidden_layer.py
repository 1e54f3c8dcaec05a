"""Mid-layer decoder features (``hidden_layer``), decoder mean pooling and bf16 autocast (tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import make_tiny_decoder, make_tiny_st_encoder

from embedensemble.backbones import Encoder, get_backbone_spec
from embedensemble.config import MemberConfig
from embedensemble.errors import ConfigError
from embedensemble.finetune import FinetuneArgs
from embedensemble.finetune.modeling import backbone_spec
from embedensemble.finetune.training import use_bf16
from embedensemble.members.base import MemberContext, build_member

TEXTS = [
    "I am so happy today, what a wonderful day!",
    "ugh",
    "This is terrible, I am really angry and disgusted. #fail @someone",
    "Can't wait for the weekend",
]
MID = {"hidden_layer": 1, "pooling": "mean", "prompt_template": None, "normalize": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _manual_mean(folder, text: str, layer: int) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        states = model(input_ids=torch.tensor([tok(text)["input_ids"]]), output_hidden_states=True).hidden_states
    return states[layer][0].mean(dim=0).numpy()


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_hidden_layer_mean_pools_that_layer_of_the_whole_model(model_dir, tmp_path, family):
    folder = make_tiny_decoder(model_dir / family, family)
    spec = get_backbone_spec(str(folder), **MID)
    batched = Encoder(spec, cache_root=tmp_path, batch_size=4).encode(TEXTS)
    single = Encoder(spec, cache_root=tmp_path, batch_size=1).encode(TEXTS)
    np.testing.assert_allclose(batched, single, atol=2e-5)  # left padding changes nothing
    for i in (0, 2):
        np.testing.assert_allclose(batched[i], _manual_mean(folder, TEXTS[i], 1), atol=2e-5)
    last = Encoder(get_backbone_spec(str(folder), **{**MID, "hidden_layer": None}), cache_root=tmp_path).encode(TEXTS[:1])
    assert not np.allclose(last, batched[:1], atol=1e-3)


def test_hidden_layer_is_validated(model_dir, tmp_path):
    folder = make_tiny_decoder(model_dir / "llama", "llama")
    with pytest.raises(ConfigError, match="past its 2 layers"):
        Encoder(get_backbone_spec(str(folder), hidden_layer=3), cache_root=tmp_path).encode(TEXTS[:1])
    with pytest.raises(ConfigError, match="integer >= 1"):
        get_backbone_spec(str(folder), hidden_layer=0)
    st = make_tiny_st_encoder(model_dir / "st")
    with pytest.raises(ConfigError, match="for decoder backbones"):
        get_backbone_spec(str(st), hidden_layer=1)
    with pytest.raises(ConfigError, match="packing pools the last token"):
        Encoder(get_backbone_spec(str(folder), **MID), packing=True)
    with pytest.raises(ConfigError, match="frozen embedding features"):
        backbone_spec(str(folder), FinetuneArgs(backbone_options={"hidden_layer": 1}), "member 'ft'")


def test_identity_tracks_hidden_layer_and_precision(model_dir, tmp_path):
    folder = make_tiny_decoder(model_dir / "llama", "llama")
    ids = {
        Encoder(get_backbone_spec(str(folder), **options), cache_root=tmp_path, precision=precision).identity
        for options, precision in [({}, "fp32"), (MID, "fp32"), ({**MID, "hidden_layer": 2}, "fp32"), (MID, "bf16")]
    }
    assert len(ids) == 4


def test_bf16_autocast_encodes_close_to_fp32(model_dir, tmp_path):
    for spec in (get_backbone_spec(str(make_tiny_st_encoder(model_dir / "st"))),
                 get_backbone_spec(str(make_tiny_decoder(model_dir / "llama", "llama")), **MID)):
        fp32 = Encoder(spec, cache_root=tmp_path).encode(TEXTS)
        bf16 = Encoder(spec, cache_root=tmp_path, precision="bf16").encode(TEXTS)
        assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
        scale = np.abs(fp32).max()
        assert np.abs(bf16 - fp32).max() < 0.05 * scale
        assert not np.array_equal(bf16, fp32)  # the matrix products did run in bf16


def test_finetune_bf16_runs_on_cpu_only_when_asked():
    cpu = torch.device("cpu")
    assert use_bf16(FinetuneArgs(precision="bf16"), cpu)
    assert not use_bf16(FinetuneArgs(precision="auto"), cpu)
    assert not use_bf16(FinetuneArgs(precision="fp32"), cpu)


def test_head_member_reads_a_middle_layer(model_dir, tmp_path):
    folder = make_tiny_decoder(model_dir / "llama", "llama")
    context = MemberContext(cache_dir=str(tmp_path), show_progress_bar=False)
    config = MemberConfig(name="mid", features=str(folder), head="logreg", params={"backbone_options": MID})
    member = build_member(config, context)
    X = member.features_.transform(TEXTS)
    np.testing.assert_allclose(X[0], _manual_mean(folder, TEXTS[0], 1), atol=2e-5)
    labels = np.eye(11, dtype=np.int8)[[0, 1, 0, 1]]
    labels[:, 2:] = np.array([[1], [0], [0], [1]])  # every emotion has both classes
    member.fit(TEXTS, labels)
    assert member.predict_proba(TEXTS).shape == (4, 11)
    with pytest.raises(ConfigError, match="member 'mid'.*unknown key.*'backbone_option'"):
        build_member(MemberConfig(name="mid", features=str(folder), head="logreg", params={"backbone_option": MID}), context)
    with pytest.raises(ConfigError, match="member 'mid'.*hidden_layer"):
        build_member(
            MemberConfig(name="mid", features=str(folder), head="logreg", params={"backbone_options": {"hidden_layer": -1}}),
            context,
        )
    with pytest.raises(ConfigError, match="member 'mid'.*tfidf"):
        build_member(MemberConfig(name="mid", features="tfidf", head="logreg", params={"backbone_options": MID}), context)
