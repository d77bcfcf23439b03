"""The student's architecture and what of it is trained (:class:`StudentConfig`), torch-free.

The model itself is :mod:`goose_lib.models.student`.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from goose_lib.config import input_param
from goose_lib.paths import EMBEDDED

DecoderName = Literal["fpn", "upernet"]


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """The student architecture and what of it is trained."""

    sam3_checkpoint: str = input_param("sam3_checkpoint", EMBEDDED)  # SAM3 folder (facebook/sam3 layout or save_pretrained); "embedded" = tiny
    decoder: DecoderName = "fpn"  # "fpn" (light, the method's) | "upernet" (heavier ablation)
    frozen_layers: int = 4  # lower ViT layers frozen; the tiny foundation: 4 of 6 (ablations/frozen_layers.py, held-out train), the paper: 24 of 32; patch/pos embeddings always
    num_classes: int = 64  # output classes (GOOSE: 64)
    decoder_channels: int = 32  # width of the decoder (sized for the tiny embedded encoder; real SAM3: 256)
    dropout: float = 0.1  # dropout before the classifier
    grad_checkpointing: bool = False  # recompute each trainable ViT layer in backward (less memory)
    image_size: int | None = None  # required input size; None = the checkpoint's (error if they differ)
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)  # UPerNet pyramid pooling scales

    def __post_init__(self) -> None:
        if self.frozen_layers < 0:
            raise ValueError(f"frozen_layers must be >= 0, got {self.frozen_layers}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.decoder_channels < 8 or self.decoder_channels % 4:
            raise ValueError(f"decoder_channels must be a multiple of 4 and >= 8, got {self.decoder_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be positive or None, got {self.image_size}")
        if not self.pool_scales or min(self.pool_scales) < 1:
            raise ValueError(f"pool_scales must be positive integers, got {self.pool_scales}")

