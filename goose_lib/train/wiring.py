"""Glue between :class:`goose_lib.train.loop.TrainConfig` and the parts it drives: the student
(``models.student``) and distillation (``train.distill``, owned by the teacher part)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from goose_lib.config import validate


def student_config(cfg: Any) -> Any:
    """The :class:`~goose_lib.models.student.StudentConfig` of a TrainConfig."""
    from goose_lib.models.student import StudentConfig

    return validate(StudentConfig, {
        "checkpoint": cfg.sam3_checkpoint, "decoder": cfg.decoder, "frozen_layers": cfg.frozen_layers,
        "decoder_channels": cfg.decoder_channels, "dropout": cfg.dropout,
        "grad_checkpointing": cfg.grad_checkpointing,
    })


def build_student_for(cfg: Any, device: torch.device) -> torch.nn.Module:
    """The student of a TrainConfig, encoder weights loaded strictly from ``cfg.sam3_checkpoint``."""
    from goose_lib.models.student import build_student

    return build_student(student_config(cfg), device=device)


@dataclass
class DistillSetup:
    """Active distillation: what to attach before augmentation and how to use it in the loss."""

    mode: str  # "soft" | "replace"
    weight: float
    classes: tuple[int, ...]
    attach: Any  # TeacherTargets: item -> item with teacher_cls / teacher_prob / teacher_region

    def _maps(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        missing = [k for k in ("teacher_cls", "teacher_prob", "teacher_region") if k not in batch]
        if missing:
            raise KeyError(f"batch lacks teacher maps {missing}; TeacherTargets must run before augmentation")
        return batch["teacher_cls"], batch["teacher_prob"], batch["teacher_region"]

    def loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        from goose_lib.train.distill import distill_loss

        return distill_loss(logits, *self._maps(batch), self.classes, mode="soft")

    def replace(self, batch: dict[str, Any]) -> torch.Tensor:
        from goose_lib.train.distill import replace_labels

        return replace_labels(batch["label"], *self._maps(batch), self.classes)


def make_distill(cfg: Any) -> tuple[DistillSetup | None, str | None]:
    """``(setup or None, note)``: None when distillation is off or has no classes; ``note`` says
    why training runs without it when it was asked for (for the warning and the log)."""
    if cfg.distill_mode == "off":
        return None, None
    from goose_lib.train.distill import TeacherTargets, resolve_distill

    dcfg, message = resolve_distill(cfg.distill_mode, cfg.distill_weight, cfg.distill_classes,
                                    cfg.distill_selection or None, cfg.teacher_cache or None)
    if not dcfg.active:
        return None, message
    return DistillSetup(dcfg.mode, dcfg.weight, dcfg.classes, TeacherTargets(dcfg.cache_dir)), None


def with_copy_paste(transform: Any, cfg: Any, base: Any, pixels: Any, pre: Any = None) -> tuple[Any, str | None]:
    """``(transform, note)``: ``transform`` wrapped in rare-class copy-paste when ``cfg.copy_paste_classes``
    is set (sources: the training samples holding any of them, from ``pixels`` (N, K) counts), and
    the note for the training log saying what is pasted (or why nothing is)."""
    if not cfg.copy_paste_classes:
        return transform, None
    from goose_lib.data.copy_paste import CopyPasteConfig, CopyPasteTransform

    classes = tuple(int(c) for c in cfg.copy_paste_classes)
    pcfg = CopyPasteConfig(classes=classes, prob=cfg.copy_paste_prob, count=cfg.copy_paste_count)
    held = [c for c in classes if c < pixels.shape[1]]
    sources = [int(i) for i in (pixels[:, held] > 0).any(1).nonzero()[0]] if held else []
    if not sources:
        return transform, f"copy-paste: none of classes {list(classes)} occurs in the training split -> off"
    wrapped = CopyPasteTransform(transform, _Loader(base, pre), sources, pcfg)
    return wrapped, (f"copy-paste: classes {list(classes)} from {len(sources)} source images, "
                     f"prob {pcfg.prob}, {pcfg.count} object(s) per image")


class _Loader:
    """``load(i)`` = ``pre(base[i])`` (picklable for DataLoader workers)."""

    def __init__(self, base: Any, pre: Any) -> None:
        self.base, self.pre = base, pre

    def __call__(self, i: int) -> Any:
        item = self.base[i]
        return self.pre(item) if self.pre is not None else item
