"""Feature sources for head members: TF-IDF fitted on the fold's texts, or cached sentence embeddings.

A feature source has ``fit(texts) -> self``, ``transform(texts) -> X`` and ``fit_transform``.
``trainable`` says whether it learns from the training texts (and so must be saved with
the member). TF-IDF saves its vocabularies as JSON and its idf weights as safetensors and
rebuilds the sklearn vectorizers from them: no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ._logging import get_logger
from .errors import ArtifactError, ConfigError
from .fileio import check_format_version, load_tensors, read_json, save_tensors, texts_digest, write_json

if TYPE_CHECKING:
    from .context import MemberContext

logger = get_logger(__name__)

FORMAT_VERSION = 1
TFIDF = "tfidf"


class TfidfFeatures:
    """Word n-gram + character n-gram (within word boundaries) TF-IDF, stacked side by side.

    Fitted on the training texts only; returns a float32 CSR matrix. Each block is L2-normalised
    on its own, so words and characters weigh the same whatever their vocabulary sizes. The
    ``max_features_*`` caps bound memory on big corpora; SemEval's 6.8k training tweets give
    ~24k word and ~72k character terms. sklearn's word token pattern scored as well as ones
    keeping hashtags, mentions and emoji as word tokens: the character block already sees them.
    """

    trainable: ClassVar[bool] = True

    def __init__(
        self,
        word_ngram_range: tuple[int, int] = (1, 2),
        char_ngram_range: tuple[int, int] = (2, 5),
        min_df: int = 2,
        max_features_word: int | None = 50_000,
        max_features_char: int | None = 100_000,
        sublinear_tf: bool = True,
        lowercase: bool = True,
        normalise: bool = False,
    ) -> None:
        self.normalise = normalise  # texts pass through embedensemble.normalise first
        self.word_ngram_range = word_ngram_range
        self.char_ngram_range = char_ngram_range
        self.min_df = min_df
        self.max_features_word = max_features_word
        self.max_features_char = max_features_char
        self.sublinear_tf = sublinear_tf
        self.lowercase = lowercase

    def get_params(self) -> dict[str, Any]:
        return {
            "word_ngram_range": list(self.word_ngram_range),
            "char_ngram_range": list(self.char_ngram_range),
            "min_df": self.min_df,
            "max_features_word": self.max_features_word,
            "max_features_char": self.max_features_char,
            "sublinear_tf": self.sublinear_tf,
            "lowercase": self.lowercase,
            "normalise": self.normalise,
        }

    def _vectorizers(self, vocabularies: dict[str, list[str]] | None = None) -> dict[str, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        common = {"sublinear_tf": self.sublinear_tf, "lowercase": self.lowercase, "min_df": self.min_df, "dtype": np.float32}
        vocab = vocabularies or {}
        return {
            "word": TfidfVectorizer(
                analyzer="word",
                ngram_range=tuple(self.word_ngram_range),
                max_features=self.max_features_word,
                vocabulary=vocab.get("word"),
                **common,
            ),
            "char": TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=tuple(self.char_ngram_range),
                max_features=self.max_features_char,
                vocabulary=vocab.get("char"),
                **common,
            ),
        }

    def fit(self, texts: Sequence[str]) -> TfidfFeatures:
        texts = list(texts)
        if not texts:
            raise ValueError("TfidfFeatures.fit needs at least one text")
        texts = _normalised(texts) if self.normalise else texts
        vectorizers = self._vectorizers()
        for vectorizer in vectorizers.values():
            vectorizer.fit(texts)
        self.vectorizers_ = vectorizers
        logger.debug("tfidf: %s features", {k: len(v.vocabulary_) for k, v in vectorizers.items()})
        return self

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        if not hasattr(self, "vectorizers_"):
            raise RuntimeError("TfidfFeatures is not fitted; call fit() first")
        texts = _normalised(texts) if self.normalise else list(texts)
        blocks = [vectorizer.transform(texts) for vectorizer in self.vectorizers_.values()]
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.fit(texts).transform(texts)

    @property
    def n_features_(self) -> int:
        return sum(len(v.vocabulary_) for v in self.vectorizers_.values())

    def save(self, path: str | Path) -> None:
        """Write ``features.json`` (params + vocabularies in index order) and ``idf.safetensors``."""
        if not hasattr(self, "vectorizers_"):
            raise RuntimeError("TfidfFeatures is not fitted; nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        vocabularies, idf = {}, {}
        for key, vectorizer in self.vectorizers_.items():
            terms = [""] * len(vectorizer.vocabulary_)
            for term, index in vectorizer.vocabulary_.items():
                terms[index] = term
            vocabularies[key] = terms
            idf[key] = np.asarray(vectorizer.idf_)
        save_tensors(path / "idf.safetensors", idf)
        meta = {"format_version": FORMAT_VERSION, "kind": TFIDF, "params": self.get_params(), "vocabularies": vocabularies}
        write_json(path / "features.json", meta)

    @classmethod
    def load(cls, path: str | Path) -> TfidfFeatures:
        path = Path(path)
        if not (path / "features.json").is_file():
            raise ArtifactError(f"{path} is not saved TF-IDF features (no features.json)")
        meta = read_json(path / "features.json")
        check_format_version(meta, FORMAT_VERSION, path, "features format")
        if meta.get("kind") != TFIDF:
            raise ArtifactError(f"{path}: features kind {meta.get('kind')!r} is not {TFIDF!r}")
        params = dict(meta["params"])
        params["word_ngram_range"] = tuple(params["word_ngram_range"])
        params["char_ngram_range"] = tuple(params["char_ngram_range"])
        features = cls(**params)
        idf = load_tensors(path / "idf.safetensors")
        # A vectorizer given a fixed vocabulary needs no fit; setting idf_ completes it.
        vectorizers = features._vectorizers(meta["vocabularies"])
        for key, vectorizer in vectorizers.items():
            n_terms = len(meta["vocabularies"][key])
            if key not in idf or len(idf[key]) != n_terms:
                raise ArtifactError(f"{path}: {key} idf weights do not match its {n_terms} terms")
            vectorizer.idf_ = idf[key]
        features.vectorizers_ = vectorizers
        return features


class EmbeddingFeatures:
    """Sentence embeddings of a backbone (preset name, HF id or path), read through the embedding cache.

    ``cache_dir`` is the run's cache root (as ``--cache-dir``): embeddings go to ``<cache_dir>/embeddings``
    and built weights to ``cache_dir``; ``None`` means ``$EMBEDENSEMBLE_CACHE`` or ``~/.cache/embedensemble``.
    Nothing is learned, so nothing is saved: the backbone name in the member config rebuilds it.
    The encoder is built on first use, so a fully cached run never loads the model's weights
    unless the cache needs filling.
    """

    trainable: ClassVar[bool] = False

    def __init__(
        self,
        backbone: str,
        cache_dir: str | None = None,
        use_cache: bool = True,
        show_progress_bar: bool | None = None,
        device: str | None = None,
        batch_size: int = 64,
        normalise: bool = False,
        precision: str = "fp32",
        backbone_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(backbone, str) or not backbone:
            raise ConfigError(f"features backbone must be a non-empty string, got {backbone!r}")
        self.backbone = backbone
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.show_progress_bar = show_progress_bar
        self.device = device
        self.batch_size = batch_size
        self.normalise = normalise  # embed embedensemble.normalise's view of each text
        self.precision = precision  # "bf16" autocast, "int8" ONNX export (Encoder precision)
        self.backbone_options = dict(backbone_options or {})  # BackboneSpec overrides, e.g. hidden_layer
        self._encoder: Any = None
        self._cache: Any = None
        self._last: tuple[str, np.ndarray] | None = None

    @property
    def encoder(self) -> Any:
        if self._encoder is None:
            from .backbones import Encoder, get_backbone_spec

            self._encoder = Encoder(
                get_backbone_spec(self.backbone, **self.backbone_options),
                device=self.device,
                batch_size=self.batch_size,
                show_progress_bar=self.show_progress_bar,
                cache_root=self.cache_dir,
                precision=self.precision,
            )
        return self._encoder

    @property
    def identity(self) -> str:
        """The encoder's identity (names the weights the embeddings come from)."""
        return str(self.encoder.identity)

    def fit(self, texts: Sequence[str]) -> EmbeddingFeatures:
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings ``[n, dim]`` (read-only). The last call's are kept: the K fold models of a member,
        and other members on the same backbone, share this object and embed a batch of texts once."""
        texts = _normalised(texts) if self.normalise else list(texts)
        digest = texts_digest(texts)
        if self._last is not None and self._last[0] == digest:
            return self._last[1]
        X = np.asarray(self._embed(texts), dtype=np.float32)
        if X.ndim != 2 or X.shape[0] != len(texts):
            raise RuntimeError(f"backbone {self.backbone!r} returned embeddings of shape {X.shape} for {len(texts)} texts")
        X.setflags(write=False)
        self._last = (digest, X)
        return X

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.transform(texts)

    def _embed(self, texts: list[str]) -> np.ndarray:
        from .cache import EmbeddingCache, embed_texts

        if self.use_cache and self._cache is None:
            root = None if self.cache_dir is None else Path(self.cache_dir) / "embeddings"
            self._cache = EmbeddingCache(root, show_progress_bar=self.show_progress_bar)
        return embed_texts(texts, self.encoder, self._cache if self.use_cache else None)


FeatureSource = TfidfFeatures | EmbeddingFeatures


def _normalised(texts: Sequence[str]) -> list[str]:
    from .normalise import normalise_texts

    return normalise_texts(texts)

def shared_embedding_features(
    name: str,
    context: MemberContext,
    normalise: bool = False,
    precision: str = "fp32",
    backbone_options: dict[str, Any] | None = None,
) -> EmbeddingFeatures:
    """One :class:`EmbeddingFeatures` per backbone and settings in ``context``'s resource pool, shared by
    every fold model that holds it: the encoder's weights load once and a batch is embedded once per call."""

    def make() -> EmbeddingFeatures:
        return EmbeddingFeatures(
            name,
            cache_dir=context.cache_dir,
            use_cache=context.use_cache,
            show_progress_bar=context.show_progress_bar,
            device=context.device,
            normalise=normalise,
            precision=precision,
            backbone_options=backbone_options,
        )

    options = tuple(sorted((k, repr(v)) for k, v in (backbone_options or {}).items()))
    key = ("embedding-features", name, *context.settings_key(), normalise, precision, options)
    return context.resources.shared(key, make)


