"""On-disk embedding cache: each text is embedded once per encoder identity, ever.

Layout: ``<root>/<namespace>/shard-<uuid>.{npy,keys.npy,json}``. A shard holds float32
embeddings, the sha256 of each text (``keys``) and a meta JSON with checksums. The meta is
written last and atomically, so it marks a complete shard; shard names are unique, so processes
sharing a folder never write the same file (at worst both compute the same texts). Embeddings are
memory-mapped on read. A shard failing its checksum is logged, deleted, and its texts recomputed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._logging import get_logger, progress
from .errors import ArtifactError, ConfigError
from .fileio import load_array, read_json, save_array, sha256_file, write_json

if TYPE_CHECKING:
    from .backbones import Encoder

logger = get_logger(__name__)

SHARD_FORMAT = 1
_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# Texts served from disk / embedded afresh by every EmbeddingCache of this process (benchmarks
# count them around a fit or a predict, whichever object the library made the cache with).
_TOTALS = {"hits": 0, "misses": 0}


def cache_counters() -> dict[str, int]:
    """``{"hits": texts read from an embedding cache, "misses": texts embedded}`` in this process so far."""
    return dict(_TOTALS)


def text_key(text: str) -> str:
    """The cache key of one text: the sha256 of its UTF-8 bytes (hex)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Shard:
    name: str
    embeddings: np.ndarray  # memory-mapped [n, d] float32
    keys: np.ndarray  # [n] bytes (hex sha256)


