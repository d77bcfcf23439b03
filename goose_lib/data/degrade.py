"""Coarse training labels degraded from the exact map an image was rendered from (the embedded
world's premise 2: real GOOSE polygons are coarser than the truth on fine structures).

:func:`degrade` applies, in this order (every kind and strength a :class:`LabelNoise` field,
lengths in pixels *per 240 image lines*, multiplied by the caller's ``px`` = height / 240):

1. **Small instances dropped**: a non-thin instance with fewer than ``small_area * px**2``
   pixels is removed with probability ``drop_small_prob``; its pixels take the label of the
   nearest remaining pixel (what the annotator saw behind it).
2. **Thin structures lifted** (classes :data:`THIN_CLASSES`): removed from the map the same way;
   each connected piece (per instance for instance classes) is painted back in step 5 unless it
   is missed (probability ``thin_miss_prob``).
3. **Polygon simplification**: every region's boundary is redrawn from a grid of
   ``simplify_px``-pixel cells (class shares per cell, bilinearly interpolated, arg-max): the
   boundary is straight-ish between vertices about one cell apart and any detail narrower than
   a cell disappears, as when a polygon is clicked with few vertices.
4. **Boundary bleeding**: the classes of the image get a random order; within ``bleed_px`` of a
   boundary the higher class wins (a maximum filter over ranks with a disk footprint), so one
   side of each boundary grows by up to ``bleed_px``.
5. **Thickening**: kept thin pieces are dilated by ``thicken_px`` (a disk) and painted on top.

Instance ids follow the labels: a pixel keeps its exact instance id where its class is
unchanged, takes the nearest instance id where its class (an instance class) grew, and 0 where
its instance was dropped. Deterministic in the ``rng`` passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from goose_lib.ontology import Ontology

THIN_CLASSES = ("pole", "fence", "tree_trunk", "traffic_sign", "misc_sign", "road_marking", "curb", "bicycle")


@dataclass(frozen=True)
class LabelNoise:
    """How training labels are degraded (lengths per 240 image lines; see module doc)."""

    enabled: bool = True  # False: training labels are the exact maps
    small_area: float = 60.0  # instances below this area (px**2 per 240 lines) may be dropped
    drop_small_prob: float = 0.5
    thin_miss_prob: float = 0.3  # probability that a thin piece is missing from the label
    simplify_px: float = 5.0  # polygon vertex spacing (cell size); 0 = off
    bleed_px: float = 1.5  # boundary bleeding radius; 0 = off
    thicken_px: float = 2.0  # dilation radius of kept thin pieces; 0 = off

    def __post_init__(self) -> None:
        for name in ("small_area", "simplify_px", "bleed_px", "thicken_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"LabelNoise.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("drop_small_prob", "thin_miss_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"LabelNoise.{name} must be in [0, 1], got {getattr(self, name)}")


EXACT = LabelNoise(enabled=False)


def disk(radius: float) -> np.ndarray:
    """Boolean disk footprint of the given radius (at least the centre pixel)."""
    r = int(np.floor(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy ** 2 + xx ** 2) <= radius ** 2 + 1e-6


def fill_nearest(values: np.ndarray, remove: np.ndarray) -> np.ndarray:
    """``values`` with the pixels of ``remove`` replaced by the value of the nearest kept pixel."""
    if not remove.any() or remove.all():
        return values.copy()
    iy, ix = ndimage.distance_transform_edt(remove, return_distances=False, return_indices=True)
    return values[iy, ix]


def simplify(label: np.ndarray, cell: float) -> np.ndarray:
    """Region boundaries redrawn from ``cell``-pixel class shares (bilinear, arg-max)."""
    import torch
    import torch.nn.functional as F

    c = round(cell)
    if c < 2:
        return label.copy()
    h, w = label.shape
    present, inv = np.unique(label, return_inverse=True)
    if len(present) == 1:
        return label.copy()
    onehot = F.one_hot(torch.from_numpy(inv.reshape(h, w).astype(np.int64)), len(present))
    x = onehot.permute(2, 0, 1)[None].float()
    low = F.avg_pool2d(x, c, stride=c, ceil_mode=True, count_include_pad=False)
    up = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return present[up[0].argmax(0).numpy()].astype(label.dtype)


def bleed(label: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """One side of every boundary grown by up to ``radius`` (random class order per image)."""
    if radius < 1:
        return label.copy()
    rank = rng.permutation(256).astype(np.int32)
    inverse = np.argsort(rank)
    grown = ndimage.maximum_filter(rank[label], footprint=disk(radius), mode="nearest")
    return inverse[grown].astype(label.dtype)


def _thin_pieces(label: np.ndarray, inst: np.ndarray, thin_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(HxW piece id map, 0 = none; (n+1,) class of each piece)."""
    pieces = np.zeros(label.shape, np.int32)
    classes = [0]
    for cid in thin_ids:
        m = label == cid
        if not m.any():
            continue
        ids = np.unique(inst[m])
        parts, n = ndimage.label(m & (inst == 0))  # pieces without an instance id
        for i in ids[ids != 0]:
            classes.append(cid)
            pieces[m & (inst == i)] = len(classes) - 1
        for j in range(1, n + 1):
            classes.append(cid)
            pieces[parts == j] = len(classes) - 1
    return pieces, np.array(classes, np.int64)


def degrade(label: np.ndarray, inst: np.ndarray, noise: LabelNoise, rng: np.random.Generator,
            ontology: Ontology, px: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(coarse HxW label ids, instance ids) from the exact ones (see module doc)."""
    if not noise.enabled:
        return label.copy(), inst.copy()
    thin_ids = [ontology.index(n) for n in THIN_CLASSES if n in ontology.names]
    inst = inst.astype(np.int32)
    pieces, piece_cls = _thin_pieces(label, inst, thin_ids)
    remove = pieces > 0
    ids, first, area = np.unique(inst, return_index=True, return_counts=True)
    inst_cls = label.reshape(-1)[first]
    small = (ids != 0) & (area < noise.small_area * px * px) & ~np.isin(inst_cls, thin_ids)
    dropped = ids[small & (rng.random(len(ids)) < noise.drop_small_prob)]
    remove |= np.isin(inst, dropped)
    base = fill_nearest(label, remove)
    base_inst = np.where(remove, 0, inst)
    out = simplify(base, noise.simplify_px * px)
    out = bleed(out, noise.bleed_px * px, rng)
    kept = rng.random(len(piece_cls)) >= noise.thin_miss_prob
    kept[0] = False
    keep_map = np.where(kept[pieces], pieces, 0)
    if noise.thicken_px * px >= 1:
        keep_map = ndimage.grey_dilation(keep_map, footprint=disk(noise.thicken_px * px), mode="nearest")
    painted = keep_map > 0
    out = np.where(painted, piece_cls[keep_map], out).astype(label.dtype)
    # instance ids follow the labels (module doc)
    piece_inst = np.zeros(len(piece_cls), np.int32)
    np.maximum.at(piece_inst, pieces.reshape(-1), inst.reshape(-1))
    new_inst = np.where(out == base, base_inst, 0)
    new_inst = np.where(painted, piece_inst[keep_map], new_inst)
    thing_cls = np.unique(inst_cls[ids != 0])
    grow = np.isin(out, thing_cls) & (new_inst == 0) & ~painted
    if grow.any() and (new_inst > 0).any():
        near = fill_nearest(new_inst, new_inst == 0)
        new_inst = np.where(grow, near, new_inst)
    return out, new_inst.astype(np.uint16)
