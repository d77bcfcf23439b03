"""The training loop: ``train(TrainConfig(...), out_dir)``.

AdamW over the student's layer-wise-decayed parameter groups, linear warm-up then poly decay,
optional EMA of the weights, bf16 autocast on CUDA only, gradient accumulation, repeat-factor
sampling, periodic validation (composite mIoU), a JSON-lines metrics log, atomic checkpoints and
exact resume. Several processes: launch under ``torchrun`` (DDP; gloo on CPU, nccl on GPU); the
process group is created here from torchrun's environment when there is none.

Files in ``out_dir``: ``metrics.jsonl`` (one JSON object per line: ``{"step", "loss", "lr"}``
every ``log_interval`` steps, ``{"step", "val_composite", "val_miou", "val_category_miou"}`` after
each validation, ``{"step", "event", "message"}`` for notes such as disabled distillation),
``checkpoints/step_NNNNNNN/`` (see :mod:`goose_lib.models.checkpoint`), ``latest.json`` (the newest
complete checkpoint), with ``keep_best`` > 0 ``best/step_NNNNNNN/`` + ``best/best.json`` (the best
validated inference weights, EMA when on, for checkpoint ensembles). The single optimizer step lives in :mod:`goose_lib.train.step`.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from goose_lib.config import EvalProtocol, to_dict, validate
from goose_lib.data.augment import TrainTransform
from goose_lib.data.dataset import DataError, GooseDataset
from goose_lib.io import atomic_write_text
from goose_lib.metrics import ConfusionMatrix, compute_scores
from goose_lib.models.checkpoint import find_latest, load_run, save_best
from goose_lib.runtime import worker_init
from goose_lib.train import checkpoint as ckpt
from goose_lib.train.config import TrainConfig
from goose_lib.train.distill import make_distill
from goose_lib.train.distributed import all_gather_objects, setup_distributed
from goose_lib.train.losses import criterion_for
from goose_lib.train.sampling import (
    DrawDataset,
    DrawSampler,
    class_pixel_counts,
    class_presence,
    list_collate,
    repeat_factors,
    with_copy_paste,
)
from goose_lib.train.step import TrainingDiverged, make_state, train_step, weights_digest

LOG_FILE = "metrics.jsonl"
# Parameters a resumed run may change (they do not change what is computed, except ``steps``,
# which stretches the remaining poly schedule).
RESUME_MAY_CHANGE = frozenset({"steps", "device", "num_workers", "val_interval", "checkpoint_interval",
                               "keep_checkpoints", "keep_best", "log_interval"})


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0's view under torchrun)."""

    out_dir: Path
    checkpoint: Path  # the final checkpoint folder (goose_lib.models.checkpoint.load_student)
    step: int
    history: list[dict[str, Any]]  # the rows of metrics.jsonl
    val: dict[str, Any] | None  # the last validation's Scores.to_dict()
    notes: list[str] = field(default_factory=list)
    resumed_from: int | None = None  # step the run resumed at; None = fresh start
    wall_time: float = 0.0


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: torch.utils.data.DataLoader, ontology: Any, device: torch.device,
             *, protocol: EvalProtocol | None = None, progress: bool = False) -> dict[str, Any]:
    """Validation as notebook 04 / ``goose evaluate`` score mode ``single``: each image through
    :func:`goose_lib.infer.tta.predict` with the default single-scale :class:`TTAConfig` (the same
    function, so the composite training reports is the one evaluation reports), counted with
    :class:`ConfusionMatrix` and summed over every rank's share of ``loader`` (raw items)."""
    from goose_lib.infer.config import DEFAULT_TTA
    from goose_lib.infer.tta import predict

    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(ontology.num_classes)
    for batch in tqdm(loader, desc="validate", disable=not progress, leave=False):
        for item in batch:
            if item["label"] is None:
                raise ValueError(f"{item['sample'].image}: no label; validation needs a labelled split")
            cm.update(predict(model, item["image"], DEFAULT_TTA), item["label"], where=str(item["sample"].image))
    model.train(was_training)
    counts = torch.as_tensor(cm.counts, dtype=torch.int64)
    if dist.is_available() and dist.is_initialized():
        counts = counts.to(device)
        dist.all_reduce(counts)
    return compute_scores(counts.cpu().numpy(), ontology, protocol or EvalProtocol()).to_dict() | {"counts_total": int(counts.sum())}


def _infinite(loader: torch.utils.data.DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_log(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, default=float) + "\n")


