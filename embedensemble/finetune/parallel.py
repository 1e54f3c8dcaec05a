"""One fine-tune on several GPUs: data parallelism with ``torch.distributed`` (DDP).

Every process (one per GPU, started by ``torchrun --nproc_per_node=N``) builds the same model
from the same seed and walks the same batch plan as a single process would; of each micro-batch
it takes every N-th row (``rows[rank::N]``). DDP averages the gradients over processes, so
each process scales its loss by ``N`` times its share of the step's rows: the summed gradient,
the clipped norm, the optimizer step and therefore the loss curve are those of one process
with the same global batch (up to float summation order). Gradients are exchanged once per
optimizer step (``no_sync`` on the other micro-batches of gradient accumulation).

Adapters: only trainable parameters take part (DDP skips ``requires_grad=False``), so LoRA
exchanges only adapter gradients; for QLoRA each process loads the 4-bit base on its own GPU
(``device_map={"": local_rank}``), as the peft documentation describes for DDP.

Hooked into :func:`embedensemble.finetune.training.train` through its ``parallel`` argument;
:func:`current` returns the hook when this process is part of a process group of two or more.

A run: ``torchrun --nproc_per_node=8 -m embedensemble.fit --config C.json --members NAME --run R``
(see :func:`rank_run_dir`): every rank runs the same cross-fit, the fine-tuning steps in
data parallel, and rank 0 writes the run folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


class DataParallel:
    """This process's part in data-parallel training: its rows of each batch, DDP, and summed metrics."""

    def __init__(self, rank: int, world_size: int, device: torch.device | None = None) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.rank, self.world_size, self.device = rank, world_size, device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and reports; the others train in lockstep."""
        return self.rank == 0

    @property
    def loss_scale(self) -> float:
        """DDP averages gradients over processes; the loop wants their sum."""
        return float(self.world_size)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = self.device is not None and self.device.type == "cuda"
        # find_unused_parameters: HF backbones carry parts the pooled head never uses (BERT's pooler).
        return DistributedDataParallel(model, device_ids=[self.device] if on_gpu else None, find_unused_parameters=True)

    def local_rows(self, rows: np.ndarray) -> tuple[np.ndarray, int]:
        """This process's rows of a micro-batch, and how many of them count.

        A micro-batch with fewer rows than processes leaves some without a row: they run one row
        with weight 0, because every process must take part in each gradient exchange.
        """
        mine = rows[self.rank :: self.world_size]
        return (mine, len(mine)) if len(mine) else (rows[:1], 0)

    def sync(self, forward: torch.nn.Module, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        """Exchange gradients only on the step's last micro-batch."""
        return contextlib.nullcontext() if last_micro_batch or not hasattr(forward, "no_sync") else forward.no_sync()

    def sum(self, value: float) -> float:
        tensor = torch.tensor([value], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return float(tensor.item())

    def barrier(self) -> None:
        dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" and self.device is not None else torch.device("cpu")


def current(device: torch.device | None = None) -> DataParallel | None:
    """The hook for this process when it is one of several in an initialised process group, else ``None``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DataParallel(dist.get_rank(), dist.get_world_size(), device)


def init_from_env(backend: str | None = None) -> DataParallel | None:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` ...).

    Backend: NCCL when CUDA is available, else gloo. Each process uses GPU ``LOCAL_RANK``.
    Returns ``None`` outside torchrun (one process).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    device = None
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device is not None else "gloo"))
    return current(device)


def rank_run_dir(run_dir: str | os.PathLike) -> Path:
    """Under ``torchrun``: join the process group and give this process its run folder.

    Rank 0 fits into ``run_dir``. Every other rank trains the same models in lockstep (its rows of
    each batch) and writes into ``<run_dir>.ddp-rank<k>``, a copy of ``run_dir`` made before
    anyone starts, so every rank skips the same finished folds and resumes from the same
    checkpoints (only rank 0 writes checkpoints). Outside torchrun: ``run_dir`` itself.
    """
    run_dir = Path(run_dir)
    parallel = init_from_env()
    if parallel is None or parallel.is_main:
        if parallel is not None:
            parallel.barrier()  # the others copy the folder as it is now
        return run_dir
    mine = run_dir.with_name(f"{run_dir.name}.ddp-rank{parallel.rank}")
    shutil.rmtree(mine, ignore_errors=True)
    if run_dir.is_dir():
        shutil.copytree(run_dir, mine, ignore=shutil.ignore_patterns(".lock"))
    parallel.barrier()
    return mine


def run_processes(fn: Callable[..., Any], world_size: int, *args: Any, port: int | None = None) -> None:
    """Run ``fn(parallel, *args)`` in ``world_size`` local processes joined by gloo (tests, CPU trials).

    ``port``: the rendezvous port; default a free one chosen now, so two trials (or a leftover socket
    of an earlier one) never meet on a fixed port.
    """
    import socket

    import torch.multiprocessing as mp

    if port is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    mp.spawn(_worker, args=(world_size, port, fn, args), nprocs=world_size, join=True)


def _worker(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        fn(DataParallel(rank, world_size), *args)
        # Tear the group down together: a rank that destroyed it while rank 0 (the rendezvous host) was
        # still writing its results aborted now and then in CI ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()
