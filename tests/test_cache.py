"""EmbeddingCache: hits/misses, dedup, order, corruption recovery, shared folders, encoder namespaces."""

from __future__ import annotations

import logging
import multiprocessing

import numpy as np
import pytest
from tiny_models import make_tiny_decoder, make_tiny_st_encoder

from embedensemble.backbones import Encoder, get_backbone_spec
from embedensemble.cache import EmbeddingCache, embed_texts, text_key
from embedensemble.errors import ArtifactError, ConfigError

DIM = 8


def fake_embed(texts: list[str]) -> np.ndarray:
    """Deterministic per-text vectors (seeded by the text's hash)."""
    rows = [np.random.default_rng(int(text_key(t)[:8], 16)).standard_normal(DIM) for t in texts]
    return np.asarray(rows, dtype=np.float32).reshape(len(texts), DIM)


class Counter:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return fake_embed(texts)

    @property
    def n_texts(self) -> int:
        return sum(map(len, self.calls))


def test_miss_then_hit(tmp_path):
    cache, compute = EmbeddingCache(tmp_path), Counter()
    texts = ["a", "b", "c"]
    first = cache.get_or_compute("ns", texts, compute)
    np.testing.assert_array_equal(first, fake_embed(texts))
    assert first.dtype == np.float32 and (cache.hits, cache.misses) == (0, 3)
    again = cache.get_or_compute("ns", texts, compute)
    np.testing.assert_array_equal(again, first)
    assert compute.n_texts == 3 and (cache.hits, cache.misses) == (3, 3)


def test_only_missing_computed_duplicates_once_order_kept(tmp_path):
    cache, compute = EmbeddingCache(tmp_path), Counter()
    cache.get_or_compute("ns", ["a", "b"], compute)
    texts = ["c", "a", "c", "d", "b", "c"]
    out = cache.get_or_compute("ns", texts, compute)
    assert compute.calls[-1] == ["c", "d"]
    np.testing.assert_array_equal(out, fake_embed(texts))
    assert cache.misses == 4 and cache.hits == 2


def test_chunks_become_shards_and_memmap(tmp_path):
    cache = EmbeddingCache(tmp_path, shard_size=2)
    texts = [f"t{i}" for i in range(5)]
    cache.get_or_compute("ns", texts, fake_embed)
    assert len(list((tmp_path / "ns").glob("shard-*.json"))) == 3
    fresh = EmbeddingCache(tmp_path)
    out = fresh.get_or_compute("ns", texts[::-1], Counter())
    np.testing.assert_array_equal(out, fake_embed(texts[::-1]))
    assert all(isinstance(s.embeddings, np.memmap) for s in fresh._shards["ns"].values())


def test_compact_merges_shards(tmp_path):
    cache = EmbeddingCache(tmp_path, shard_size=2)
    texts = [f"t{i}" for i in range(5)]
    cache.get_or_compute("ns", texts, fake_embed)
    assert cache.compact("ns") == 5
    assert len(list((tmp_path / "ns").glob("shard-*"))) == 3  # one shard: meta, embeddings, keys
    compute = Counter()
    np.testing.assert_array_equal(EmbeddingCache(tmp_path).get_or_compute("ns", texts, compute), fake_embed(texts))
    assert compute.n_texts == 0


def test_namespaces_are_separate_and_validated(tmp_path):
    cache, compute = EmbeddingCache(tmp_path), Counter()
    cache.get_or_compute("enc-a", ["x"], compute)
    cache.get_or_compute("enc-b", ["x"], compute)
    assert compute.n_texts == 2 and cache.namespaces() == ["enc-a", "enc-b"]
    for bad in ("", "../up", "a/b", ".hidden"):
        with pytest.raises(ConfigError):
            cache.get_or_compute(bad, ["x"], compute)


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta", "delete-keys"])
def test_corrupt_shard_is_detected_removed_and_recomputed(tmp_path, caplog, damage):
    EmbeddingCache(tmp_path).get_or_compute("ns", ["a", "b", "c"], fake_embed)
    (meta,) = (tmp_path / "ns").glob("shard-*.json")
    emb = meta.with_suffix(".npy")
    if damage == "flip":
        data = bytearray(emb.read_bytes())
        data[-3] ^= 0xFF
        emb.write_bytes(bytes(data))
    elif damage == "truncate":
        emb.write_bytes(emb.read_bytes()[:-10])
    elif damage == "meta":
        meta.write_text("{not json")
    else:
        meta.with_suffix(".keys.npy").unlink()
    cache, compute = EmbeddingCache(tmp_path), Counter()
    with caplog.at_level(logging.WARNING, logger="embedensemble"):
        out = cache.get_or_compute("ns", ["a", "b", "c"], compute)
    assert "corrupt" in caplog.text
    assert compute.n_texts == 3
    np.testing.assert_array_equal(out, fake_embed(["a", "b", "c"]))
    assert not meta.exists() and not emb.exists()
    assert len(list((tmp_path / "ns").glob("shard-*.json"))) == 1  # the recomputed one