def make_features(
    name: str,
    context: MemberContext | None = None,
    normalise: bool = False,
    precision: str = "fp32",
    backbone_options: dict[str, Any] | None = None,
) -> FeatureSource:
    """``"tfidf"`` -> :class:`TfidfFeatures`; anything else names a backbone -> :class:`EmbeddingFeatures`.
    ``normalise``: the source reads :func:`embedensemble.normalise.normalise_tweet`'s view of each text;
    ``precision``: ``"bf16"`` (autocast) or ``"int8"`` (encoders: an int8 ONNX export), not for TF-IDF;
    ``backbone_options``: :class:`~embedensemble.backbones.BackboneSpec` overrides (e.g. ``hidden_layer``,
    ``pooling``), checked now."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"features must be 'tfidf' or a backbone name, got {name!r}")
    if not isinstance(normalise, bool):
        raise ConfigError(f"normalise must be true or false, got {normalise!r}")
    if normalise:
        from .normalise import normalise_tweet

        normalise_tweet("")  # a missing optional package fails now, before any fold trains
    if precision not in ("fp32", "bf16", "int8"):
        raise ConfigError(f"precision must be 'fp32', 'bf16' or 'int8', got {precision!r}")
    if backbone_options is not None and not isinstance(backbone_options, dict):
        raise ConfigError(f"backbone_options must be an object, got {type(backbone_options).__name__}")
    if name == TFIDF:
        if precision != "fp32" or backbone_options:
            raise ConfigError("precision and backbone_options apply to embedding backbones, not to tfidf features")
        return TfidfFeatures(normalise=normalise)
    if backbone_options:
        from .backbones import get_backbone_spec

        get_backbone_spec(name, **backbone_options)  # a bad option fails before any fold trains
    if context is None:
        return EmbeddingFeatures(name, normalise=normalise, precision=precision, backbone_options=backbone_options)
    return shared_embedding_features(name, context, normalise, precision, backbone_options)
