"""Where a backbone's weights live, what they hash to, and how to load them as an HF model.

Nothing here downloads: packaged presets are rebuilt from installed pip packages, HF ids are read
from the local HF cache only (unless ``EMBEDENSEMBLE_ALLOW_DOWNLOAD=1``), and every
``from_pretrained`` call passes ``local_files_only=True``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from .._logging import get_logger, quiet_transformers
from ..errors import ArtifactError, ConfigError, WeightsNotFoundError
from ..fileio import read_json, sha256_file, stable_hash, write_json
from .packaged import MARKER, build_packaged
from .presets import PACKAGED_WEIGHTS, BackboneSpec, get_backbone_spec

logger = get_logger(__name__)

CACHE_ENV = "EMBEDENSEMBLE_CACHE"
DOWNLOAD_ENV = "EMBEDENSEMBLE_ALLOW_DOWNLOAD"
DIGESTS_FILE = ".embedensemble_digests.json"
_SKIP_NAMES = frozenset({MARKER, DIGESTS_FILE, ".gitattributes", "desktop.ini", "LICENSE", "NOTICE"})
_SKIP_SUFFIXES = (".md", ".html", ".txt.lock", ".lock", ".ini")
_SKIP_DIRS = frozenset({"onnx", "openvino", ".git", ".cache", "__pycache__"})
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def default_cache_root() -> Path:
    """``$EMBEDENSEMBLE_CACHE`` or ``~/.cache/embedensemble``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "embedensemble"


def _as_spec(spec: BackboneSpec | str) -> BackboneSpec:
    return spec if isinstance(spec, BackboneSpec) else get_backbone_spec(spec)


def resolve_weights(
    spec: BackboneSpec | str, cache_root: str | Path | None = None, *, allow_download: bool | None = None
) -> Path:
    """A local folder holding ``spec``'s weights, loadable by transformers / sentence-transformers.

    Packaged presets are assembled (and GGUF converted) once into ``<cache_root>/weights/<name>``.
    Raises :class:`WeightsNotFoundError` naming the pip package, HF id or path that would supply them.
    """
    spec = _as_spec(spec)
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    if spec.scheme == "package":
        recipe = PACKAGED_WEIGHTS.get(spec.source)
        if recipe is None:
            raise ConfigError(
                f"backbone '{spec.name}': unknown packaged source {spec.source!r}; known: {sorted(PACKAGED_WEIGHTS)}"
            )
        return build_packaged(spec, recipe, root)
    if spec.scheme == "path":
        folder = Path(spec.locator).expanduser()
        if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
            what = "does not exist" if not folder.exists() else "has no config.json or modules.json"
            raise WeightsNotFoundError(f"backbone '{spec.name}': model folder {folder} {what}")
        return folder
    if spec.scheme == "hf":
        return _resolve_hf(spec, allow_download)
    raise ConfigError(f"backbone '{spec.name}': unknown source scheme in {spec.source!r} (expected hf:, path: or package:)")


def _resolve_hf(spec: BackboneSpec, allow_download: bool | None) -> Path:
    if allow_download is None:
        allow_download = os.environ.get(DOWNLOAD_ENV, "") == "1"
    repo_id = spec.locator
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=spec.revision, local_files_only=not allow_download))
    except Exception as exc:  # noqa: BLE001 - not cached, invalid id, offline, network: all mean 'not available'
        raise WeightsNotFoundError(
            f"backbone '{spec.name}': Hugging Face model {repo_id!r}"
            f"{'' if spec.revision is None else f' (revision {spec.revision})'} is not in the local HF cache "
            f"({type(exc).__name__}). Provide {spec.package_hint or 'a local folder path'}."
        ) from None
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise WeightsNotFoundError(
            f"backbone '{spec.name}': the local HF cache holds {repo_id!r} without weight files ({folder}); "
            f"download it fully (e.g. `hf download {repo_id}`)"
        )
    return folder