class EmbeddingCache:
    """Embeddings keyed by ``(namespace, sha256(text))``; ``namespace`` is an encoder identity.

    Args:
        root: cache folder (default ``<default_cache_root()>/embeddings``).
        shard_size: texts computed (and saved) per shard, so a long run keeps its progress.
        show_progress_bar: ``None`` follows the embedensemble logger level.

    ``hits`` counts texts served from disk, ``misses`` the distinct texts computed.
    """

    small_shard_rows = 256  # shards of fewer texts are merged once there are more than max_small_shards
    max_small_shards = 16

    def __init__(self, root: str | Path | None = None, *, shard_size: int = 4096, show_progress_bar: bool | None = None) -> None:
        if root is None:
            from .backbones.weights import default_cache_root

            root = default_cache_root() / "embeddings"
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ConfigError(f"shard_size must be a positive integer, got {shard_size!r}")
        self.root = Path(root).expanduser()
        self.shard_size = shard_size
        self.show_progress_bar = show_progress_bar
        self.hits = 0
        self.misses = 0
        self._shards: dict[str, dict[str, _Shard]] = {}
        self._indexes: dict[str, tuple[tuple, dict[str, tuple[_Shard, int]]]] = {}

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r}, hits={self.hits}, misses={self.misses})"

    def namespaces(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def clear(self, namespace: str | None = None) -> None:
        """Delete one namespace, or the whole cache."""
        target = self.root if namespace is None else self._folder(namespace)
        if namespace is None:
            self._shards.clear()
        else:
            self._shards.pop(namespace, None)
        shutil.rmtree(target, ignore_errors=True)

    def compact(self, namespace: str, *, below: int | None = None) -> int:
        """Merge a namespace's shards into one (fewer files to open), or only those of fewer than ``below``
        texts; returns the number of texts in the namespace."""
        index = self._index(namespace)
        chosen = {n: s for n, s in self._shards.get(namespace, {}).items() if below is None or len(s.keys) < below}
        if len(chosen) < 2:
            return len(index)
        rows = {}
        for shard in chosen.values():
            for row, key in enumerate(shard.keys):
                rows.setdefault(key.decode("ascii"), (shard, row))
        embeddings = np.stack([shard.embeddings[row] for shard, row in rows.values()]).astype(np.float32)
        self._write_shard(namespace, list(rows), embeddings)
        folder = self._folder(namespace)
        for name in chosen:
            for suffix in (".json", ".npy", ".keys.npy"):  # meta first: the shard stops counting at once
                (folder / f"{name}{suffix}").unlink(missing_ok=True)
            self._shards[namespace].pop(name, None)
        return len(self._index(namespace))

    def get_or_compute(self, namespace: str, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Embeddings of ``texts`` (float32 ``[n, d]``, input order); only texts never seen are computed.

        ``compute`` receives each missing text once (duplicates removed) and must return one row per text.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string")
        texts = list(texts)
        keys = [text_key(t) for t in texts]
        index = self._index(namespace)
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in index and key not in missing:
                missing[key] = text
        hits = sum(1 for k in keys if k in index)
        self.hits += hits
        _TOTALS["hits"] += hits
        fresh = self._compute(namespace, list(missing), list(missing.values()), compute)
        dim = self._dim(namespace, fresh)
        out = np.empty((len(texts), dim), dtype=np.float32)
        for i, key in enumerate(keys):
            if key in fresh:
                out[i] = fresh[key]
            else:
                shard, row = index[key]
                out[i] = shard.embeddings[row]
        if fresh:
            self._merge_small_shards(namespace)
        return out

    # -- internals ------------------------------------------------------------------------------

    def _merge_small_shards(self, namespace: str) -> None:
        """Many small calls (one tweet at a time) would leave a shard per call: merge them past a count."""
        small = [s for s in self._shards.get(namespace, {}).values() if len(s.keys) < self.small_shard_rows]
        if len(small) > self.max_small_shards:
            self.compact(namespace, below=self.small_shard_rows)

    def _folder(self, namespace: str) -> Path:
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise ConfigError(f"cache namespace {namespace!r} must be 1-128 characters of letters, digits, '.', '_' or '-'")
        return self.root / namespace

    def _dim(self, namespace: str, fresh: dict[str, np.ndarray]) -> int:
        for row in fresh.values():
            return int(row.shape[0])
        for shard in self._shards.get(namespace, {}).values():
            return int(shard.embeddings.shape[1])
        return 0

    def _index(self, namespace: str) -> dict[str, tuple[_Shard, int]]:
        """key -> (shard, row) over every valid shard on disk, loading shards not seen before."""
        folder = self._folder(namespace)
        loaded = self._shards.setdefault(namespace, {})
        on_disk = {p.name[: -len(".json")] for p in folder.glob("shard-*.json")} if folder.is_dir() else set()
        for name in sorted(set(loaded) - on_disk):
            del loaded[name]  # removed by clear() or by another process
        if folder.is_dir():
            self._remove_orphans(folder, on_disk)
        for name in sorted(on_disk - set(loaded)):
            shard = self._load_shard(folder, name)
            if shard is not None:
                loaded[name] = shard
        dims = {int(s.embeddings.shape[1]) for s in loaded.values()}
        if len(dims) > 1:
            raise ArtifactError(f"{folder}: shards of different widths {sorted(dims)} in one namespace; clear it")
        # Rebuilt only when the set of shards changes: a warm lookup of one tweet stays cheap.
        signature = tuple((name, id(loaded[name])) for name in sorted(loaded))
        cached = self._indexes.get(namespace)
        if cached is not None and cached[0] == signature:
            return cached[1]
        index: dict[str, tuple[_Shard, int]] = {}
        for name, _ in signature:
            shard = loaded[name]
            for row, key in enumerate(shard.keys):
                index.setdefault(key.decode("ascii"), (shard, row))
        self._indexes[namespace] = (signature, index)
        return index

    @staticmethod
    def _remove_orphans(folder: Path, complete: set[str], max_age_s: float = 3600.0) -> None:
        """Delete data files left by a writer killed before its meta (old enough not to be in progress)."""
        now = time.time()
        for path in folder.glob("shard-*.npy"):
            name = path.name.split(".", 1)[0]
            try:
                if name not in complete and now - path.stat().st_mtime > max_age_s:
                    path.unlink()
            except FileNotFoundError:
                pass

    def _load_shard(self, folder: Path, name: str) -> _Shard | None:
        emb_path, keys_path, meta_path = folder / f"{name}.npy", folder / f"{name}.keys.npy", folder / f"{name}.json"
        try:
            meta = read_json(meta_path)
            if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
                raise ArtifactError(f"unknown shard format {meta.get('format') if isinstance(meta, dict) else meta!r}")
            for path, field in ((emb_path, "embeddings_sha256"), (keys_path, "keys_sha256")):
                if sha256_file(path) != meta.get(field):
                    raise ArtifactError(f"{path.name} does not match its checksum")
            embeddings = load_array(emb_path, mmap=True)
            keys = load_array(keys_path)
            if embeddings.ndim != 2 or embeddings.dtype != np.float32 or keys.shape != (embeddings.shape[0],):
                raise ArtifactError(f"shapes {embeddings.shape} / {keys.shape} do not match")
        except FileNotFoundError:
            if not meta_path.exists():
                return None  # deleted meanwhile (clear() or another process)
            self._discard(folder, name, "a file is missing")
            return None
        except (ArtifactError, OSError, ValueError) as exc:
            self._discard(folder, name, str(exc))
            return None
        return _Shard(name, embeddings, keys)

    def _discard(self, folder: Path, name: str, reason: str) -> None:
        logger.warning(
            "embedding cache shard %s/%s is corrupt (%s); removing it, its texts will be recomputed", folder, name, reason
        )
        for suffix in (".json", ".npy", ".keys.npy"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)

    def _compute(
        self, namespace: str, keys: list[str], texts: list[str], compute: Callable[[list[str]], np.ndarray]
    ) -> dict[str, np.ndarray]:
        if not texts:
            return {}
        fresh: dict[str, np.ndarray] = {}
        chunks = range(0, len(texts), self.shard_size)
        for start in progress(
            chunks, desc=f"Embedding ({namespace})", total=len(chunks), show_progress_bar=self._bar(len(chunks))
        ):
            chunk_keys, chunk_texts = keys[start : start + self.shard_size], texts[start : start + self.shard_size]
            embeddings = np.asarray(compute(chunk_texts))
            if embeddings.ndim != 2 or embeddings.shape[0] != len(chunk_texts):
                raise ValueError(f"compute returned shape {embeddings.shape} for {len(chunk_texts)} texts; expected (n, dim)")
            if not np.all(np.isfinite(embeddings)):
                raise ValueError(f"compute returned non-finite embeddings for namespace {namespace!r}")
            embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
            self._write_shard(namespace, chunk_keys, embeddings)
            fresh.update(zip(chunk_keys, embeddings, strict=True))
            self.misses += len(chunk_texts)
            _TOTALS["misses"] += len(chunk_texts)
        return fresh

    def _bar(self, n_chunks: int) -> bool | None:
        return False if n_chunks < 2 and self.show_progress_bar is None else self.show_progress_bar

    def _write_shard(self, namespace: str, keys: list[str], embeddings: np.ndarray) -> None:
        folder = self._folder(namespace)
        existing = self._shards.get(namespace, {})
        for shard in existing.values():
            if shard.embeddings.shape[1] != embeddings.shape[1]:
                raise ArtifactError(
                    f"namespace {namespace!r} holds {shard.embeddings.shape[1]}-d embeddings but compute returned "
                    f"{embeddings.shape[1]}-d ones; the namespace must name one encoder"
                )
        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex}"
        key_array = np.array([k.encode("ascii") for k in keys], dtype="S64")
        emb_path = save_array(folder / f"{name}.npy", embeddings)
        keys_path = save_array(folder / f"{name}.keys.npy", key_array)
        meta = {
            "format": SHARD_FORMAT,
            "n": int(embeddings.shape[0]),
            "dim": int(embeddings.shape[1]),
            "dtype": "float32",
            "embeddings_sha256": sha256_file(emb_path),
            "keys_sha256": sha256_file(keys_path),
            "created": time.time(),
        }
        write_json(folder / f"{name}.json", meta)
        existing[name] = _Shard(name, load_array(emb_path, mmap=True), key_array)
        self._shards[namespace] = existing


def embed_texts(texts: Sequence[str], backbone: str | Encoder, cache: EmbeddingCache | None = None) -> np.ndarray:
    """Embeddings of ``texts`` with ``backbone`` (preset, HF id, path or :class:`Encoder`).

    With a ``cache`` only texts it has not seen under ``encoder.identity`` are encoded (the model
    is not even loaded when all are cached); ``cache=None`` encodes everything, caching nothing.
    """
    from .backbones import Encoder

    encoder = backbone if isinstance(backbone, Encoder) else Encoder(backbone)
    if cache is None:
        return encoder.encode(list(texts))
    out = cache.get_or_compute(encoder.identity, texts, encoder.encode)
    if out.shape[1] == 0 and len(out) == 0:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return out
