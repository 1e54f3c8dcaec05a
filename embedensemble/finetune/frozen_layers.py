"""Fine-tuning only the top layers of an encoder, with the frozen layers run once per text.

When the embeddings and the bottom layers are frozen, their output for a text never changes: it is
computed once, kept in a process-wide cache keyed by the text's token ids, and every later epoch,
fold and prediction starts at the first trainable layer. Five folds x two epochs of an mpnet-base
member with 3 of its 12 layers trainable then cost about a quarter of full fine-tuning on a CPU.

:class:`TopLayersBackbone` stands in for the backbone (``backbone(input_ids=..., attention_mask=...)``
returns an object with ``last_hidden_state``), so the training loop, checkpoints and prediction do not
change. Encoders (BERT-like ``encoder.layer`` with right padding) only: a decoder's lower states
depend on its position ids and left padding.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

# Frozen-layer outputs of every process's members, per (weights, frozen depth, autocast dtype): folds of one member,
# and members sharing a backbone and depth, reuse them. Bounded by ``max_bytes`` (oldest texts dropped).
_STATES: dict[tuple, OrderedDict[bytes, torch.Tensor]] = {}
_SIZES: dict[tuple, int] = {}
_LOCK = threading.Lock()


class _Passthrough(nn.Module):
    """Replaces the embeddings in the top view: the cached hidden states are its input."""

    def forward(self, input_ids: Any = None, inputs_embeds: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        return inputs_embeds


def _layer_list(model: nn.Module) -> nn.ModuleList:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "embeddings"):
        raise ConfigError(
            f"'train_top_layers' needs an encoder with 'embeddings' and 'encoder.layer' (BERT, MPNet, RoBERTa); "
            f"{type(model).__name__} has not"
        )
    return layers


def _view(model: nn.Module, layers: list[nn.Module], embeddings: nn.Module | None) -> nn.Module:
    """A shallow copy of ``model`` sharing every weight, whose encoder runs ``layers`` only (and whose
    embeddings module is ``embeddings``, if given). The original model is left as it was."""
    view = copy.copy(model)
    view._modules = dict(model._modules)
    encoder = copy.copy(model.encoder)
    encoder._modules = dict(model.encoder._modules)
    encoder._modules["layer"] = nn.ModuleList(layers)
    view._modules["encoder"] = encoder
    if embeddings is not None:
        view._modules["embeddings"] = embeddings
    return view


class TopLayersBackbone(nn.Module):
    """``model`` with its embeddings and all but the top ``n_trainable`` layers frozen and cached.

    ``cache_key`` names the frozen weights (the base checkpoint: they are never trained), so folds and
    members of one process share the frozen states. ``state_dict`` is the wrapped model's own, key for key.
    """

    def __init__(self, model: nn.Module, n_trainable: int, cache_key: str, max_bytes: int = 2 << 30) -> None:
        super().__init__()
        layers = _layer_list(model)
        if not 1 <= n_trainable <= len(layers):
            raise ConfigError(f"'train_top_layers' must be in 1..{len(layers)} for this backbone, got {n_trainable}")
        self.model = model
        self.n_frozen = len(layers) - n_trainable
        self.max_bytes = max_bytes
        self._key = (cache_key, self.n_frozen)
        # Plain attributes, not submodules: their weights are the model's own (state_dict stays the model's).
        self.__dict__["_lower"] = _view(model, list(layers[: self.n_frozen]), None)
        self.__dict__["_upper"] = _view(model, list(layers[self.n_frozen :]), _Passthrough())
        # Only the top layers train. Everything else stays as loaded: the embeddings, the frozen layers,
        # the pooler (unused) and weights the layers share (MPNet's relative_attention_bias, which would
        # otherwise train while the cached lower states, computed with its loaded value, go stale).
        model.requires_grad_(False)
        self.__dict__["_top"] = nn.ModuleList(layers[self.n_frozen :])
        self._top.requires_grad_(True)

    @property
    def config(self) -> Any:
        return self.model.config

    def train(self, mode: bool = True) -> TopLayersBackbone:
        super().train(mode)
        self.model.eval()  # the cached states were computed without dropout; keep it so below the top
        self._top.train(mode)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> Any:
        """The wrapped model's output (``last_hidden_state``) for the batch, starting from cached states."""
        lengths = attention_mask.sum(dim=1).tolist()
        keys = [row[:n].cpu().numpy().tobytes() for row, n in zip(input_ids, lengths)]
        states = self._frozen_states(input_ids, lengths, keys)
        hidden = input_ids.new_zeros((len(keys), input_ids.shape[1], states[0].shape[-1]), dtype=states[0].dtype)
        for row, (state, n) in enumerate(zip(states, lengths)):
            hidden[row, :n] = state.to(hidden.device)
        return self._upper(inputs_embeds=hidden, attention_mask=attention_mask)

    def _frozen_states(self, input_ids: torch.Tensor, lengths: list[int], keys: list[bytes]) -> list[torch.Tensor]:
        # States computed under bf16 autocast differ from fp32 ones: an fp32 and a bf16 member share none.
        autocast = torch.is_autocast_enabled(input_ids.device.type)
        store = (*self._key, torch.get_autocast_dtype(input_ids.device.type) if autocast else None)
        with _LOCK:
            cache = _STATES.setdefault(store, OrderedDict())
            found = {key: cache[key] for key in keys if key in cache}
        missing = [row for row, key in enumerate(keys) if key not in found]
        if missing:
            width = max(lengths[row] for row in missing)
            mask = torch.zeros_like(input_ids[missing, :width])
            for i, row in enumerate(missing):
                mask[i, : lengths[row]] = 1
            with torch.no_grad():
                hidden = self._lower(input_ids=input_ids[missing, :width], attention_mask=mask).last_hidden_state
            with _LOCK:
                for i, row in enumerate(missing):
                    state = hidden[i, : lengths[row]].detach().cpu().clone()
                    found[keys[row]] = state
                    if keys[row] not in cache:
                        cache[keys[row]] = state
                        _SIZES[store] = _SIZES.get(store, 0) + state.numel() * state.element_size()
                self._evict(cache, store)
        return [found[key] for key in keys]

    def _evict(self, cache: OrderedDict[bytes, torch.Tensor], store: tuple) -> None:
        while _SIZES.get(store, 0) > self.max_bytes and cache:
            _, state = cache.popitem(last=False)
            _SIZES[store] -= state.numel() * state.element_size()

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights that training changes (the top layers'), under the wrapped model's names."""
        top = {id(p) for p in self._top.parameters()}
        return {name: p.detach() for name, p in self.model.named_parameters() if id(p) in top}


def clear_frozen_states() -> None:
    """Drop every cached frozen-layer state (tests; a long-lived process that is done fitting)."""
    with _LOCK:
        _STATES.clear()
        _SIZES.clear()
