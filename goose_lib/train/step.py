"""One optimizer step and what it touches: the student, AdamW over its layer-decayed parameter
groups, the warm-up + poly schedule, the EMA of the weights, mixed precision and the NaN guard.
``goose_lib.train.loop`` drives these; ``benchmarks/bench_train_step.py`` times ``train_step``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from goose_lib.models.student import build_student
from goose_lib.train import losses
from goose_lib.train.config import TrainConfig
from goose_lib.train.distill import DistillSetup
from goose_lib.train.distributed import DistContext, all_reduce_mean


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of each group's base lr for optimizer step ``step`` (0-based): linear warm-up
    over ``warmup_steps``, then ``(1 - progress) ** poly_power`` down to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 - progress) ** cfg.poly_power


class EMA:
    """Exponential moving average of a model's trainable parameters (buffers copied)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs = [(e, p) for e, p in zip(self.model.parameters(), model.parameters()) if p.requires_grad]
        self._buffers = list(zip(self.model.buffers(), model.buffers()))

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_([e for e, _ in self._pairs], [p.detach() for _, p in self._pairs], 1 - self.decay)
        for e, b in self._buffers:
            e.copy_(b)


@dataclass
class TrainState:
    """The mutable parts of a run that one optimizer step touches."""

    cfg: TrainConfig
    model: torch.nn.Module  # the student
    net: torch.nn.Module  # what is called: the student, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    ema: EMA | None = None
    distill: DistillSetup | None = None
    criterion: losses.Criterion | None = None  # None = plain cross-entropy (set by the loop from cfg)
    step: int = 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.model if self.ema is not None else self.model


def make_state(cfg: TrainConfig, device: torch.device, ctx: DistContext | None = None) -> TrainState:
    """Build the student, optimizer, scheduler and EMA for ``cfg`` (seeded by ``cfg.seed``)."""
    from goose_lib.models.student import param_groups

    torch.manual_seed(cfg.seed)
    model = build_student(cfg.student_config(), device=device)
    groups = param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))  # one kernel for all parameters
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    net: torch.nn.Module = model
    if ctx is not None and ctx.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    return TrainState(cfg, model, net, optimizer, scheduler, device, ema)


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter's bytes (ranks of a DDP run must agree bit for bit)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def compute_loss(state: TrainState, batch: dict[str, Any]) -> torch.Tensor:
    """Supervised loss (+ distillation when enabled) of one micro-batch already on the device."""
    label = batch["label"]
    d = state.distill
    if d is not None and d.mode == "replace":
        label = d.replace(batch)
    with state.autocast():
        logits = state.net(batch["image"])
    if state.criterion is not None:
        loss = state.criterion(logits, label)
    else:
        loss = losses.segmentation_loss(logits, label, label_smoothing=state.cfg.label_smoothing)
    if d is not None and d.mode == "soft":
        loss = loss + d.weight * d.loss(logits.float(), batch)
    return loss


def train_step(state: TrainState, micro_batches: list[dict[str, Any]]) -> float:
    """One optimizer step over ``accumulation`` micro-batches; returns the mean loss (all ranks).

    A non-finite loss raises :class:`TrainingDiverged` *before* the weights are updated.
    """
    total = torch.zeros((), device=state.device)
    n = len(micro_batches)
    for i, batch in enumerate(micro_batches):
        sync = i == n - 1 or not isinstance(state.net, torch.nn.parallel.DistributedDataParallel)
        with contextlib.nullcontext() if sync else state.net.no_sync():
            loss = compute_loss(state, _to(batch, state.device))
            (loss / n).backward()
        total += loss.detach()
    value = all_reduce_mean(total / n, state.device)
    if not math.isfinite(value):
        state.optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(f"loss is {value} at step {state.step + 1}")
    if state.cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in state.model.parameters() if p.requires_grad],
                                       state.cfg.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update()
    state.step += 1
    return value
