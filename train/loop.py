"""The training loop: seeding, the device, the optimizer, the learning-rate schedule, the
step loop (:func:`run_steps`, shared by the specialists and the backbone pretraining) and
the epoch loop that keeps a specialist's best dev epoch (:func:`train_task`)."""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .batching import bucketed_batches, to_device
from .config import FitConfig
from .models import add_dropout
from .tasks.base import Task

Batch = dict[str, torch.Tensor]
Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    """The default log: one line on stderr, flushed."""
    print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, config: FitConfig,
                   peak_lr: float | None = None) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices only; each group records its ``peak_lr`` (default
    ``config.lr``): a fresh head on a pretrained encoder (``model.head_parameters()``)
    peaks at ``config.lr``."""
    peak_lr = config.lr if peak_lr is None else peak_lr
    head = getattr(model, "head_parameters", None)
    fresh = {id(p) for p in head()} if head is not None else set()
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for param in model.parameters():
        if id(param) in seen or not param.requires_grad:
            continue
        seen.add(id(param))
        groups.setdefault((param.ndim >= 2, id(param) in fresh), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": config.weight_decay if decay else 0.0,
          "peak_lr": config.lr if is_head else peak_lr}
         for (decay, is_head), params in groups.items()],
        lr=peak_lr, betas=(0.9, 0.98), eps=1e-8,
    )


def lr_factor(step: int, total: int, warmup: int, progress_time: float, floor: float) -> float:
    """Linear warmup, then cosine decay to ``floor`` over max(step, time) progress."""
    if step < warmup:
        return (step + 1) / warmup
    progress = max((step - warmup) / max(1, total - warmup), progress_time)
    progress = min(1.0, max(0.0, progress))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Schedule:
    """The learning-rate schedule, time budget and gradient clipping of one run."""

    total: int  # steps the cosine decay spans
    warmup: int  # steps of linear warmup
    floor: float  # the decay's end, as a fraction of each group's peak
    budget: float  # seconds from ``start`` (0 = none)
    start: float  # ``time.perf_counter()`` at the start of the run
    clip: float  # gradient norm clip

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start


def run_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              batches: Iterable[list[int]], batch_of: Callable[[list[int]], Batch],
              loss_of: Callable[[torch.nn.Module, Batch], torch.Tensor],
              schedule: Schedule, step: int) -> tuple[list[float], int, bool]:
    """The training loop over one epoch's ``batches`` (item indices; ``batch_of`` makes
    each batch's tensors, ``loss_of`` its mean loss): set each group's learning rate from
    its ``peak_lr`` and the schedule, step, clip. Stops early when the time budget is
    spent. Returns the step losses, the step count after the epoch and whether the time
    ran out."""
    losses: list[float] = []
    for idx in batches:
        elapsed = schedule.elapsed()
        if schedule.budget > 0 and elapsed >= schedule.budget:
            return losses, step, True
        factor = lr_factor(step, schedule.total, schedule.warmup,
                           elapsed / schedule.budget if schedule.budget > 0 else 0.0,
                           schedule.floor)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
        loss = loss_of(model, batch_of(idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.clip)
        optimizer.step()
        losses.append(loss.item())
        step += 1
    return losses, step, False


@dataclass
class TrainResult:
    """What one specialist's training produced."""

    model: torch.nn.Module
    history: list[dict[str, Any]]
    best_epoch: int
    best: dict[str, float]
    seconds: float
    steps: int


def train_task(task: Task, model: torch.nn.Module, config: FitConfig, device: torch.device,
               log: Log = log_stderr, batch_size: int | None = None,
               lr: float | None = None) -> TrainResult:
    """Train one specialist; keep the weights of the best dev epoch (``lr``: peak learning
    rate, default ``config.lr``)."""
    batch_size = batch_size or config.batch_size
    peak_lr = lr if lr is not None else config.lr
    model.to(device)
    decoder = hasattr(model, "model")  # the residual dropout hooks are Qwen2's
    hooks = add_dropout(model, config.dropout) if config.dropout > 0 and decoder else []
    optimizer = make_optimizer(model, config, peak_lr)
    rng = random.Random(config.seed)
    lengths = [len(x) for x in task.train]
    steps_per_epoch = math.ceil(len(task.train) / batch_size)
    total = max(1, steps_per_epoch * config.epochs)
    warmup = min(config.warmup_steps, max(1, total // 20))
    start = time.perf_counter()
    schedule = Schedule(total, warmup, config.min_lr_ratio, config.minutes * 60.0, start,
                        config.clip)
    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best = -1, {task.metric: -1.0}
    step = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        batches = bucketed_batches(lengths, batch_size, config.bucket_chunk, rng)
        losses, step, out_of_time = run_steps(
            model, optimizer, batches,
            lambda idx: to_device(task.collate([task.train[i] for i in idx]), device),
            task.loss, schedule, step)
        if not losses:
            break
        dev = task.evaluate(model, device, batch_size)
        record = {
            "epoch": epoch,
            "steps": step,
            "partial": out_of_time,
            "train_loss": float(np.mean(losses)),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - epoch_start, 1),
            "elapsed_seconds": round(time.perf_counter() - start, 1),
            "dev": dev,
        }
        history.append(record)
        figures = " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in dev.items())
        log(f"[{task.name}] epoch {epoch}{' (partial)' if out_of_time else ''} steps {step} "
            f"loss {record['train_loss']:.4f} dev {figures} ({record['elapsed_seconds']:.0f} s)")
        if dev[task.metric] > best[task.metric]:
            best, best_epoch = dev, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in
                                        model.state_dict().items()})
        if out_of_time:
            break
        if config.patience and epoch - best_epoch >= config.patience:
            log(f"[{task.name}] no better dev {task.metric} for {config.patience} epochs: "
                "stopping")
            break
    for hook in hooks:
        hook.remove()
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(model, history, best_epoch, best, time.perf_counter() - start, step)
