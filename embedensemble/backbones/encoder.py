"""``Encoder``: texts -> float32 vectors, one per text, for any backbone spec.

Encoders (BERT-like) run through sentence-transformers on the local folder. Decoders run as a
plain transformers base model: prompt template, optional EOS, left padding with explicit
position ids, last-token pooling, optional L2 normalisation. Texts are batched by length
(tweets are short, so padding is most of the cost) and returned in input order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import get_logger, progress, progress_enabled, quiet_transformers
from ..errors import ConfigError, DataError
from ..fileio import stable_hash
from ..runtime import default_num_threads as runtime_threads
from .presets import BackboneSpec, get_backbone_spec
from .tokens import TextFormat, collate, length_sorted_batches, pool, tokenize
from .weights import (
    default_cache_root,
    hf_model_dir,
    load_tokenizer,
    resolve_device,
    resolve_weights,
    torch_dtype,
    weights_identity,
)

logger = get_logger(__name__)

# Bump when a change in this module changes the vectors an unchanged spec produces.
ENCODER_FORMAT = 1
PRECISIONS = ("fp32", "bf16", "int8")
_ST_POOLING = {"mean": "mean", "cls": "cls", "last_token": "lasttoken"}


def default_num_threads() -> int:
    """Torch threads for encoding: :func:`embedensemble.runtime.default_num_threads` with torch's own count as base."""
    import torch

    return runtime_threads(torch.get_num_threads())


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads (default :func:`default_num_threads`), then restore."""
    import torch

    n = default_num_threads() if n is None else n
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


class Encoder:
    """Embeds texts with one backbone; the model is loaded on the first :meth:`encode`.

    Args:
        spec: a :class:`BackboneSpec`, or a preset name / HF id / local path.
        device: torch device (default: ``cuda`` when available, else ``cpu``).
        batch_size: texts per forward pass.
        show_progress_bar: ``None`` follows the embedensemble logger level.
        cache_root: where built weights and digests live (default :func:`default_cache_root`).
        dtype: ``float32`` / ``bfloat16`` / ``float16``; default float32, bf16 for decoders on CUDA.
        num_threads: torch threads while encoding (default :func:`default_num_threads`).
        packing: decoders only: padding-free rows with block-diagonal attention (:mod:`.packing`),
            the same vectors up to rounding; ``compile_layers`` also compiles each layer (``torch.compile``).
        precision: ``"fp32"`` (torch), ``"bf16"`` (torch under bf16 autocast: fp32 weights, bf16 matrix
            products; several times faster on CPUs with AVX512-BF16/AMX, slow on others) or ``"int8"``:
            encoders only, exported once to ONNX with int8 weights and run by ONNX Runtime
            (:mod:`.onnx_encoder`). Each gives other vectors, so another identity.
    """

    def __init__(
        self,
        spec: BackboneSpec | str,
        *,
        device: str | None = None,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        cache_root: str | Path | None = None,
        dtype: str | None = None,
        num_threads: int | None = None,
        packing: bool = False,
        compile_layers: bool = False,
        precision: str = "fp32",
    ) -> None:
        self.spec = spec if isinstance(spec, BackboneSpec) else get_backbone_spec(spec)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if precision == "int8" and self.spec.family != "encoder":
            raise ConfigError(f"backbone '{self.spec.name}': precision 'int8' is for encoders, not {self.spec.family} backbones")
        self.precision = precision
        if packing and self.spec.pooling != "last_token":
            raise ConfigError(f"backbone '{self.spec.name}': packing pools the last token only, not {self.spec.pooling!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.device = device
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.cache_root = cache_root
        self.dtype = dtype
        self.num_threads = num_threads
        self.packing = packing
        self.compile_layers = compile_layers
        self._path: Path | None = None
        self._identity: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._dim: int | None = None

    def __repr__(self) -> str:
        return f"Encoder({self.spec.name!r}, family={self.spec.family!r}, pooling={self.spec.pooling!r})"

    @property
    def path(self) -> Path:
        """The local weights folder (built on first access for packaged presets)."""
        if self._path is None:
            self._path = resolve_weights(self.spec, self.cache_root)
        return self._path

    @property
    def identity(self) -> str:
        """``<name>-<hash>``: the hash covers the weights and every setting that changes the vectors."""
        if self._identity is None:
            device = resolve_device(self.device)
            payload = {
                "format": ENCODER_FORMAT,
                "weights": weights_identity(self.spec, self.path, self.cache_root),
                "family": self.spec.family,
                "pooling": self.spec.pooling,
                "prompt_template": self.spec.prompt_template,
                "task": self.spec.task if self.spec.prompt_template and "{task}" in self.spec.prompt_template else None,
                "append_eos": self.spec.append_eos,
                "max_length": self.spec.max_length,
                "normalize": self.spec.normalize,
                "dtype": str(torch_dtype(self.dtype, family=self.spec.family, device=device)).replace("torch.", ""),
                **({"packing": True} if self.packing and self.spec.family == "decoder" else {}),
                **({"hidden_layer": self.spec.hidden_layer} if self.spec.hidden_layer is not None else {}),
                **({"precision": "bf16"} if self.precision == "bf16" else {}),
                # onnx 3: additive padding mask (a boolean one left MPNet attending to padding), fp32 down-projections
                **({"precision": self.precision, "onnx": 3} if self.precision == "int8" else {}),
            }
            safe_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.spec.name)[:48]
            self._identity = f"{safe_name}-{stable_hash(payload, length=20)}"
        return self._identity

    @property
    def dim(self) -> int:
        """Length of each vector (loads the model)."""
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` as a float32 array ``[len(texts), dim]``, in input order."""
        if isinstance(texts, str):
            raise DataError("encode() takes a list of texts, not a single string")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"text {i} is {type(text).__name__}, not str", row=i)
        self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.precision == "int8":
            return self._model.encode(texts)
        with torch_threads(self.num_threads), self._autocast():
            out = self._encode_decoder(texts) if self.spec.family == "decoder" else self._encode_st(texts)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(resolve_device(self.device).split(":")[0], dtype=torch.bfloat16)

    # -- loading -----------------------------------------------------------------------------

    def _load(self) -> None:
        if self._model is not None:
            return
        device = resolve_device(self.device)
        if self.precision == "int8":
            self._load_onnx()
            device = "onnxruntime int8"
        elif self.spec.family == "decoder":
            self._load_decoder(device)
        else:
            self._load_st(device)
        logger.info("loaded backbone '%s' from %s (dim %d, %s)", self.spec.name, self.path, self._dim, device)

    def _load_st(self, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        dtype = torch_dtype(self.dtype, family=self.spec.family, device=device)
        with quiet_transformers(self.show_progress_bar):
            model = SentenceTransformer(str(self.path), device=device, local_files_only=True, model_kwargs={"dtype": dtype})
        model.max_seq_length = self.spec.max_length
        for module in model.modules():
            if type(module).__name__ == "Pooling" and isinstance(getattr(module, "pooling_mode", None), str):
                wanted = _ST_POOLING[self.spec.pooling]
                if module.pooling_mode != wanted:
                    logger.info(
                        "backbone '%s': pooling %s instead of the folder's %s", self.spec.name, wanted, module.pooling_mode
                    )
                    module.pooling_mode = wanted
        model.eval()
        self._model = model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self._dim = int(get_dim())

    def _load_onnx(self) -> None:
        from .onnx_encoder import OnnxSentenceEncoder

        root = Path(self.cache_root) if self.cache_root is not None else default_cache_root()
        self._model = OnnxSentenceEncoder(
            self.spec,
            self.path,
            root / "onnx" / self.identity,
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            show_progress_bar=self.show_progress_bar,
        ).load()
        self._dim = self._model.dim

    def _load_decoder(self, device: str) -> None:
        from transformers import AutoModel

        dtype = torch_dtype(self.dtype, family=self.spec.family, device=device)
        self._tokenizer = load_tokenizer(self.spec, self.path)
        with quiet_transformers(self.show_progress_bar):
            model = AutoModel.from_pretrained(str(hf_model_dir(self.path)), dtype=dtype, local_files_only=True)
        if self.spec.hidden_layer is not None:
            model = truncate_decoder(model, self.spec.hidden_layer, self.spec.name)
        model.to(device).eval()
        self._model = model
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self._dim = int(config.hidden_size)
        if self.spec.append_eos and self._tokenizer.eos_token_id is None:
            raise DataError(f"backbone '{self.spec.name}': append_eos is set but its tokenizer has no EOS token")

    # -- encoders (sentence-transformers) ----------------------------------------------------------

    def _encode_st(self, texts: list[str]) -> np.ndarray:
        inputs = [self.spec.format_text(t) for t in texts]
        return self._model.encode(
            inputs,
            batch_size=self.batch_size,
            show_progress_bar=progress_enabled(self.show_progress_bar),
            convert_to_numpy=True,
            normalize_embeddings=self.spec.normalize,
        )

    # -- decoders (last-token pooling) -------------------------------------------------------------

    def text_format(self) -> TextFormat:
        """How this decoder's texts become token ids: prompt, EOS, left padding with position ids (loads the tokenizer)."""
        self._load()
        pad_id = self._tokenizer.pad_token_id
        return TextFormat(
            max_length=self.spec.max_length,
            prompt_template=self.spec.prompt_template,
            task=self.spec.task,
            append_eos=self.spec.append_eos,
            padding_side="left",
            pad_token_id=int(pad_id if pad_id is not None else self._tokenizer.eos_token_id or 0),
            position_ids=True,
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text as the decoder sees them: prompt, truncation, then EOS when ``append_eos``."""
        fmt = self.text_format()  # loads the tokenizer
        return tokenize(self._tokenizer, texts, fmt)

    def _encode_decoder(self, texts: list[str]) -> np.ndarray:
        import torch

        fmt = self.text_format()
        ids = tokenize(self._tokenizer, texts, fmt)
        if self.packing:
            from .packing import embed_packed

            return embed_packed(self._model, ids, pad_id=fmt.pad_token_id, batch_size=self.batch_size,
                                normalize=self.spec.normalize, compile_layers=self.compile_layers)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        device = next(self._model.parameters()).device
        batches = length_sorted_batches([len(row) for row in ids], self.batch_size)
        with torch.inference_mode():
            for batch in progress(batches, desc=f"Encoding ({self.spec.name})", show_progress_bar=self.show_progress_bar):
                inputs = {k: v.to(device) for k, v in collate([ids[i] for i in batch], fmt).items()}
                hidden = self._model(**inputs).last_hidden_state
                vectors = pool(hidden, inputs["attention_mask"], self.spec.pooling).float()
                if self.spec.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
                out[batch] = vectors.cpu().numpy()
        return out


def truncate_decoder(model: Any, hidden_layer: int, name: str = "decoder") -> Any:
    """``model`` (a transformers base decoder) cut after block ``hidden_layer``, its final norm dropped,
    so that ``last_hidden_state`` is that block's output (``hidden_states[hidden_layer]`` of the whole
    model) and the blocks above it cost nothing."""
    from torch import nn

    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "norm"):
        raise ConfigError(f"backbone '{name}': hidden_layer needs a decoder with 'layers' and 'norm' ({type(model).__name__} has not)")
    if hidden_layer > len(layers):
        raise ConfigError(f"backbone '{name}': hidden_layer {hidden_layer} is past its {len(layers)} layers")
    model.layers = nn.ModuleList(list(layers)[:hidden_layer])
    model.norm = nn.Identity()
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    config.num_hidden_layers = hidden_layer
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:hidden_layer]
    return model
