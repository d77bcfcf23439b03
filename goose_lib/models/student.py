"""The student: SAM3's image encoder (ViT + FPN neck) with a segmentation decoder, partial freezing,
optional per-layer gradient checkpointing and layer-wise learning-rate decay groups.

Input: float (B, 3, S, S) in [-1, 1] (see :func:`goose_lib.models.sam3.preprocess`), S the
checkpoint's image size. Output: class logits (B, num_classes, S, S).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from goose_lib.config import ParameterError
from goose_lib.models.config import StudentConfig
from goose_lib.models.decoders import build_decoder


class Student(nn.Module):
    """SAM3 encoder (``encoder``: a transformers ``Sam3VisionModel``) + decoder (``decoder``).

    Frozen (``requires_grad=False``, kept in eval mode, run under ``no_grad``): the patch and
    position embeddings always; with ``frozen_layers = N > 0`` also the pre-norm
    ``backbone.layer_norm`` and ViT layers 0..N-1. The neck and decoder are always trained.
    """

    def __init__(self, config: StudentConfig, encoder: nn.Module, *, source: str = "") -> None:
        super().__init__()
        vc = encoder.config
        self.config = config
        self.vision_config = vc
        self.image_size = int(vc.image_size)
        self.num_classes = config.num_classes
        self.patch_size = int(vc.backbone_config.patch_size)
        self.num_layers = int(vc.backbone_config.num_hidden_layers)
        if config.frozen_layers > self.num_layers:
            where = f" ({source})" if source else ""
            raise ParameterError(f"StudentConfig.frozen_layers={config.frozen_layers} exceeds the encoder's "
                                 f"{self.num_layers} layers{where}")
        if config.image_size is not None and config.image_size != self.image_size:
            raise ParameterError(f"StudentConfig.image_size={config.image_size} but the encoder{' ' + source if source else ''} "
                                 f"takes {self.image_size}x{self.image_size} input")
        self.encoder = encoder
        self.decoder = build_decoder(config.decoder, int(vc.fpn_hidden_size), config.num_classes,
                                     channels=config.decoder_channels, dropout=config.dropout,
                                     pool_scales=config.pool_scales, num_levels=len(vc.scale_factors))
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def _frozen_modules(self) -> list[nn.Module]:
        bb = self.encoder.backbone
        k = self.config.frozen_layers
        return [bb.embeddings] + ([bb.layer_norm] + list(bb.layers[:k]) if k else [])

    def train(self, mode: bool = True) -> Student:
        """As ``nn.Module.train``, but frozen parts stay in eval mode (their dropout stays off)."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, S, S) -> the neck's maps, finest first: (B, fpn_hidden, 4g, 4g) ... (B, fpn_hidden, g/2, g/2)."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"Student: expected input (B, 3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}; use goose_lib.models.sam3.preprocess(images, {self.image_size})")
        bb = self.encoder.backbone
        k = self.config.frozen_layers
        g = self.image_size // self.patch_size
        frozen_stem = contextlib.nullcontext() if k == 0 else torch.no_grad()
        with frozen_stem:
            h = bb.embeddings(x).view(x.shape[0], g, g, -1)
            h = bb.layer_norm(h)
            for layer in bb.layers[:k]:
                h = layer(h)
        use_ckpt = self.config.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in bb.layers[k:]:
            h = checkpoint(layer, h, use_reentrant=False) if use_ckpt else layer(h)
        h = h.permute(0, 3, 1, 2)
        # The FPN layers directly: the neck's forward also builds position encodings we don't use.
        return [fpn(h) for fpn in self.encoder.neck.fpn_layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float (B, 3, S, S) in [-1, 1] -> logits (B, num_classes, S, S)."""
        logits = self.decoder(self.features(x))
        return F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False)


def _vision_config(value: Any) -> Any:
    from transformers import Sam3VisionConfig

    if isinstance(value, Sam3VisionConfig):
        return value
    if isinstance(value, dict):
        return Sam3VisionConfig.from_dict(value)
    raise TypeError(f"vision_config must be a Sam3VisionConfig or its dict, got {type(value).__name__}")


def build_student(cfg: StudentConfig, *, device: str | torch.device = "cpu",
                  vision_config: Any = None) -> Student:
    """The student on ``device`` (float32, train mode).

    ``vision_config`` None: the encoder is loaded strictly from ``cfg.sam3_checkpoint``. Given (a
    ``Sam3VisionConfig`` or its ``to_dict()``): architecture only, random weights - for loading a
    saved student checkpoint without the SAM3 folder.
    """
    from transformers import Sam3VisionModel

    from goose_lib.models.sam3 import load_vision_encoder

    if vision_config is None:
        encoder = load_vision_encoder(cfg.sam3_checkpoint, image_size=cfg.image_size)
        source = os.fspath(cfg.sam3_checkpoint)
    else:
        encoder = Sam3VisionModel(_vision_config(vision_config))
        source = "given vision_config"
    return Student(cfg, encoder, source=source).to(device).train()


def param_groups(student: Student, *, lr: float, weight_decay: float,
                 layer_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise learning-rate decay.

    The top ViT layer gets ``lr``, each layer below it ``layer_decay`` times the one above; the
    backbone stem (pre-norm, when trainable) one step below layer 0; neck and decoder get ``lr``.
    Norm weights, biases, 1-d parameters and position embeddings get no weight decay. Frozen
    parameters are left out. Each group carries ``name``, ``lr``, ``weight_decay``, ``lr_scale``.
    """
    if lr <= 0 or weight_decay < 0 or not 0 < layer_decay <= 1:
        raise ParameterError(f"param_groups: need lr > 0, weight_decay >= 0, 0 < layer_decay <= 1; got "
                             f"lr={lr}, weight_decay={weight_decay}, layer_decay={layer_decay}")
    n = student.num_layers
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("encoder.backbone.layers."):
            depth = n - 1 - int(name.split(".")[3])
            part = f"layer{n - 1 - depth}"
        elif name.startswith("encoder.backbone."):
            depth, part = n, "stem"
        else:
            depth, part = 0, "head"
        no_decay = p.ndim <= 1 or name.endswith(".bias") or "position_embedding" in name
        key = (part, no_decay)
        if key not in groups:
            scale = layer_decay ** depth
            groups[key] = {"params": [], "name": f"{part}/{'no_decay' if no_decay else 'decay'}",
                           "lr": lr * scale, "lr_scale": scale, "weight_decay": 0.0 if no_decay else weight_decay}
        groups[key]["params"].append(p)
    return list(groups.values())


def count_parameters(module: nn.Module) -> dict[str, int]:
    """{"total": ..., "trainable": ...} parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    return {"total": total, "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad)}
