"""Encoders as int8 ONNX exports (``Encoder(precision="int8")``, member ``params.precision``), on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import make_tweets
from tiny_models import make_tiny_decoder, make_tiny_st_encoder

from embedensemble.backbones import Encoder, get_backbone_spec
from embedensemble.backbones.onnx_encoder import MODEL_FILE, OnnxSentenceEncoder
from embedensemble.config import MemberConfig
from embedensemble.errors import ConfigError
from embedensemble.features import make_features
from embedensemble.members.base import MemberContext, build_member, load_member

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "so happy today!! #blessed",
    "ugh",
    "a much longer tweet about being scared of the dark, the rain and everything that moves at night",
    "can't wait for the weekend",
    "this is awful @someone",
]


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    return make_tiny_st_encoder(tmp_path_factory.mktemp("models") / "st")


@pytest.mark.parametrize("architecture", ["bert", "mpnet"])
def test_fp32_export_matches_torch_for_every_batch_shape(architecture, tmp_path):
    # MPNet's eager attention adds the mask to the scores: a boolean mask there left padding attended.
    folder = make_tiny_st_encoder(tmp_path / architecture, architecture=architecture)
    torch_vectors = Encoder(str(folder), cache_root=tmp_path / "cache").encode(TEXTS)
    spec = get_backbone_spec(str(folder))
    for batch_size in (1, 2, 5):  # other batch and token widths than the traced sample's
        onnx = OnnxSentenceEncoder(spec, folder, tmp_path / f"fp32-{batch_size}", quantize=False, batch_size=batch_size).load()
        np.testing.assert_allclose(onnx.encode(TEXTS), torch_vectors, atol=1e-5)


def test_int8_keeps_the_feed_forward_down_projections_in_fp32(tiny_st, tmp_path):
    import onnx

    encoder = Encoder(str(tiny_st), cache_root=tmp_path / "cache", precision="int8")
    encoder.encode(TEXTS[:2])
    nodes = onnx.load(str(tmp_path / "cache" / "onnx" / encoder.identity / MODEL_FILE)).graph.node
    plain = {n.name for n in nodes if n.op_type == "MatMul"}
    quantised = {n.name for n in nodes if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")} | {
        n.name for n in nodes if n.op_type == "MatMul" and "quant" in n.name.lower()}
    assert any("/output/dense/" in name and "attention" not in name for name in plain)
    assert quantised and not any("/output/dense/MatMul" in name and "attention" not in name for name in quantised)


def test_int8_encoder_is_close_cached_and_has_its_own_identity(tiny_st, tmp_path):
    fp32 = Encoder(str(tiny_st), cache_root=tmp_path / "cache")
    int8 = Encoder(str(tiny_st), cache_root=tmp_path / "cache", precision="int8", batch_size=2)
    assert int8.identity != fp32.identity  # other vectors: never mixed in the embedding cache
    X = int8.encode(TEXTS)
    assert X.shape == (len(TEXTS), 32) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    cosine = (X * fp32.encode(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.999 and not np.array_equal(X, fp32.encode(TEXTS))
    export = tmp_path / "cache" / "onnx" / int8.identity / MODEL_FILE
    assert export.is_file()
    stamp = export.stat().st_mtime_ns
    again = Encoder(str(tiny_st), cache_root=tmp_path / "cache", precision="int8", batch_size=2)
    np.testing.assert_array_equal(again.encode(TEXTS), X)  # same batches, same vectors
    assert export.stat().st_mtime_ns == stamp  # exported once, then read


def test_int8_is_refused_where_it_cannot_apply(tmp_path):
    decoder = make_tiny_decoder(tmp_path / "mistral", "mistral")
    with pytest.raises(ConfigError, match="encoders"):
        Encoder(str(decoder), precision="int8")
    with pytest.raises(ConfigError, match="precision"):
        Encoder("minilm", precision="int4")
    with pytest.raises(ConfigError, match="tfidf"):
        make_features("tfidf", precision="int8")
    config = MemberConfig(name="tf8", kind="head", features="tfidf", head="logreg", params={"precision": "int8"})
    with pytest.raises(ConfigError, match="member 'tf8'"):
        build_member(config, MemberContext(seed=1))


def test_int8_head_member_fits_saves_and_reloads(tiny_st, tmp_path):
    texts, labels = make_tweets(40, seed=3)
    context = MemberContext(seed=1, cache_dir=str(tmp_path / "cache"))
    config = MemberConfig(name="st8", kind="head", features=str(tiny_st), head="logreg", params={"precision": "int8"})
    member = build_member(config, context).fit(texts, labels)
    assert member.features_.encoder.precision == "int8"
    proba = member.predict_proba(texts[:7])
    member.save(tmp_path / "fold")
    reloaded = load_member(tmp_path / "fold", context)
    np.testing.assert_array_equal(reloaded.predict_proba(texts[:7]), proba)
