"""The training loop shared by both fine-tuning members: plain torch, identical on CPU and GPU.

The model is any module mapping a padded batch (``input_ids``, ``attention_mask`` and maybe
``position_ids``) to logits [batch, 11]. The data order of every epoch is a pure function of
``(seed, epoch)``, and checkpoints carry the optimizer, scheduler and RNG state, so a run resumed
from step k ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._logging import get_logger, progress
from ..backbones.tokens import TextFormat, collate, length_sorted_batches
from ..errors import NumericalError
from .args import FinetuneArgs
from .averaging import WeightAverage
from .batching import length_bucketed_batches
from .checkpoint import (
    LoopState,
    copy_trainable_state,
    latest_checkpoint,
    load_checkpoint,
    load_trainable_state,
    remove_checkpoints,
    save_checkpoint,
    trainable_state,
)
from .losses import MultiLabelLoss, pos_weight_vector

logger = get_logger(__name__)

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TokenizedData:
    ids: list[list[int]]
    labels: np.ndarray  # float32 [n, 11]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> TokenizedData:
        return TokenizedData([self.ids[i] for i in index], self.labels[index])


def use_bf16(args: FinetuneArgs, device: torch.device) -> bool:
    """Whether to train and predict under bf16 autocast (fp32 master weights either way)."""
    if args.precision == "fp32":
        return False
    if args.precision == "bf16":
        return device.type in ("cuda", "cpu")
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def build_optimizer(
    model: torch.nn.Module, args: FinetuneArgs, is_head: Callable[[str], bool] | None = None
) -> torch.optim.Optimizer:
    """AdamW with up to four groups: (body, head) x (decayed matrices, undecayed biases and norms)."""
    lr, head_lr = args.learning_rate(), args.head_lr or args.learning_rate()
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in trainable_state(model).items():
        head = bool(is_head and is_head(name))
        groups.setdefault((head, param.ndim >= 2), []).append(param)
    param_groups = [
        {"params": params, "lr": head_lr if is_head_group else lr, "weight_decay": args.weight_decay if decay else 0.0}
        for (is_head_group, decay), params in sorted(groups.items(), key=lambda item: item[0])
    ]
    return torch.optim.AdamW(param_groups, lr=lr)


def build_scheduler(optimizer: torch.optim.Optimizer, args: FinetuneArgs, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = round(args.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            # (step + 1) rather than step: the first update should not be wasted at lr 0.
            return (step + 1) / (warmup + 1)
        done = (step - warmup) / max(1, total_steps - warmup)
        if args.scheduler == "constant":
            return 1.0
        if args.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))
        return max(0.0, 1.0 - done)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    model: torch.nn.Module,
    train_data: TokenizedData,
    fmt: TextFormat,
    args: FinetuneArgs,
    *,
    seed: int,
    device: torch.device,
    is_head: Callable[[str], bool] | None = None,
    eval_data: TokenizedData | None = None,
    workdir: Path | None = None,
    fingerprint: str = "",
    step_callback: StepCallback | None = None,
    show_progress_bar: bool | None = None,
    parallel: Any = None,
) -> dict[str, Any]:
    """Train the trainable parameters of ``model`` in place; returns statistics and the loss history.

    ``parallel``: this process's :class:`~embedensemble.finetune.parallel.DataParallel` part when
    several processes train one model (each takes its rows of every batch; same loss curve).
    """
    bf16 = use_bf16(args, device)
    loss_fn = MultiLabelLoss(pos_weight_vector(args, train_data.labels), args.lca_weight).to(device)
    lengths = np.asarray([len(ids) for ids in train_data.ids])
    batches_per_epoch = math.ceil(len(train_data) / args.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / args.grad_accum)
    total_steps = math.ceil(args.epochs * steps_per_epoch)
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)
    eval_every = args.eval_every_steps or steps_per_epoch

    optimizer = build_optimizer(model, args, is_head)
    scheduler = build_scheduler(optimizer, args, total_steps)
    torch.manual_seed(seed)  # drives dropout; restored from the checkpoint when resuming
    average = WeightAverage(model, args.ema_decay) if args.ema_decay is not None else None
    state, best_weights, resumed_from = LoopState(), None, None
    checkpoint = latest_checkpoint(workdir)
    if checkpoint is not None:
        restored = load_checkpoint(checkpoint, fingerprint=fingerprint, model=model, optimizer=optimizer, scheduler=scheduler)
        if restored is None:
            remove_checkpoints(workdir)
        else:
            state, best_weights, averaged = restored
            if average is not None and averaged is not None:
                average.load(averaged)
            resumed_from = state.step
            logger.info("resuming from %s (step %d of %d)", checkpoint, state.step, total_steps)

    plans: dict[int, list[np.ndarray]] = {}
    stats = {"examples": 0, "real_tokens": 0, "padded_tokens": 0}
    forward = parallel.wrap(model) if parallel is not None else model
    model.train()
    start = time.perf_counter()
    remaining = range(state.step, total_steps)
    for _ in progress(remaining, desc="fine-tuning", total=len(remaining), show_progress_bar=show_progress_bar):
        epoch, position = divmod(state.step, steps_per_epoch)
        if epoch not in plans:
            rng = np.random.default_rng([seed, epoch])  # the epoch's order depends on nothing else: resumable
            plans = {epoch: length_bucketed_batches(lengths, args.batch_size, rng, args.bucket_batches)}
        micro = plans[epoch][position * args.grad_accum : (position + 1) * args.grad_accum]
        n_step = sum(len(idx) for idx in micro)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for m, idx in enumerate(micro):
            n_rows, scale, sync = len(idx), 1.0, contextlib.nullcontext()
            if parallel is not None:  # this process's rows; DDP's gradient mean becomes the sum
                idx, n_rows = parallel.local_rows(idx)
                scale, sync = parallel.loss_scale, parallel.sync(forward, m == len(micro) - 1)
            batch = {k: v.to(device) for k, v in collate([train_data.ids[i] for i in idx], fmt).items()}
            target = torch.as_tensor(train_data.labels[idx], device=device)
            with sync, autocast(bf16, device):
                logits = forward(**batch)
            # Each micro-batch's mean is weighted by its share of the step, so grad_accum=2 with
            # batch 8 equals batch 16.
            loss = loss_fn(logits.float(), target) * (n_rows / n_step * scale)
            if not torch.isfinite(loss):
                # Stop before the step: a NaN update would poison every weight and the checkpoints after it.
                raise NumericalError(
                    f"fine-tuning diverged at step {state.step + 1}: the loss is {float(loss)} "
                    "(try a lower 'lr', 'max_grad_norm', or precision 'fp32'); the last checkpoint is kept"
                )
            loss.backward()  # under no_sync above, DDP keeps this micro-batch's gradients local
            step_loss += float(loss.detach()) / scale
            stats["examples"] += n_rows
            stats["real_tokens"] += int(batch["attention_mask"].sum())
            stats["padded_tokens"] += int(batch["attention_mask"].numel())
        if parallel is not None:
            step_loss = parallel.sum(step_loss)
        if args.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(trainable_state(model).values()), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        state.step += 1
        if average is not None:
            average.update(model, state.step)
        record = {"step": state.step, "loss": step_loss, "lr": float(scheduler.get_last_lr()[0]), "examples": n_step}
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # so the per-step clock below measures finished work
        record["seconds"] = time.perf_counter() - start
        if eval_data is not None and len(eval_data) and (state.step % eval_every == 0 or state.step == total_steps):
            best_weights = _evaluate(model, eval_data, fmt, args, loss_fn, device, bf16, state, record, best_weights)
        state.history.append(record)
        logger.debug("step %d/%d loss %.4f", state.step, total_steps, step_loss)
        main = parallel is None or parallel.is_main  # one process writes the checkpoints
        if main and workdir is not None and state.step % args.save_every_steps == 0 and state.step < total_steps:
            save_checkpoint(
                workdir,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                state=state,
                fingerprint=fingerprint,
                best_weights=best_weights,
                averaged_weights=None if average is None else average.shadow,
            )
        if step_callback is not None:
            step_callback(state.step, record)
        if state.stopped_early:
            logger.info(
                "early stopping at step %d (best held-out loss %.4f at step %s)", state.step, state.best_loss, state.best_step
            )
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if best_weights is not None and state.best_step != state.step:
        load_trainable_state(model, best_weights)
    if average is not None:  # args validation keeps this apart from best-step selection
        average.copy_to(model)
    model.eval()
    return {
        "steps": state.step,
        "total_steps": total_steps,
        "resumed_from_step": resumed_from,
        "train_seconds": seconds,
        "examples_per_second": stats["examples"] / seconds if seconds > 0 else float("nan"),
        "padding_fraction": 1.0 - stats["real_tokens"] / max(1, stats["padded_tokens"]),
        **stats,
        "best_step": state.best_step,
        "best_eval_loss": state.best_loss,
        "stopped_early": state.stopped_early,
        "history": state.history,
    }


def _evaluate(
    model: torch.nn.Module,
    eval_data: TokenizedData,
    fmt: TextFormat,
    args: FinetuneArgs,
    loss_fn: torch.nn.Module,
    device: torch.device,
    bf16: bool,
    state: LoopState,
    record: dict[str, float],
    best_weights: dict[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor] | None:
    """Held-out loss into ``record``; returns the (possibly updated) best trainable weights."""
    logits = predict_outputs(model, eval_data.ids, fmt, args.predict_batch_size, device, bf16)
    with torch.no_grad():
        eval_loss = float(loss_fn(torch.as_tensor(logits, device=device), torch.as_tensor(eval_data.labels, device=device)))
    model.train()
    record["eval_loss"] = eval_loss
    if state.best_loss is None or eval_loss < state.best_loss - 1e-6:
        state.best_loss, state.best_step, state.bad_evals = eval_loss, state.step, 0
        return copy_trainable_state(model)
    state.bad_evals += 1
    if args.early_stopping_patience is not None and state.bad_evals >= args.early_stopping_patience:
        state.stopped_early = True
    return best_weights


@torch.no_grad()
def predict_outputs(
    model: Callable[..., torch.Tensor],
    ids: Sequence[Sequence[int]],
    fmt: TextFormat,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    show_progress_bar: bool | None = False,
) -> np.ndarray:
    """Run ``model`` over length-sorted batches and return its float32 outputs in the input order."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    batches = length_sorted_batches([len(x) for x in ids], batch_size)
    out: np.ndarray | None = None
    for idx in progress(batches, desc="predicting", show_progress_bar=show_progress_bar):
        batch = {k: v.to(device) for k, v in collate([ids[i] for i in idx], fmt).items()}
        with autocast(bf16, device):
            values = model(**batch)
        values = values.float().cpu().numpy()
        if not np.isfinite(values).all():
            bad = [int(i) for i in idx[~np.isfinite(values).all(axis=1)]]
            raise NumericalError(f"the fine-tuned model produced NaN or infinite outputs for text(s) {bad[:10]}")
        if out is None:
            out = np.empty((len(ids), values.shape[1]), dtype=np.float32)
        out[idx] = values
    assert out is not None, "predict_outputs needs at least one text"
    return out
