"""How one image becomes class probabilities at inference (:class:`TTAConfig`), torch-free.

The implementation is :mod:`goose_lib.infer.tta` (its docstring explains the modes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TTAMode = Literal["single", "multiscale"]
CanvasBase = Literal["stretch", "native"]
TTABlend = Literal["flat", "gaussian"]


@dataclass(frozen=True)
class TTAConfig:
    """How one image is turned into per-pixel class probabilities (see the module docstring)."""

    scales: tuple[float, ...] = (1.0,)  # canvas scales ("multiscale"); must be (1.0,) for "single"
    flip: bool = False  # also average the horizontally mirrored image
    overlap: float = 0.25  # fraction of a window shared with its neighbour, in [0, 1)
    window_batch: int = 4  # windows per forward pass (bounds memory)
    mode: TTAMode = "single"
    base: CanvasBase = "stretch"  # canvas at scale 1: "stretch" = S x S, "native" = H x W
    autocast: Literal["off", "bfloat16", "float16"] = "off"  # mixed-precision forward passes (GPU)
    blend: TTABlend = "flat"  # how overlapping window logits are averaged
    blend_sigma: float = 0.125  # gaussian: sigma as a fraction of the window side (inf = flat)

    def __post_init__(self) -> None:
        if not self.scales or any(not (s > 0) for s in self.scales):
            raise ValueError(f"scales must be a non-empty tuple of positive numbers, got {self.scales}")
        if self.mode == "single" and tuple(self.scales) != (1.0,):
            raise ValueError(f"mode='single' stretches the whole image once; scales {self.scales} "
                             f"need mode='multiscale'")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.window_batch < 1:
            raise ValueError(f"window_batch must be >= 1, got {self.window_batch}")
        if self.mode not in ("single", "multiscale"):
            raise ValueError(f"mode must be 'single' or 'multiscale', got {self.mode!r}")
        if self.autocast not in ("off", "bfloat16", "float16"):
            raise ValueError(f"autocast must be 'off', 'bfloat16' or 'float16', got {self.autocast!r}")
        if self.blend not in ("flat", "gaussian") or not self.blend_sigma > 0:
            raise ValueError(f"blend must be 'flat' or 'gaussian' and blend_sigma > 0, got {self.blend!r}, "
                             f"{self.blend_sigma}")
        if self.base not in ("stretch", "native"):
            raise ValueError(f"base must be 'stretch' or 'native', got {self.base!r}")

    @property
    def name(self) -> str:
        """Short label, e.g. ``single``, ``single+flip``, ``ms0.75-1-1.25+flip``."""
        core = "single" if self.mode == "single" else "ms" + "-".join(f"{s:g}" for s in self.scales)
        if self.mode == "multiscale" and self.base == "native":
            core += "@native"
        if self.mode == "multiscale" and self.blend == "gaussian":
            core += f"+gauss{self.blend_sigma:g}"
        return core + ("+flip" if self.flip else "")



DEFAULT_TTA = TTAConfig()  # single-scale, no flip
