"""Small fake models shared by the inference tests (no SAM3 needed)."""

from __future__ import annotations

import torch
from torch import nn


class ColourModel(nn.Module):
    """Fixed-input-size model whose logits depend only on each pixel's colour (1x1 conv).

    ``forward`` takes (B, 3, S, S) in [-1, 1] and returns (B, C, S, S); ``calls`` counts forward
    passes and ``windows`` the images (windows) seen.
    """

    def __init__(self, image_size: int = 32, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        self.image_size = image_size
        self.num_classes = num_classes
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(num_classes, 3, 1, 1, generator=g) * 4)
            self.conv.bias.copy_(torch.randn(num_classes, generator=g))
        self.calls = 0
        self.windows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (self.image_size, self.image_size), x.shape
        self.calls += 1
        self.windows += x.shape[0]
        return self.conv(x)

    def class_of(self, rgb: tuple[int, int, int]) -> int:
        """The class this model predicts for a pixel of colour ``rgb`` (uint8)."""
        x = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
        with torch.no_grad():
            return int(self.conv(x).argmax(1))


class PositionModel(ColourModel):
    """Logits depend on the position inside the window too (so window layout matters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        ramp = torch.linspace(-1, 1, x.shape[-1], device=x.device)
        return out + ramp.view(1, 1, 1, -1) * torch.arange(out.shape[1], device=x.device).view(1, -1, 1, 1)
