"""Boxes and pixel counts of one label map (+ instance map), found on horizontal runs rather than
pixels: one box per instance id on a ``has_instance`` class (class = the instance's majority class)
and one per 4-connected component of a class elsewhere. Pure NumPy; :mod:`goose_lib.data.stats`
applies it to every sample of a split (and re-exports :func:`region_boxes`).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

BOX_COLUMNS = ("class_id", "x0", "y0", "x1", "y1", "pixels", "is_instance")  # x1, y1 exclusive


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root (smallest member) of each of ``n`` nodes joined by edges ``a[i]-b[i]`` (pointer jumping)."""
    parent = np.arange(n)
    while len(a):
        pa, pb = parent[a], parent[b]
        lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
        keep = lo != hi
        if not keep.any():
            break
        np.minimum.at(parent, hi[keep], lo[keep])  # hook roots onto smaller roots
        while True:  # shortcut until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        a, b = a[keep], b[keep]
    return parent


def _group_boxes(group: np.ndarray, m: int, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
                 area: np.ndarray, w: int, h: int) -> tuple[np.ndarray, ...]:
    """Union boxes and summed areas of the items of each of ``m`` groups."""
    gx0, gy0 = np.full(m, w, np.int64), np.full(m, h, np.int64)
    gx1, gy1 = np.zeros(m, np.int64), np.zeros(m, np.int64)
    np.minimum.at(gx0, group, x0)
    np.minimum.at(gy0, group, y0)
    np.maximum.at(gx1, group, x1)
    np.maximum.at(gy1, group, y1)
    return gx0, gy0, gx1, gy1, np.bincount(group, weights=area, minlength=m).astype(np.int64)


def region_boxes(label: np.ndarray, instances: np.ndarray | None = None,
                 instance_classes: Collection[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts (256,) int64 and boxes (N, 7) int64 of one HxW label map (+ optional instance map).

    Rows of ``boxes`` follow :data:`BOX_COLUMNS`: one per instance id > 0 (class = majority
    class of its pixels, box over all its pixels) and one per 4-connected component of a class
    among pixels without instance. ``instance_classes``: the classes whose instance ids count
    (:attr:`Ontology.instance_classes`; None = every class); ids on other classes are treated
    as 0. Works on horizontal runs: O(pixels) only for finding them.
    """
    h, w = label.shape
    if instances is not None and instance_classes is not None:
        lut = np.zeros(max(256, int(label.max()) + 1), bool)
        lut[[int(c) for c in instance_classes]] = True
        instances = np.where(lut[label], instances, 0)
    flat = label.ravel()
    brk = np.empty(h * w, bool)
    np.not_equal(flat[1:], flat[:-1], out=brk[1:])
    if instances is not None:
        iflat = instances.ravel()
        np.logical_or(brk[1:], iflat[1:] != iflat[:-1], out=brk[1:])
    brk[::w] = True  # every row starts a run
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], h * w)
    ry, rx0 = np.divmod(starts, w)
    rx1, lengths = ends - ry * w, ends - starts
    rcls = flat[starts].astype(np.int64)
    rins = iflat[starts].astype(np.int64) if instances is not None else np.zeros_like(rcls)
    pixels = np.bincount(rcls, weights=lengths, minlength=256).astype(np.int64)
    # vertical links: an overlap of runs in rows y and y+1 begins at one of the two runs' starts
    up = np.flatnonzero(ry < h - 1)
    lo = np.flatnonzero(ry > 0)
    a = np.concatenate([up, np.searchsorted(starts, starts[lo] - w, side="right") - 1])
    b = np.concatenate([np.searchsorted(starts, starts[up] + w, side="right") - 1, lo])
    same = (rcls[a] == rcls[b]) & (rins[a] == rins[b])
    root = _components(len(starts), a[same], b[same])
    roots = np.flatnonzero(root == np.arange(len(starts)))
    comp = np.searchsorted(roots, root)  # component index of each run
    cx0, cy0, cx1, cy1, carea = _group_boxes(comp, len(roots), rx0, ry, rx1, ry + 1, lengths, w, h)
    ccls, cins = rcls[roots], rins[roots]
    stuff = cins == 0
    parts = [np.stack([ccls[stuff], cx0[stuff], cy0[stuff], cx1[stuff], cy1[stuff], carea[stuff],
                       np.zeros(int(stuff.sum()), np.int64)], axis=1)]
    if not stuff.all():  # instances: union of their components, majority class
        thing = ~stuff
        ids, grp = np.unique(cins[thing], return_inverse=True)
        ix0, iy0, ix1, iy1, iarea = _group_boxes(grp, len(ids), cx0[thing], cy0[thing], cx1[thing],
                                                 cy1[thing], carea[thing], w, h)
        pair, pinv = np.unique(grp * 256 + ccls[thing], return_inverse=True)
        parea = np.bincount(pinv, weights=carea[thing])
        order = np.lexsort((-parea, pair // 256))  # per instance, largest class first
        first = order[np.unique(pair[order] // 256, return_index=True)[1]]
        icls = pair[first] % 256
        parts.append(np.stack([icls, ix0, iy0, ix1, iy1, iarea, np.ones(len(ids), np.int64)], axis=1))
    return pixels, np.concatenate(parts)
