"""Rare-class copy-paste: objects of chosen classes cut from other training images, with their
pixels, pasted into the drawn image before the augmentation.

An *object* of class c in a donor item is one instance (pixels with one instance id and label c,
when the donor has an instance map holding ids on c) or else one 4-connected component of the
label's c pixels. Its bounding box is placed at a random position of the target image (cropped to
the target's size when larger). Inside the object's mask, and nowhere else, the target takes the
donor's image pixels, label (c), teacher maps (``teacher_cls`` / ``teacher_prob`` /
``teacher_region`` when both items carry them) and a fresh instance id (one above the target's
largest, when the target has an instance map). Everything outside the mask is untouched.

:class:`CopyPasteTransform` wraps a training transform ``(item, rng) -> item``: with probability
``prob`` it pastes ``count`` objects (donor image drawn uniformly among the ``sources``, object
uniformly among the donor's objects of the chosen classes), then runs the wrapped transform with
the same generator, so a draw stays a pure function of (item, seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

TEACHER_KEYS = ("teacher_cls", "teacher_prob", "teacher_region")


@dataclass(frozen=True)
class CopyPasteConfig:
    """Which classes are pasted, how often and how many objects (TrainConfig holds the defaults)."""

    classes: tuple[int, ...]
    prob: float
    count: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0 or self.count < 1:
            raise ValueError(f"need 0 <= prob <= 1 and count >= 1, got prob={self.prob}, count={self.count}")

    @property
    def active(self) -> bool:
        return bool(self.classes) and self.prob > 0


def objects(item: Mapping[str, Any], classes: Sequence[int]) -> list[tuple[int, np.ndarray]]:
    """``[(class id, HxW bool mask)]`` of every object of ``classes`` in ``item`` (module docstring)."""
    label = item["label"]
    inst = item.get("instances")
    out: list[tuple[int, np.ndarray]] = []
    for c in classes:
        on_c = label == c
        if not on_c.any():
            continue
        ids = np.unique(inst[on_c]) if inst is not None else np.zeros(0, dtype=np.int64)
        ids = ids[ids > 0]
        if ids.size:
            out.extend((int(c), on_c & (inst == i)) for i in ids)
            rest = on_c & (inst == 0)  # pixels of c without an instance: components
        else:
            rest = on_c
        comp, n = ndimage.label(rest)
        out.extend((int(c), comp == j) for j in range(1, n + 1))
    return out


def paste(target: Mapping[str, Any], donor: Mapping[str, Any], mask: np.ndarray, cls: int,
          rng: np.random.Generator) -> dict[str, Any]:
    """A copy of ``target`` with the object ``mask`` (of class ``cls``, a mask of ``donor``) pasted
    at a random position; the target's arrays are not modified."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return dict(target)
    y0, x0 = int(ys.min()), int(xs.min())
    h, w = target["image"].shape[:2]
    bh, bw = min(int(ys.max()) - y0 + 1, h), min(int(xs.max()) - x0 + 1, w)
    m = mask[y0:y0 + bh, x0:x0 + bw]
    ty = int(rng.integers(0, h - bh + 1))
    tx = int(rng.integers(0, w - bw + 1))
    out = dict(target)

    def put(key: str, values: np.ndarray | int) -> None:
        arr = np.array(out[key], copy=True)
        region = arr[ty:ty + bh, tx:tx + bw]
        region[m] = values if np.isscalar(values) else values[m]
        out[key] = arr

    put("image", donor["image"][y0:y0 + bh, x0:x0 + bw])
    put("label", cls)
    if target.get("instances") is not None:
        put("instances", int(np.asarray(target["instances"]).max(initial=0)) + 1)
    for key in TEACHER_KEYS:
        if target.get(key) is not None and donor.get(key) is not None:
            put(key, donor[key][y0:y0 + bh, x0:x0 + bw])
    out["pasted"] = [*target.get("pasted", []), {"class": cls, "box": [ty, tx, bh, bw], "pixels": int(m.sum())}]
    return out


class CopyPasteTransform:
    """``transform(item, rng)``: paste rare-class objects (see the module docstring), then ``inner``.

    ``load(i)``: the raw item of training sample ``i`` (with its teacher maps attached when the
    targets carry them); ``sources``: indices of the samples holding any of ``cfg.classes``.
    """

    def __init__(self, inner: Callable[[dict, np.random.Generator], dict], load: Callable[[int], Mapping[str, Any]],
                 sources: Sequence[int], cfg: CopyPasteConfig) -> None:
        self.inner, self.load, self.sources, self.cfg = inner, load, list(sources), cfg

    def apply(self, item: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """The pasting step alone (what :meth:`__call__` does before the wrapped transform)."""
        out = dict(item)
        if not self.sources or item.get("label") is None or rng.random() >= self.cfg.prob:
            return out
        for _ in range(self.cfg.count):
            donor = self.load(self.sources[int(rng.integers(len(self.sources)))])
            found = objects(donor, self.cfg.classes)
            if not found:
                continue
            cls, mask = found[int(rng.integers(len(found)))]
            out = paste(out, donor, mask, cls, rng)
        return out

    def __call__(self, item: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return self.inner(self.apply(item, rng), rng)
