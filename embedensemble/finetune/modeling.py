"""Loading a backbone for fine-tuning: dtype, 4-bit quantisation, adapters, text format.

The same functions build the model at training time and at load time, so a reloaded member has
exactly the dtypes (and so the numerics) of the one that was trained.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .._logging import get_logger
from ..backbones.tokens import TextFormat
from ..errors import ArtifactError, ConfigError
from ..fileio import write_json
from .args import FinetuneArgs
from .checkpoint import read_tensors, write_tensors

logger = get_logger(__name__)

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def backbone_spec(backbone: str, args: FinetuneArgs, where: str) -> Any:
    """The ``BackboneSpec`` of ``backbone`` (preset name, HF id or local path) with ``args.backbone_options``."""
    from ..backbones import get_backbone_spec

    try:
        spec = get_backbone_spec(backbone, **args.backbone_options)
    except TypeError as exc:
        raise ConfigError(f"{where}: bad 'backbone_options' {sorted(args.backbone_options)}: {exc}") from None
    if spec.hidden_layer is not None:
        raise ConfigError(f"{where}: 'hidden_layer' is for frozen embedding features; a fine-tuned backbone pools its last layer")
    return spec


def weight_dtype(args: FinetuneArgs, device: torch.device, bf16: bool) -> torch.dtype:
    """dtype of the frozen (non-quantised) weights.

    Full fine-tuning keeps fp32 master weights (bf16 only inside autocast); adapters train on a
    frozen base that can sit in bf16 on a GPU, halving its memory.
    """
    if args.adapter == "none" or device.type != "cuda" or not bf16:
        return torch.float32
    return torch.bfloat16


def load_base(
    spec: Any,
    args: FinetuneArgs,
    device: torch.device,
    *,
    bf16: bool,
    training: bool,
    model_class: Any = None,
    config_overrides: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, Any]:
    """Load the backbone (optionally 4-bit) and its tokenizer, ready for adapters."""
    from ..backbones import load_hf_backbone

    if config_overrides:
        model_class = _WithConfig(model_class, config_overrides)
    model, tokenizer = load_hf_backbone(
        spec,
        model_class=model_class,
        quantize_4bit=args.quantize_4bit,
        dtype=weight_dtype(args, device, bf16),
        device=str(device),
    )
    checkpointing = training and args.gradient_checkpointing
    if args.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        # Casts the non-quantised weights (norms, embeddings) to fp32 for stable training; done
        # at load time too so a reloaded member computes exactly like the trained one.
        with _quiet_peft():
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if device.type == "cpu":
            _disable_bnb_cpu_packing(model)
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # no generation: a KV cache only costs memory
    return model, tokenizer


def apply_adapter(
    model: torch.nn.Module, args: FinetuneArgs, *, task_type: str | None = None, modules_to_save: list[str] | None = None
) -> torch.nn.Module:
    """Wrap ``model`` in a peft LoRA/IA3 adapter, or unfreeze it for ``adapter="none"``."""
    if args.adapter == "none":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import IA3Config, LoraConfig, get_peft_model

    targets = args.target_modules
    if args.adapter == "lora":
        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.alpha(),
            lora_dropout=args.lora_dropout,
            target_modules=targets,
            bias="none",
            task_type=task_type,
            modules_to_save=modules_to_save,
        )
    else:
        # "all-linear" is LoRA's default; IA3 then uses peft's per-architecture k/v/down choice.
        config = IA3Config(
            target_modules=None if targets == "all-linear" else targets,
            feedforward_modules=args.feedforward_modules,
            task_type=task_type,
            modules_to_save=modules_to_save,
        )
    try:
        with _quiet_peft():
            peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"cannot apply {args.adapter} adapter: {exc}") from None
    for param in peft_model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            # Trainable copies (e.g. a bf16 classification head in modules_to_save) get fp32
            # master weights; AdamW updates on bf16 weights lose most small steps.
            param.data = param.data.float()
    return peft_model


def text_format(spec: Any, tokenizer: Any, args: FinetuneArgs, *, append_eos: bool) -> TextFormat:
    """Prompt, truncation and padding for ``spec``: decoders pad left and get explicit position ids."""
    decoder = getattr(spec, "family", "encoder") == "decoder"
    if tokenizer.pad_token_id is None:
        # Prefer a token that is neither EOS nor text: sequence classifiers find the last real
        # token by comparing ids with pad_token_id, so an EOS pad would hide an appended EOS.
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"backbone {getattr(spec, 'name', spec)!r}: tokenizer has no pad, unk or eos token")
    return TextFormat(
        max_length=args.resolved_max_length(getattr(spec, "max_length", None)),
        prompt_template=getattr(spec, "prompt_template", None),
        task=getattr(spec, "task", None),
        append_eos=append_eos and bool(getattr(spec, "append_eos", False)) and tokenizer.eos_token_id is not None,
        padding_side="left" if decoder else "right",
        pad_token_id=int(tokenizer.pad_token_id),
        position_ids=decoder,
        packing=args.packing and decoder,
    )


def hidden_size(model: torch.nn.Module) -> int:
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return int(config.hidden_size)


def save_adapter(model: torch.nn.Module, folder: Path) -> None:
    """Write peft's ``adapter_model.safetensors`` + ``adapter_config.json`` (loadable by peft itself)."""
    from peft import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    write_tensors(folder / ADAPTER_FILE, get_peft_model_state_dict(model))
    write_json(folder / ADAPTER_CONFIG, _jsonable(model.peft_config["default"].to_dict()))


def load_adapter(model: torch.nn.Module, folder: Path) -> None:
    from peft import set_peft_model_state_dict

    if not (folder / ADAPTER_FILE).is_file():
        raise ArtifactError(f"{folder} has no {ADAPTER_FILE}")
    result = set_peft_model_state_dict(model, read_tensors(folder / ADAPTER_FILE))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ArtifactError(f"{folder / ADAPTER_FILE} holds weights this model does not have: {unexpected[:5]}")


def save_full(module: torch.nn.Module, path: Path) -> None:
    write_tensors(path, module.state_dict())


def load_full(module: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ArtifactError(f"missing weights file {path}")
    tensors = read_tensors(path)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path} does not match the backbone: {exc}") from None


@contextmanager
def _quiet_peft() -> Iterator[None]:
    # peft reads transformers' deprecated ``is_gradient_checkpointing``; the FutureWarning is
    # about peft's code, not the caller's, so it is only noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        yield


def _disable_bnb_cpu_packing(model: torch.nn.Module) -> None:
    """Keep bitsandbytes' CPU inference on the dequantising path that training uses.

    On CPUs with AVX512-BF16, ``Linear4bit`` repacks its weight at the first no-grad eval call
    (absmax in bf16): predictions then differ from training-time numerics, the first call differs
    from later ones (~1e-4), and layers narrower than one quantisation block fail to repack.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v) for v in obj)
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)  # enums (task_type, peft_type) and other plain values


class _WithConfig:
    """Stands in for a model class, adding config overrides (e.g. ``num_labels``) to ``from_pretrained``."""

    def __init__(self, model_class: Any, overrides: dict[str, Any]) -> None:
        if model_class is None:
            from transformers import AutoModel

            model_class = AutoModel
        self.model_class = model_class
        self.overrides = overrides
        self.__name__ = getattr(model_class, "__name__", "model")

    def from_pretrained(self, *args: Any, **kwargs: Any) -> torch.nn.Module:
        return self.model_class.from_pretrained(*args, **{**self.overrides, **kwargs})