def _weight_files(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if (
            rel.name in _SKIP_NAMES
            or rel.name.startswith(".")
            or rel.name.endswith(_SKIP_SUFFIXES)
            or rel.name.startswith("README")
        ):
            continue
        if path.is_file():
            files.append(path)
    return files


def _digest_file(folder: Path, root: Path) -> Path:
    """Digests sit beside weights we built; for folders we don't own (site-packages, HF cache) under the cache root."""
    try:
        folder.resolve().relative_to(root.resolve())
        return folder / DIGESTS_FILE
    except ValueError:
        return root / "digests" / f"{stable_hash(str(folder.resolve()))}.json"


def weights_identity(spec: BackboneSpec | str, path: str | Path, cache_root: str | Path | None = None) -> str:
    """A stable hash of the model files in ``path`` (weights, configs, tokenizer).

    Each file's sha256 is cached in a small JSON keyed by size and mtime, so only new or changed
    files are read again. Files in the HF cache are named by their sha256 already and not read.
    """
    spec = _as_spec(spec)
    folder = Path(path)
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root()
    store = _digest_file(folder, root)
    try:
        known = read_json(store) if store.is_file() else {}
    except (ArtifactError, OSError):
        known = {}
    digests: dict[str, str] = {}
    fresh: dict[str, Any] = {}
    for file in _weight_files(folder):
        rel = file.relative_to(folder).as_posix()
        stat = file.stat()
        entry = known.get(rel) if isinstance(known, dict) else None
        if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            digest = entry["sha256"]
        elif file.is_symlink() and _SHA256_HEX.match(file.resolve().name):
            digest = file.resolve().name  # HF cache blob (LFS files are stored under their sha256)
        else:
            level = logging.INFO if stat.st_size > (16 << 20) else logging.DEBUG
            logger.log(level, "hashing %s (once) for backbone '%s'", file, spec.name)
            digest = sha256_file(file)
        digests[rel] = digest
        fresh[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    if not digests:
        raise WeightsNotFoundError(f"backbone '{spec.name}': no model files in {folder}")
    if fresh != known:
        try:
            write_json(store, fresh)
        except OSError as exc:
            logger.debug("could not cache weight digests in %s: %s", store, exc)
    return stable_hash(digests, length=32)


def hf_model_dir(path: Path) -> Path:
    """The folder with the HF ``config.json`` (a sentence-transformers folder may keep it in a subfolder)."""
    if (path / "config.json").is_file() or not (path / "modules.json").is_file():
        return path
    for module in json.loads((path / "modules.json").read_text(encoding="utf-8")):
        sub = path / module.get("path", "")
        if (sub / "config.json").is_file():
            return sub
    return path


def resolve_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when a CUDA card is visible, else ``cpu`` (the one place that decides)."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(dtype: Any, *, family: str, device: str) -> Any:
    """``dtype`` as a torch dtype; ``None``: float32, except bfloat16 (or float16) for decoders on CUDA."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        if family == "decoder" and device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
    name = aliases.get(str(dtype), str(dtype)).replace("torch.", "")
    if name not in ("float32", "float16", "bfloat16"):
        raise ConfigError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    return getattr(torch, name)


def load_tokenizer(spec: BackboneSpec, path: Path) -> Any:
    """The tokenizer of ``path``: left padding for decoders, pad token = EOS when it has none."""
    from transformers import AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(hf_model_dir(path)), local_files_only=True)
    if spec.family == "decoder":
        tokenizer.padding_side = "left"
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hf_backbone(
    spec: BackboneSpec | str,
    *,
    model_class: Any = None,
    quantize_4bit: bool = False,
    dtype: Any = None,
    device: str | None = None,
    cache_root: str | Path | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a backbone as plain transformers objects, for fine-tuning or pooling.

    ``model_class`` defaults to ``AutoModel`` (the base model, no LM head); anything with
    ``from_pretrained`` works (e.g. ``AutoModelForSequenceClassification``). ``quantize_4bit``
    loads the linear layers as bitsandbytes NF4 with double quantization, computing in ``dtype``.
    The tokenizer pads on the left for decoders and uses EOS as pad token when it has none;
    ``model.config.pad_token_id`` is set to match.
    """
    import torch

    spec = _as_spec(spec)
    path = resolve_weights(spec, cache_root)
    device = resolve_device(device)
    dtype = torch_dtype(dtype, family=spec.family, device=device)
    tokenizer = load_tokenizer(spec, path)
    if model_class is None:
        from transformers import AutoModel

        model_class = AutoModel
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": torch.device(device).index or 0} if device.startswith("cuda") else {"": device}
    with quiet_transformers():
        model = model_class.from_pretrained(str(hf_model_dir(path)), **kwargs)
    if not quantize_4bit:
        model = model.to(device)
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
