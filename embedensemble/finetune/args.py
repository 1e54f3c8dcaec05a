"""Typed hyperparameters of the fine-tuning members, parsed from ``MemberConfig.params``.

``FinetuneArgs.from_params`` rejects unknown keys and wrong types with a :class:`ConfigError`
that names the member and the key, so a typo in an experiment file fails before any model loads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ConfigError
from ..labels import N_LABELS

ADAPTERS_BY_KIND: dict[str, tuple[str, ...]] = {
    "pooled-finetune": ("lora", "none"),
    "seqcls-finetune": ("lora", "ia3", "none"),
}
# Learning rates that work for each adapter type when the config gives none: full fine-tuning
# needs small steps, LoRA the usual 1e-4..2e-4, IA3 (a few scaling vectors) much larger ones.
DEFAULT_LR = {"none": 3e-5, "lora": 2e-4, "ia3": 3e-3}
SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
HEADS = ("linear", "label_attention")  # of pooled-finetune: finetune.classifiers.PooledClassifier


@dataclass
class FinetuneArgs:
    """Hyperparameters of ``pooled-finetune`` and ``seqcls-finetune`` members.

    Adapter: ``adapter`` is ``"lora"``, ``"ia3"`` (seqcls only) or ``"none"`` (full fine-tuning,
    meant for small encoders). ``quantize_4bit`` loads the frozen base in 4-bit NF4 (QLoRA).
    LoRA: ``lora_r``, ``lora_alpha`` (default ``2 * lora_r``), ``lora_dropout``, ``target_modules``
    (``"all-linear"`` = every attention and MLP projection). IA3 uses peft's per-architecture
    modules unless ``target_modules``/``feedforward_modules`` are given.

    Optimisation: AdamW with ``lr`` (default by adapter, see ``DEFAULT_LR``), ``head_lr`` for the
    new classification head (default ``lr``), ``weight_decay``, ``warmup_ratio`` then
    ``scheduler`` decay, ``max_grad_norm``; ``epochs`` or ``max_steps`` (whichever ends first),
    ``batch_size`` x ``grad_accum`` texts per optimizer step. ``ema_decay`` (e.g. 0.995) keeps an
    exponential moving average of the trainable weights and ends with it instead of the last step's
    (:mod:`embedensemble.finetune.averaging`; not with ``eval_fraction``). ``pos_weight`` weighs positive
    labels in the BCE loss: ``"auto"`` (negatives/positives per emotion, clipped to
    ``pos_weight_max``), a list of 11 numbers, or ``None``. ``lca_weight`` (0 to 1) blends in SpanEmo's
    label-correlation-aware ranking loss, which ranks each expressed emotion above each one not expressed
    (:mod:`embedensemble.finetune.losses`): ``(1 - lca_weight) * BCE + lca_weight * LCA``; SpanEmo used 0.2.

    Runtime: ``max_length`` tokens (default 128, capped by the backbone's), ``precision``
    (``"auto"`` = bf16 autocast on a CUDA card that supports it, else fp32; ``"bf16"`` = bf16 autocast on
    CUDA or CPU, where it pays only with native bf16 (AVX512-BF16, AMX): docs/bf16.md),
    ``gradient_checkpointing``, ``save_every_steps`` (resumable checkpoints in the fit's
    ``workdir``), ``eval_fraction`` + ``early_stopping_patience`` (evaluations without a better
    held-out loss before stopping; the best weights are kept), ``bucket_batches`` (how many
    batches' worth of texts are sorted by length together), ``seed`` (default: the run seed).
    ``packing`` (pooled decoders only) packs each batch's texts padding-free into rows with
    block-diagonal attention (:mod:`embedensemble.backbones.packing`): same numbers, no padding.
    ``train_top_layers`` (pooled encoders, ``adapter="none"``): only the top N layers (and the head) are
    trained; the embeddings and lower layers stay frozen, run once per text and kept in memory (up to
    ``frozen_cache_gb`` per backbone), so each later epoch, fold and prediction costs the top layers only
    (:mod:`embedensemble.finetune.frozen_layers`). Saved as the top layers' weights alone.
    ``backbone_options`` are passed to ``get_backbone_spec`` (e.g. ``pooling``, ``task``).
    ``head`` (``pooled-finetune``): ``"linear"`` on the pooled embedding, or ``"label_attention"``: one
    learned attention query per emotion over the token states, each emotion scoring its own pooled vector.
    ``normalise``: the member reads :func:`embedensemble.normalise.normalise_tweet`'s view of each text
    (emoji as words, segmented hashtags, placeholders) when training and predicting; subword tokenizers
    map most emoji to an unknown token, so a fine-tuned encoder sees them only this way.
    """

    adapter: str = "lora"
    quantize_4bit: bool = False
    lora_r: int = 16
    lora_alpha: float | None = None
    lora_dropout: float = 0.05
    target_modules: str | list[str] | None = "all-linear"
    feedforward_modules: list[str] | None = None
    lr: float | None = None
    head_lr: float | None = None
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler: str = "linear"
    max_grad_norm: float | None = 1.0
    max_length: int | None = None
    precision: str = "auto"
    gradient_checkpointing: bool = False
    pos_weight: str | list[float] | None = None
    pos_weight_max: float = 10.0
    lca_weight: float = 0.0
    eval_fraction: float = 0.0
    eval_every_steps: int | None = None
    early_stopping_patience: int | None = None
    save_every_steps: int = 50
    bucket_batches: int = 32
    packing: bool = False
    predict_batch_size: int = 64
    seed: int | None = None
    normalise: bool = False
    train_top_layers: int | None = None
    frozen_cache_gb: float = 2.0
    ema_decay: float | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)
    head: str = "linear"

    DEFAULT_MAX_LENGTH: ClassVar[int] = 128

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, *, kind: str, where: str = "params") -> FinetuneArgs:
        """Parse ``params`` for a member of ``kind``; ``where`` prefixes error messages."""
        params = dict(params or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} for kind {kind!r}; allowed keys are {sorted(known)}")
        hints = typing.get_type_hints(cls)
        for key, value in params.items():
            if not _matches(value, hints[key]):
                raise ConfigError(f"{where}: '{key}' must be {_describe(hints[key])}, got {value!r}")
            if isinstance(value, int) and not isinstance(value, bool) and _accepts_float(hints[key]):
                params[key] = float(value)
        args = cls(**params)
        args._validate(kind, where)
        return args

    def _validate(self, kind: str, where: str) -> None:
        adapters = ADAPTERS_BY_KIND[kind]
        if self.adapter not in adapters:
            raise ConfigError(f"{where}: 'adapter' {self.adapter!r} is not one of {list(adapters)} for kind {kind!r}")
        if self.quantize_4bit and self.adapter == "none":
            raise ConfigError(
                f"{where}: 'quantize_4bit' needs an adapter ('lora' or 'ia3'); 4-bit weights cannot be fine-tuned fully"
            )
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"{where}: 'scheduler' {self.scheduler!r} is not one of {list(SCHEDULERS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{where}: 'precision' {self.precision!r} is not one of {list(PRECISIONS)}")
        positive = {
            "lora_r": self.lora_r,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "save_every_steps": self.save_every_steps,
            "bucket_batches": self.bucket_batches,
            "predict_batch_size": self.predict_batch_size,
            "max_steps": self.max_steps,
            "max_length": self.max_length,
            "eval_every_steps": self.eval_every_steps,
            "early_stopping_patience": self.early_stopping_patience,
            "lr": self.lr,
            "head_lr": self.head_lr,
            "lora_alpha": self.lora_alpha,
            "pos_weight_max": self.pos_weight_max,
            "train_top_layers": self.train_top_layers,
            "frozen_cache_gb": self.frozen_cache_gb,
        }
        for key, value in positive.items():
            if value is not None and value <= 0:
                raise ConfigError(f"{where}: '{key}' must be > 0, got {value!r}")
        if self.epochs <= 0:
            raise ConfigError(f"{where}: 'epochs' must be > 0, got {self.epochs!r}")
        if not 0.0 <= self.lca_weight <= 1.0:
            raise ConfigError(f"{where}: 'lca_weight' must be in [0, 1], got {self.lca_weight!r}")
        for key in ("lora_dropout", "warmup_ratio", "eval_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{where}: '{key}' must be in [0, 1), got {getattr(self, key)!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"{where}: 'weight_decay' must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.pos_weight, str) and self.pos_weight != "auto":
            raise ConfigError(
                f"{where}: 'pos_weight' must be \"auto\", a list of {N_LABELS} numbers or null, got {self.pos_weight!r}"
            )
        if isinstance(self.pos_weight, list) and (len(self.pos_weight) != N_LABELS or min(self.pos_weight) <= 0):
            raise ConfigError(f"{where}: 'pos_weight' list must hold {N_LABELS} positive numbers, got {self.pos_weight!r}")
        if self.packing and kind != "pooled-finetune":
            raise ConfigError(f"{where}: 'packing' is only supported by kind 'pooled-finetune', not {kind!r}")
        if self.train_top_layers is not None and (kind != "pooled-finetune" or self.adapter != "none"):
            raise ConfigError(
                f"{where}: 'train_top_layers' needs kind 'pooled-finetune' with adapter \"none\" "
                f"(got kind {kind!r}, adapter {self.adapter!r})"
            )
        if self.head not in HEADS:
            raise ConfigError(f"{where}: 'head' {self.head!r} is not one of {list(HEADS)}")
        if self.head != "linear" and (kind != "pooled-finetune" or self.packing):
            raise ConfigError(f"{where}: 'head' {self.head!r} needs kind 'pooled-finetune' without 'packing'")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"{where}: 'ema_decay' must be in (0, 1), got {self.ema_decay!r}")
        if self.ema_decay is not None and self.eval_fraction > 0.0:
            raise ConfigError(
                f"{where}: 'ema_decay' keeps the averaged weights and 'eval_fraction' the best step's weights: set one"
            )
        if self.early_stopping_patience is not None and self.eval_fraction == 0.0:
            raise ConfigError(f"{where}: 'early_stopping_patience' needs 'eval_fraction' > 0")

    # -- derived values --------------------------------------------------------------------------------

    def learning_rate(self) -> float:
        return float(self.lr if self.lr is not None else DEFAULT_LR[self.adapter])

    def alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r)

    def resolved_max_length(self, backbone_max_length: int | None) -> int:
        wanted = self.max_length or self.DEFAULT_MAX_LENGTH
        return min(wanted, backbone_max_length) if backbone_max_length else wanted

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` (parsed JSON) fits type ``hint``; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _accepts_float(hint: Any) -> bool:
    return hint is float or float in typing.get_args(hint)


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(args[0])}"
    if args and typing.get_origin(hint) is not dict:
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is dict:
        return "an object"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
