"""Segmentation decoders over the SAM3 neck's multi-scale features.

Both take the neck's ``fpn_hidden_states``: a list of 4 maps, finest first, each
(B, in_channels, h_i, w_i) at 4x, 2x, 1x and 0.5x the ViT token grid g (for a 1008 input:
288, 144, 72, 36), and return class logits (B, num_classes, 4g, 4g) at the finest level; the
student upsamples them to the input resolution.

- :class:`FPNDecoder` (default, light): 1x1 laterals, top-down additions, one 3x3 conv per
  level, all levels summed at the finest resolution, dropout, 1x1 classifier.
- :class:`UPerNetDecoder` (ablation, heavier): UPerNet (Xiao et al. 2018) - a pyramid pooling
  module on the coarsest map, top-down FPN, 3x3 convs, concatenation of all levels, 3x3 fusion.

Normalisation is GroupNorm (batch-size independent; BatchNorm is unreliable at 1-2 images per GPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels."""
    return nn.GroupNorm(max(1, math.gcd(32, channels // 4)), channels)


class ConvNormAct(nn.Sequential):
    """k x k conv (no bias) -> GroupNorm -> ReLU; spatial size kept."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         _group_norm(out_channels), nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class FPNDecoder(nn.Module):
    """Light FPN head: features (finest first) -> logits (B, num_classes, h_0, w_0)."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 128, num_levels: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(in_channels, channels, 1) for _ in range(num_levels))
        self.smooth = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in range(num_levels))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.lateral):
            raise ValueError(f"FPNDecoder: expected {len(self.lateral)} feature maps, got {len(features)}")
        lat = [conv(f) for conv, f in zip(self.lateral, features)]
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + _resize(lat[i + 1], lat[i].shape[-2:])
        size = lat[0].shape[-2:]
        fused = sum(_resize(conv(x), size) for conv, x in zip(self.smooth, lat))
        return self.classifier(self.dropout(fused))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: average pools at ``scales``, 1x1 conv + ReLU, upsampled, concatenated
    with the input -> (B, in_channels + len(scales) * channels, h, w)."""

    def __init__(self, in_channels: int, channels: int, scales: Sequence[int]) -> None:
        super().__init__()
        # No norm inside the branches: a 1x1 pooled map has no spatial statistics to normalise.
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
            for s in scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x] + [_resize(b(x), x.shape[-2:]) for b in self.branches], dim=1)


class UPerNetDecoder(nn.Module):
    """UPerNet head: PPM on the coarsest map + FPN fusion -> logits (B, num_classes, h_0, w_0)."""

    def __init__(self, in_channels: int, num_classes: int, *, channels: int = 128, num_levels: int = 4,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1) -> None:
        super().__init__()
        self.ppm = PyramidPooling(in_channels, channels, pool_scales)
        self.ppm_bottleneck = ConvNormAct(in_channels + len(pool_scales) * channels, channels, 3)
        self.lateral = nn.ModuleList(ConvNormAct(in_channels, channels, 1) for _ in range(num_levels - 1))
        self.fpn_convs = nn.ModuleList(ConvNormAct(channels, channels, 3) for _ in range(num_levels - 1))
        self.fuse = ConvNormAct(num_levels * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.lateral) + 1:
            raise ValueError(f"UPerNetDecoder: expected {len(self.lateral) + 1} feature maps, got {len(features)}")
        lat = [conv(f) for conv, f in zip(self.lateral, features[:-1])]
        lat.append(self.ppm_bottleneck(self.ppm(features[-1])))
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + _resize(lat[i + 1], lat[i].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, lat[:-1])] + [lat[-1]]
        size = outs[0].shape[-2:]
        fused = self.fuse(torch.cat([_resize(o, size) for o in outs], dim=1))
        return self.classifier(self.dropout(fused))


DECODERS = {"fpn": FPNDecoder, "upernet": UPerNetDecoder}


def build_decoder(name: str, in_channels: int, num_classes: int, *, channels: int, dropout: float,
                  pool_scales: Sequence[int] = (1, 2, 3, 6), num_levels: int = 4) -> nn.Module:
    """The decoder called ``name`` ("fpn" | "upernet")."""
    if name not in DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {sorted(DECODERS)}")
    extra = {"pool_scales": pool_scales} if name == "upernet" else {}
    return DECODERS[name](in_channels, num_classes, channels=channels, num_levels=num_levels, dropout=dropout,
                          **extra)
