"""Resumable training checkpoints: trainable weights, optimizer, scheduler, step and RNG state.

A checkpoint is a folder ``checkpoint-<step>`` in the fit's ``workdir``, written under a temporary
name and renamed into place, so any ``checkpoint-*`` folder that exists is complete. Only tensors
(safetensors) and JSON are written: a checkpoint is never unpickled.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._logging import get_logger
from ..fileio import atomic_write_bytes, read_json, write_json

logger = get_logger(__name__)

PREFIX = "checkpoint-"


@dataclass
class LoopState:
    """Everything besides tensors that the training loop needs to continue where it stopped."""

    step: int = 0
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def copy_trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in trainable_state(model).items()}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    copy_named(trainable_state(model), tensors, "trainable parameters")


def copy_named(targets: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], what: str) -> None:
    """Copy ``tensors`` into the same-named ``targets`` in place (each keeps its device and dtype)."""
    missing = sorted(set(targets) - set(tensors))
    if missing:
        raise RuntimeError(f"checkpoint lacks {what} {missing[:5]}{'...' if len(missing) > 5 else ''}")
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(tensors[name].to(target.device))


def latest_checkpoint(workdir: Path | None) -> Path | None:
    """The checkpoint of the highest step in ``workdir``, or None."""
    if workdir is None or not Path(workdir).is_dir():
        return None
    found = [p for p in Path(workdir).iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()]
    return max(found, key=lambda p: int(p.name[len(PREFIX) :]), default=None)


def remove_checkpoints(workdir: Path) -> None:
    for path in Path(workdir).glob(f"{PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    workdir: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: LoopState,
    fingerprint: str,
    best_weights: dict[str, torch.Tensor] | None = None,
    averaged_weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` atomically and drop the older ones."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    final = workdir / f"{PREFIX}{state.step}"
    tmp = workdir / f".tmp-{PREFIX}{state.step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_tensors(tmp / "trainable.safetensors", copy_trainable_state(model))
    if best_weights is not None:
        write_tensors(tmp / "best.safetensors", best_weights)
    if averaged_weights is not None:
        write_tensors(tmp / "averaged.safetensors", averaged_weights)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    write_tensors(tmp / "optimizer.safetensors", opt_tensors)
    write_tensors(tmp / "rng.safetensors", _rng_state())
    write_json(
        tmp / "state.json",
        {
            "fingerprint": fingerprint,
            "loop": state.__dict__,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
        },
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    # Older checkpoints, and temporary folders left by a run killed while writing one.
    for old in [*workdir.glob(f"{PREFIX}*"), *workdir.glob(f".tmp-{PREFIX}*")]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    logger.debug("saved checkpoint %s", final)
    return final


def load_checkpoint(
    path: Path,
    *,
    fingerprint: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[LoopState, dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None] | None:
    """Restore a checkpoint into ``model``/``optimizer``/``scheduler`` and the RNGs.

    Returns the loop state, the best step's weights and the weight average (each None when the run
    kept none), or None, restoring nothing, when the checkpoint belongs to different data or settings.
    """
    meta = read_json(path / "state.json")
    if meta.get("fingerprint") != fingerprint:
        logger.warning("ignoring checkpoint %s: it was written for other data or settings", path)
        return None
    load_trainable_state(model, read_tensors(path / "trainable.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(read_tensors(path / "optimizer.safetensors"), meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    _set_rng_state(read_tensors(path / "rng.safetensors"))
    best = read_tensors(path / "best.safetensors") if (path / "best.safetensors").is_file() else None
    averaged = read_tensors(path / "averaged.safetensors") if (path / "averaged.safetensors").is_file() else None
    return LoopState(**meta["loop"]), best, averaged


# -- serialisation -----------------------------------------------------------------------------------


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    # safetensors.torch is used rather than io.save_tensors because weights may be bfloat16,
    # which numpy cannot hold; the bytes still go through the atomic writer.
    payload = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    atomic_write_bytes(path, save(payload))


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _rng_state() -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda.{i}"] = s
    return states


def _set_rng_state(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted((k for k in states if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
