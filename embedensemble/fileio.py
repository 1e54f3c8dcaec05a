"""Safe file I/O: atomic writes, checksums, JSON, arrays and safetensors.

Every artifact goes through these helpers so that a kill at any moment leaves either
the old file or the new one, never half of one (write to a temp file in the same
folder, fsync, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, FormatVersionError

PathLike = str | os.PathLike
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; artifacts get normal permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as pretty, key-sorted JSON, atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


def check_format_version(meta: Any, expected: int, where: PathLike, what: str = "format") -> None:
    """Refuse (:class:`FormatVersionError`) saved metadata whose ``format_version`` is not ``expected``.

    The one check every saved part (head, TF-IDF features, fine-tuned member) makes before reading
    the rest, so they all refuse alike: ``"<where>: <what> version 2, this library reads 1"``.
    """
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != expected:
        raise FormatVersionError(f"{where}: {what} version {version!r}, this library reads {expected}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_array(path: PathLike, array: np.ndarray) -> Path:
    """Save one array as ``.npy`` atomically (never with pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def load_array(path: PathLike, mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` array; pickled object arrays are refused."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as exc:
        raise ArtifactError(f"{path} could not be read as a numeric array: {exc}") from None


def save_tensors(path: PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """Save named numpy arrays as one safetensors file, atomically."""
    from safetensors.numpy import save

    payload = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    return atomic_write_bytes(path, save(payload, metadata=metadata))


def load_tensors(path: PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """Identity of a list of texts (order and count included); length-prefixed, so no two lists collide by joining."""
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return f"{len(texts)}-{digest.hexdigest()[:32]}"


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short, stable hash of a JSON-serialisable object (dict keys sorted)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
