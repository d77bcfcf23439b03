"""The teacher's parameter sets, torch-free (notebook parameters and CLI options are built from
them without importing the model stack): which teacher makes the masks (:data:`TEACHER_KINDS`),
how prompt boxes are made (:class:`BoxParams`), how SAM3 turns boxes into teacher maps
(:class:`TeacherConfig`), the optional adaptation of the teacher's decoder (:class:`AdaptConfig`)
and which classes are distilled (:class:`SelectionRule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

TeacherKind = Literal["sam3", "oracle"]
TEACHER_KINDS: tuple[str, ...] = ("sam3", "oracle")  # SAM3's box-prompted masks | exact labels (teacher.oracle)


@dataclass(frozen=True)
class BoxParams:
    """How prompt boxes are made from a label (or predicted) map."""

    min_area: int = 16  # objects (instances / components) with fewer pixels get no box
    margin: float = 0.0  # widen each side by this fraction of the box's width / height
    margin_px: int = 0  # ... plus this many pixels (then clipped to the image)
    connectivity: Literal[1, 2] = 2  # 1 = 4-neighbourhood, 2 = 8-neighbourhood components
    use_instances: bool = True  # False: components only, even where instance ids exist
    skip_classes: tuple[int, ...] = (0,)  # classes never boxed (0 = undefined / void)
    max_boxes: int | None = None  # keep the largest N objects per image; None = all

    def __post_init__(self) -> None:
        if self.min_area < 1:
            raise ValueError(f"min_area must be >= 1, got {self.min_area}")
        if self.margin < 0 or self.margin_px < 0:
            raise ValueError("margin and margin_px must be >= 0")
        if self.max_boxes is not None and self.max_boxes < 1:
            raise ValueError(f"max_boxes must be >= 1 or None, got {self.max_boxes}")


@dataclass(frozen=True)
class TeacherConfig:
    """How SAM3 turns boxes into a teacher map (fields marked * do not change the result)."""

    multimask: bool = True  # 3 candidates per box, keep the highest predicted IoU; False: 1 mask
    mask_threshold: float = 0.5  # teacher_cls needs P >= this
    tie_margin: float = 0.05  # "max_prob": two classes above threshold within this of each other -> none
    overlap: Literal["smallest_box", "max_prob"] = "smallest_box"  # who wins where boxes overlap
    no_memory_level: Literal["original", "transformers"] = "original"  # see module doc
    box_batch: int = 64  # * boxes decoded per call (per image)
    image_batch: int = 1  # * images encoded per call
    autocast: Literal["off", "bfloat16"] = "off"  # bf16 autocast for encoder + decoder (GPU); "off" = fp32

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")
        if self.tie_margin < 0:
            raise ValueError(f"tie_margin must be >= 0, got {self.tie_margin}")
        if self.box_batch < 1 or self.image_batch < 1:
            raise ValueError("box_batch and image_batch must be >= 1")
        if self.overlap not in ("smallest_box", "max_prob"):
            raise ValueError(f"overlap must be 'smallest_box' or 'max_prob', got {self.overlap!r}")
        if self.no_memory_level not in ("original", "transformers"):
            raise ValueError(f"no_memory_level must be 'original' or 'transformers', got {self.no_memory_level!r}")
        if self.autocast not in ("off", "bfloat16"):
            raise ValueError(f"autocast must be 'off' or 'bfloat16', got {self.autocast!r}")

    def result_key(self) -> dict[str, Any]:
        """The fields that change teacher outputs (for cache keys; ``autocast`` only when on, so
        fp32 caches keep their keys)."""
        key: dict[str, Any] = {"multimask": self.multimask, "mask_threshold": self.mask_threshold,
                               "tie_margin": self.tie_margin, "no_memory_level": self.no_memory_level,
                               "overlap": self.overlap}
        if self.autocast != "off":
            key["autocast"] = self.autocast
        return key


@dataclass(frozen=True)
class AdaptConfig:
    """Teacher adaptation parameters (``steps = 0`` disables it)."""

    steps: int = 0  # optimiser steps; 0 = no adaptation
    lr: float = 3e-3
    weight_decay: float = 0.0
    images_per_step: int = 2
    boxes_per_image: int = 8  # random subset of an image's boxes per step
    limit: int | None = None  # first N training samples; None = all
    seed: int = 0
    no_memory_level: str = "original"  # as TeacherConfig.no_memory_level (embeddings used for training)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.images_per_step < 1 or self.boxes_per_image < 1 or self.lr <= 0:
            raise ValueError("steps >= 0, images_per_step >= 1, boxes_per_image >= 1 and lr > 0 are required")


@dataclass(frozen=True)
class SelectionRule:
    """Which classes are distilled: those whose gain (see ``criterion``) is > margin, with enough support."""

    criterion: Literal["distill", "box"] = "distill"  # gain judged: simulated composite change | in-box IoU
    margin: float = 0.0  # the gain must be MORE than this (composite / IoU fraction, not %)
    min_pixels: int = 100  # support: ground-truth pixels of the class inside its boxes
    min_images: int = 1  # support: images with at least one box of the class
    max_classes: int | None = None  # keep the N largest gains; None = all that pass
    exclude: tuple[int, ...] = (0,)  # never distilled (0 = undefined)

    def __post_init__(self) -> None:
        if self.criterion not in ("distill", "box"):
            raise ValueError(f"criterion must be 'distill' or 'box', got {self.criterion!r}")
        if self.min_pixels < 0 or self.min_images < 0:
            raise ValueError("min_pixels and min_images must be >= 0")
        if self.max_classes is not None and self.max_classes < 0:
            raise ValueError(f"max_classes must be >= 0 or None, got {self.max_classes}")



DEFAULT_BOXES = BoxParams()
DEFAULT_TEACHER = TeacherConfig()
