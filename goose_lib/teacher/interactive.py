"""Interactive box prompting of the SAM3 teacher: one encode per image, one decode per box edit.

:class:`BoxPrompter` keeps the current image's embeddings (``Teacher.encode`` runs once per
image key) and the mask logits of every box it has decoded for that image, keyed by the box's
coordinates: an edit decodes only the boxes that are new or moved, in one ``Teacher.decode``
call, and nothing at all when only a class changed or a box was deleted. The teacher maps are
composed by :func:`goose_lib.teacher.prompt.compose`, the rule the teacher cache uses.

:func:`box_ious` scores each box's own mask (its probability >= the teacher's threshold,
inside the box) against the label and a student prediction, inside the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from goose_lib.ontology import IGNORE_INDEX
from goose_lib.teacher.boxes import BoxSet, box_pixels
from goose_lib.teacher.prompt import Teacher, TeacherMaps, box_probability, compose

BoxKey = tuple[float, float, float, float]


def _box_key(xyxy: np.ndarray) -> BoxKey:
    return tuple(round(float(v), 2) for v in xyxy)  # type: ignore[return-value]


@dataclass(frozen=True)
class BoxMasks:
    """The teacher's answer for the current boxes of one image.

    ``maps``: the composed teacher maps (as cached by ``teacher.cache``); ``pixels`` (N, 4)
    integer box ranges (``boxes.box_pixels``); ``probs``: per box its mask probability inside
    its box, float32 (y2-y1, x2-x1); ``decoded``: how many boxes this call decoded.
    """

    maps: TeacherMaps
    pixels: np.ndarray
    probs: tuple[np.ndarray, ...]
    threshold: float
    decoded: int

    def box_mask(self, j: int) -> np.ndarray:
        """HxW bool: box j's own mask (probability >= threshold inside box j)."""
        b = self.maps.boxes
        out = np.zeros((b.height, b.width), bool)
        x1, y1, x2, y2 = self.pixels[j]
        out[y1:y2, x1:x2] = self.probs[j] >= self.threshold
        return out


class BoxPrompter:
    """Masks for edited boxes on one image at a time (see module doc). ``teacher.calls`` counts."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        self._key: str | None = None
        self._size: tuple[int, int] = (0, 0)
        self._image: np.ndarray | None = None
        self._emb: list[torch.Tensor] | None = None
        self._logits: dict[BoxKey, tuple[torch.Tensor, float]] = {}

    @property
    def key(self) -> str | None:
        return self._key

    def set_image(self, image: np.ndarray, key: str) -> None:
        """Show another image (HxWx3 uint8): drops the embeddings and decoded boxes of the last
        one when ``key`` changes. Encoding waits for the first box (:meth:`masks`)."""
        if key == self._key:
            return
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{key}: expected an HxWx3 image, got shape {image.shape}")
        self._key, self._image, self._size = key, image, image.shape[:2]
        self._emb, self._logits = None, {}

    def embeddings(self) -> list[torch.Tensor]:
        """The current image's embeddings (encoded on first use, then kept)."""
        from goose_lib.models.sam3 import preprocess

        if self._image is None:
            raise RuntimeError("no image: call set_image first")
        if self._emb is None:
            x = preprocess(self._image, self.teacher.image_size).to(self.teacher.device, self.teacher.dtype)
            self._emb = self.teacher.encode(x)
        return self._emb

    def masks(self, boxes: BoxSet) -> BoxMasks:
        """The teacher's masks for ``boxes`` (image frame) on the current image."""
        h, w = self._size
        if (boxes.height, boxes.width) != (h, w):
            raise ValueError(f"{self._key}: boxes for {(boxes.height, boxes.width)} but the image is {(h, w)}")
        keys = [_box_key(b) for b in boxes.xyxy]
        todo = list(dict.fromkeys(k for k in keys if k not in self._logits))
        if todo:
            s = self.teacher.image_size
            scale = np.array([s / w, s / h] * 2, np.float32)
            xyxy = torch.from_numpy(np.array(todo, np.float32) * scale)[None]
            logits, iou = self.teacher.decode(self.embeddings(), xyxy.to(self.teacher.device, self.teacher.dtype))
            for k, lg, sc in zip(todo, logits[0].float().cpu(), iou[0].float().cpu(), strict=True):
                self._logits[k] = (lg, float(sc))
        cfg = self.teacher.cfg
        if keys:
            stack = torch.stack([self._logits[k][0] for k in keys])
            scores = np.array([self._logits[k][1] for k in keys], np.float32)
        else:
            stack, scores = torch.zeros(0, 1, 1), np.zeros(0, np.float32)
        cls, prob, region = compose(stack, boxes, cfg.mask_threshold, cfg.tie_margin, cfg.overlap)
        pix = box_pixels(boxes.xyxy, h, w)
        probs = tuple(box_probability(stack[j], pix[j], h, w).numpy().astype(np.float32) for j in range(len(keys)))
        return BoxMasks(TeacherMaps(cls, prob, region, boxes, scores), pix, probs, cfg.mask_threshold, len(todo))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else float("nan")


def box_ious(result: BoxMasks, label: np.ndarray | None, pred: np.ndarray | None) -> pd.DataFrame:
    """One row per box: ``class_id``, ``x1 y1 x2 y2`` (pixels), ``score`` (predicted IoU),
    ``mask_pixels``, ``iou_label`` (box mask vs ``label == class``, both inside the box, label
    pixels 255 left out; NaN when both are empty or there is no label) and ``iou_student``
    (box mask vs ``pred == class`` inside the box; NaN without a prediction)."""
    rows = []
    boxes = result.maps.boxes
    for j in range(len(boxes)):
        c = int(boxes.classes[j])
        x1, y1, x2, y2 = (int(v) for v in result.pixels[j])
        m = result.probs[j] >= result.threshold
        row = {"class_id": c, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
               "score": float(result.maps.box_scores[j]), "mask_pixels": int(m.sum()),
               "iou_label": float("nan"), "iou_student": float("nan")}
        if label is not None:
            lab = np.asarray(label)[y1:y2, x1:x2]
            valid = lab != IGNORE_INDEX
            row["iou_label"] = _iou(m & valid, (lab == c) & valid)
        if pred is not None:
            row["iou_student"] = _iou(m, np.asarray(pred)[y1:y2, x1:x2] == c)
        rows.append(row)
    cols = ["class_id", "x1", "y1", "x2", "y2", "score", "mask_pixels", "iou_label", "iou_student"]
    return pd.DataFrame(rows, columns=cols)