def test_two_caches_share_a_folder(tmp_path):
    a, b = EmbeddingCache(tmp_path), EmbeddingCache(tmp_path)
    ca, cb = Counter(), Counter()
    a.get_or_compute("ns", ["x", "y"], ca)
    b.get_or_compute("ns", ["x", "y", "z"], cb)  # b sees a's shard written after b was created
    assert cb.calls == [["z"]]
    a.get_or_compute("ns", ["z"], ca)
    assert ca.n_texts == 2 and a.hits == 1


def _worker(root: str, texts: list[str]) -> None:
    EmbeddingCache(root, shard_size=3).get_or_compute("ns", texts, fake_embed)


def test_concurrent_processes_never_corrupt(tmp_path):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    texts = [f"tweet {i}" for i in range(20)]
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), texts[i:] + texts[:i])) for i in (0, 7, 13)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache, compute = EmbeddingCache(tmp_path), Counter()
    out = cache.get_or_compute("ns", texts, compute)
    assert compute.n_texts == 0
    np.testing.assert_array_equal(out, fake_embed(texts))


def test_bad_compute_results_rejected(tmp_path):
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        cache.get_or_compute("ns", ["a", "b"], lambda t: np.zeros((1, DIM)))
    with pytest.raises(ValueError, match="non-finite"):
        cache.get_or_compute("ns", ["a"], lambda t: np.full((1, DIM), np.nan))
    cache.get_or_compute("ns", ["a"], fake_embed)
    with pytest.raises(ArtifactError, match="namespace"):
        cache.get_or_compute("ns", ["b"], lambda t: np.zeros((1, DIM + 1)))


def test_clear_and_empty(tmp_path):
    cache, compute = EmbeddingCache(tmp_path), Counter()
    assert cache.get_or_compute("ns", [], compute).shape[0] == 0
    cache.get_or_compute("ns", ["a"], compute)
    cache.clear("ns")
    cache.get_or_compute("ns", ["a"], compute)
    assert compute.n_texts == 2
    cache.clear()
    assert not tmp_path.exists() or cache.namespaces() == []


def test_default_root_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDENSEMBLE_CACHE", str(tmp_path / "c"))
    assert EmbeddingCache().root == tmp_path / "c" / "embeddings"


# -- with real (tiny) encoders --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {"st": make_tiny_st_encoder(root / "st"), "dec": make_tiny_decoder(root / "dec", "mistral")}


def test_embed_texts_uses_encoder_identity_and_skips_model_when_cached(tiny, tmp_path, monkeypatch):
    weights_root = tmp_path / "w"
    texts = ["so happy", "so sad", "so happy"]
    cache = EmbeddingCache(tmp_path / "emb")
    enc = Encoder(str(tiny["st"]), cache_root=weights_root)
    X = embed_texts(texts, enc, cache)
    assert X.shape == (3, 32) and cache.misses == 2
    np.testing.assert_array_equal(X[0], X[2])
    assert cache.namespaces() == [enc.identity]
    fresh = Encoder(str(tiny["st"]), cache_root=weights_root)
    monkeypatch.setattr(Encoder, "_load", lambda self: pytest.fail("model loaded despite a full cache hit"))
    np.testing.assert_array_equal(embed_texts(texts, fresh, cache), X)
    assert cache.hits == 3


def test_cache_key_changes_with_prompt_model_and_max_length(tiny, tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    texts = ["what a day", "never again"]
    variants = [
        get_backbone_spec(str(tiny["dec"])),
        get_backbone_spec(str(tiny["dec"]), prompt_template="Tweet: {text}"),
        get_backbone_spec(str(tiny["dec"]), max_length=16),
        get_backbone_spec(str(tiny["st"])),
    ]
    for spec in variants:
        embed_texts(texts, Encoder(spec, cache_root=tmp_path / "w"), cache)
    assert cache.misses == 2 * len(variants) and cache.hits == 0
    assert len(cache.namespaces()) == len(variants)
    embed_texts(texts, Encoder(variants[1], cache_root=tmp_path / "w", batch_size=1), cache)
    assert cache.hits == 2


def test_embed_texts_without_cache(tiny, tmp_path):
    X = embed_texts(["a b c"], Encoder(str(tiny["st"]), cache_root=tmp_path / "w"), None)
    assert X.shape == (1, 32)


def test_one_text_at_a_time_does_not_leave_a_shard_per_call(tmp_path):
    cache = EmbeddingCache(tmp_path)
    texts = [f"tweet {i}" for i in range(3 * EmbeddingCache.max_small_shards)]
    for text in texts:
        cache.get_or_compute("ns", [text], fake_embed)
    n_shards = len(list((tmp_path / "ns").glob("shard-*.json")))
    assert n_shards <= EmbeddingCache.max_small_shards + 1, n_shards
    compute = Counter()
    np.testing.assert_array_equal(EmbeddingCache(tmp_path).get_or_compute("ns", texts, compute), fake_embed(texts))
    assert compute.n_texts == 0  # nothing lost in the merges


def test_compact_below_merges_only_small_shards(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.get_or_compute("ns", [f"big {i}" for i in range(10)], fake_embed)
    for i in range(3):
        cache.get_or_compute("ns", [f"small {i}"], fake_embed)
    assert cache.compact("ns", below=5) == 13
    sizes = sorted(len(s.keys) for s in cache._shards["ns"].values())
    assert sizes == [3, 10]