def _require_labels(name: str, dataset: GooseDataset) -> None:
    """A split without ``labels/<split>/`` (the test split) cannot train or validate a model."""
    if dataset.samples and dataset.samples[0].labelids is None:
        raise DataError(f"{dataset.root / 'labels' / dataset.split}: {name} {dataset.split!r} has no labels "
                        "(no such folder); training and validation need a labelled split such as 'train' or 'val'")


def resume_world_size_message(out_dir: Path, saved: Any, now: int, cfg: TrainConfig) -> str:
    """Why a run is not resumed with another number of processes (and what to do instead)."""
    return (f"{out_dir}: the checkpoint was written by {saved} process(es), this launch has {now}. "
            f"Resuming would change the global batch ({cfg.batch_size} x {cfg.accumulation} accumulation x "
            "processes), the per-rank data streams and the saved RNG states, i.e. silently train a "
            f"different schedule, so it is refused. Relaunch with {saved} processes (torchrun "
            "--nnodes x --nproc_per_node), or start a new out_dir.")


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, progress: bool = True) -> TrainResult:
    """Train the student described by ``cfg``, writing logs and checkpoints under ``out_dir``.

    Resumes from ``out_dir/latest.json`` when present (parameters must match the saved run, except
    those in :data:`RESUME_MAY_CHANGE`). Under torchrun every rank calls this; rank 0 writes the files.
    """
    start_time = time.time()
    out_dir = Path(out_dir).resolve()
    ctx = setup_distributed(cfg.device)
    device = ctx.device
    notes: list[str] = []
    try:
        # the data first: a split without labels fails here, before the model is built or a step runs
        train_base = GooseDataset(cfg.data_root, cfg.train_split, config=cfg.data_config(cfg.train_limit))
        val_set = GooseDataset(cfg.data_root, cfg.val_split, config=cfg.data_config(cfg.val_limit))
        for name, dataset in (("train_split", train_base), ("val_split", val_set)):
            _require_labels(name, dataset)
        if ctx.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        state = make_state(cfg, device, ctx)
        # Same initial weights on every rank (seeded above), then a different stream per rank (dropout).
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, ctx.rank]).generate_state(1)[0]))
        image_size = int(state.model.image_size)
        distill, note = make_distill(cfg)
        if note:
            notes.append(note)
            warnings.warn(note, stacklevel=2)
        state.distill = distill

        factors, pixels = None, None
        if cfg.repeat_threshold > 0 or cfg.loss == "class_balanced" or cfg.copy_paste_classes:
            pixels = class_pixel_counts(train_base.samples, train_base.ontology.num_classes,
                                        progress=progress and ctx.rank == 0)
        if cfg.repeat_threshold > 0:
            factors = repeat_factors(class_presence(train_base.samples, 0, counts=pixels), cfg.repeat_threshold)
        state.criterion = criterion_for(cfg, train_base.ontology, None if pixels is None else pixels.sum(0))

        params = to_dict(cfg) | {"world_size": ctx.world_size, "image_size": image_size}
        log_path = out_dir / LOG_FILE
        resumed_from = None
        latest = find_latest(out_dir)
        if latest is not None:
            saved = load_run(latest)["params"]
            defaults = to_dict(TrainConfig())  # a parameter added since the run was saved had its default
            changed = {k for k in params if k not in RESUME_MAY_CHANGE and saved.get(k, defaults.get(k)) != params[k]}
            if "world_size" in changed:
                raise ValueError(resume_world_size_message(out_dir, saved.get("world_size"), ctx.world_size, cfg))
            if changed:
                raise ValueError(f"{out_dir}: holds a run with other parameters ({sorted(changed)}); "
                                 "use another out_dir or the same parameters to resume")
            state.step = ckpt.restore_training(latest, state.model, state.optimizer, state.scheduler,
                                               ema_model=state.eval_model if state.ema else None, rank=ctx.rank)
            resumed_from = state.step
            notes.append(f"resumed from {latest} (step {state.step})")
        history = [r for r in _read_log(log_path) if r.get("step", 0) <= state.step]
        if ctx.rank == 0:
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))
            for note in notes:
                _append_log(log_path, {"step": state.step, "event": "note", "message": note})

        pre = distill.attach if distill is not None else None
        transform, paste_note = with_copy_paste(TrainTransform(image_size, cfg.geometry(), cfg.photometric_config()),
                                                cfg, train_base, pixels, pre)
        if paste_note and ctx.rank == 0:
            notes.append(paste_note)
            _append_log(log_path, {"step": state.step, "event": "note", "message": paste_note})
        draws = DrawDataset(train_base, transform, seed=cfg.seed, pre=pre)
        sampler = DrawSampler(len(train_base), batch_size=cfg.batch_size, seed=cfg.seed, factors=factors,
                              rank=ctx.rank, world_size=ctx.world_size, start_micro=state.step * cfg.accumulation)
        loader = torch.utils.data.DataLoader(draws, batch_size=cfg.batch_size, sampler=sampler,
                                             num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                             worker_init_fn=worker_init,  # malloc settings (runtime)
                                             generator=torch.Generator().manual_seed(cfg.seed))  # not the global RNG
        val_idx = list(range(ctx.rank, len(val_set), ctx.world_size))
        val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, val_idx), batch_size=cfg.batch_size,
                                                 num_workers=cfg.num_workers, collate_fn=list_collate,
                                                 worker_init_fn=worker_init,
                                                 generator=torch.Generator().manual_seed(cfg.seed))

        last_val: dict[str, Any] | None = None
        last_ckpt = latest
        micro = _infinite(loader)
        bar = tqdm(total=cfg.steps, initial=state.step, desc="train", disable=not progress or ctx.rank != 0)
        state.model.train()
        loss = float("nan")
        while state.step < cfg.steps:
            batches = [next(micro) for _ in range(cfg.accumulation)]
            lr = max(g["lr"] for g in state.optimizer.param_groups)  # the head's (top) lr
            try:
                loss = train_step(state, batches)
            except TrainingDiverged as exc:
                where = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                if ctx.rank == 0:
                    _append_log(log_path, {"step": state.step + 1, "event": "diverged", "message": str(exc)})
                raise TrainingDiverged(f"{out_dir}: training stopped, {exc}; the weights were not updated "
                                       f"and no checkpoint was written for it ({where}). Lower lr or "
                                       "enable grad_clip.") from None
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            row = {"step": state.step, "loss": loss, "lr": lr}
            if ctx.rank == 0 and (state.step % cfg.log_interval == 0 or state.step == cfg.steps):
                _append_log(log_path, row)
                history.append(row)
            final = state.step == cfg.steps
            if final or (cfg.val_interval and state.step % cfg.val_interval == 0):
                last_val = evaluate(state.eval_model, val_loader, val_set.ontology, device)
                vrow = {"step": state.step, **{f"val_{k}": last_val[k] for k in ("composite", "miou", "category_miou")}}
                if ctx.rank == 0:
                    _append_log(log_path, vrow)
                    history.append(vrow)
                    if cfg.keep_best:
                        save_best(out_dir, state.step, state.eval_model, params=params,
                                       composite=last_val["composite"], keep=cfg.keep_best)
            if final or (cfg.checkpoint_interval and state.step % cfg.checkpoint_interval == 0):
                rngs = all_gather_objects(ckpt.rng_state(), device)
                sums = all_gather_objects(weights_digest(state.model), device) if ctx.world_size > 1 else None
                if ctx.rank == 0:
                    info = {"step": state.step, "rng": rngs, "loss": loss, "notes": notes,
                            "val": last_val, "distill_active": distill is not None, "rank_digests": sums}
                    last_ckpt = ckpt.save_training(out_dir, state.step, state.model, state.optimizer,
                                                   state.scheduler, ema_model=state.eval_model if state.ema else None,
                                                   params=params, info=info, keep=cfg.keep_checkpoints)
                ctx.barrier()
                last_ckpt = out_dir / "checkpoints" / f"step_{state.step:07d}"
        bar.close()
        if last_val is None:  # resumed at the end: nothing was trained, validate once for the result
            last_val = evaluate(state.eval_model, val_loader, val_set.ontology, device)
        final_ckpt = find_latest(out_dir) if ctx.rank == 0 else last_ckpt
        return TrainResult(out_dir=out_dir, checkpoint=Path(final_ckpt or last_ckpt), step=state.step,
                           history=_read_log(log_path) if ctx.rank == 0 else history, val=last_val,
                           notes=notes, resumed_from=resumed_from, wall_time=time.time() - start_time)
    finally:
        ctx.close()


def config_from_params(params: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a notebook's parameter dataclass / mapping (extra names ignored)."""
    values = to_dict(params) if not isinstance(params, dict) else dict(params)
    names = set(TrainConfig.__dataclass_fields__)
    return validate(TrainConfig, {k: v for k, v in values.items() if k in names})

