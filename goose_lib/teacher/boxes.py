"""Prompt boxes for the SAM3 teacher: from ground truth ("oracle boxes") or from a prediction.

Box format everywhere in ``goose_lib.teacher``: ``xyxy`` float32 ``(N, 4)`` in pixels of the
*image* frame, ``x1, y1`` = left/top pixel edge, ``x2, y2`` = right/bottom pixel edge (exclusive:
a box covering columns 3..5 has ``x1 = 3, x2 = 6``), so width = ``x2 - x1``. Each box has a
class id (0..63) and a source: ``"instance"`` (from an instance id), ``"component"`` (a
connected component of the class mask) or ``"prediction"`` (a component of a predicted map).

Rules (see :class:`BoxParams`): for each class present in the label map, one box per instance id
where the class has instances — a class whose ``has_instance`` is set in the dataset's
``goose_label_mapping.csv`` (``instance_classes``, i.e. :attr:`Ontology.instance_classes`); its
pixels with instance id 0 are boxed by components — otherwise one box per connected component
(instance ids on such a class are ignored; ``goose check`` reports them). The instance encoding
assumed is the one in :mod:`goose_lib.data.decode`. Objects smaller than ``min_area`` pixels are dropped.
A margin widens each box, and every box is clipped to the image; boxes that are empty after
clipping are dropped. An image without any box is valid (an empty :class:`BoxSet`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

from goose_lib.ontology import IGNORE_INDEX
from goose_lib.teacher.config import DEFAULT_BOXES, BoxParams

Source = Literal["instance", "component", "prediction"]
SOURCES: tuple[str, ...] = ("instance", "component", "prediction")




@dataclass(frozen=True)
class BoxSet:
    """The prompt boxes of one image.

    ``xyxy`` float32 (N, 4) image pixels (see module doc), ``classes`` int64 (N,),
    ``sources`` tuple of N strings, ``areas`` int64 (N,) pixels of the object each box was made
    from, ``height``/``width`` of the image.
    """

    xyxy: np.ndarray
    classes: np.ndarray
    sources: tuple[str, ...]
    areas: np.ndarray
    height: int
    width: int
    masks: tuple[np.ndarray, ...] | None = field(default=None, repr=False)  # HxW bool per box, on request

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    @staticmethod
    def empty(height: int, width: int) -> BoxSet:
        return BoxSet(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), (), np.zeros(0, np.int64),
                      height, width, ())

    def of_class(self, c: int) -> np.ndarray:
        """xyxy (M, 4) of the boxes of class ``c``."""
        return self.xyxy[self.classes == c]

    def region(self, c: int) -> np.ndarray:
        """HxW bool: union of the (integer-rounded) boxes of class ``c``."""
        out = np.zeros((self.height, self.width), bool)
        for x1, y1, x2, y2 in box_pixels(self.of_class(c), self.height, self.width):
            out[y1:y2, x1:x2] = True
        return out


def clip_boxes(xyxy: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes to the image; return (clipped float32 (N,4), keep bool (N,)).

    ``keep`` is False for boxes that are empty (zero or negative width/height) after clipping,
    i.e. degenerate boxes and boxes entirely outside the image; NaN/inf boxes are dropped too.
    """
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    finite = np.isfinite(xyxy).all(axis=1)
    out = xyxy.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    keep = finite & (out[:, 2] - out[:, 0] >= 1) & (out[:, 3] - out[:, 1] >= 1)
    return out, keep


def box_pixels(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Integer pixel ranges (N, 4) ``x1, y1, x2, y2`` (exclusive ends) covering each box, clipped."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    lo = np.floor(xyxy[:, :2])
    hi = np.ceil(xyxy[:, 2:])
    out = np.concatenate([lo, hi], axis=1).astype(np.int64)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, height)
    return out


def _objects(mask: np.ndarray, connectivity: int) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """Connected components of a bool mask: [(bounding slices, component bool mask in the slices)]."""
    structure = ndimage.generate_binary_structure(2, connectivity)
    lab, _ = ndimage.label(mask, structure=structure)
    out = []
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is not None:
            out.append((sl, lab[sl] == i))
    return out


def _collect(objects: list[tuple[int, str, tuple[slice, slice], np.ndarray]], height: int, width: int,
             params: BoxParams, return_masks: bool) -> BoxSet:
    """objects: (class, source, slices, bool mask within slices) -> BoxSet (filtered, widened, clipped)."""
    rows = []
    for c, src, sl, m in objects:
        area = int(m.sum())
        if area < params.min_area:
            continue
        ys, xs = sl
        rows.append((c, src, area, (xs.start, ys.start, xs.stop, ys.stop), sl, m))
    if params.max_boxes is not None and len(rows) > params.max_boxes:
        rows = sorted(rows, key=lambda r: -r[2])[: params.max_boxes]
    if not rows:
        return BoxSet.empty(height, width)
    xyxy = np.array([r[3] for r in rows], np.float32)
    w = xyxy[:, 2] - xyxy[:, 0]
    h = xyxy[:, 3] - xyxy[:, 1]
    dx = w * params.margin + params.margin_px
    dy = h * params.margin + params.margin_px
    xyxy = xyxy + np.stack([-dx, -dy, dx, dy], axis=1)
    xyxy, keep = clip_boxes(xyxy, height, width)
    masks = None
    if return_masks:
        masks = []
        for r in rows:
            full = np.zeros((height, width), bool)
            full[r[4]] = r[5]
            masks.append(full)
        masks = tuple(m for m, k in zip(masks, keep) if k)
    return BoxSet(xyxy[keep], np.array([r[0] for r in rows], np.int64)[keep],
                  tuple(r[1] for r, k in zip(rows, keep) if k),
                  np.array([r[2] for r in rows], np.int64)[keep], height, width, masks)


def _check_map(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an HxW map, got shape {arr.shape}")
    return arr


def boxes_from_labels(label: np.ndarray, instances: np.ndarray | None = None, *,
                      params: BoxParams = DEFAULT_BOXES, classes: Sequence[int] | None = None,
                      return_masks: bool = False, instance_classes: Collection[int] | None = None) -> BoxSet:
    """Oracle boxes from ground truth.

    label HxW uint8 class ids (255 ignored); instances HxW int (0 = no instance) or None.
    ``classes``: restrict to these class ids (None = every class present, minus
    ``params.skip_classes``). ``instance_classes``: the classes whose instance ids are used
    (pass :attr:`Ontology.instance_classes`); None = every class's. ``return_masks`` also returns each box's object mask (HxW bool),
    used by teacher adaptation.
    """
    label = _check_map(label, "label")
    if instances is not None:
        instances = _check_map(instances, "instances")
        if instances.shape != label.shape:
            raise ValueError(f"instances: shape {instances.shape} differs from the label's {label.shape}")
    height, width = label.shape
    present = [int(c) for c in np.unique(label) if c != IGNORE_INDEX and int(c) not in params.skip_classes]
    if classes is not None:
        wanted = {int(c) for c in classes}
        present = [c for c in present if c in wanted]
    inst_ok = frozenset(int(c) for c in instance_classes) if instance_classes is not None else frozenset()
    objects: list[tuple[int, str, tuple[slice, slice], np.ndarray]] = []
    for c in present:
        cmask = label == c
        rest = cmask
        if params.use_instances and instances is not None and (instance_classes is None or c in inst_ok):
            ids = np.unique(instances[cmask])
            ids = ids[ids != 0]
            for i in ids:
                for sl, m in _bbox_of(cmask & (instances == i)):
                    objects.append((c, "instance", sl, m))
            if len(ids):
                rest = cmask & (instances == 0)
        for sl, m in _objects(rest, params.connectivity):
            objects.append((c, "component", sl, m))
    return _collect(objects, height, width, params, return_masks)


def _bbox_of(mask: np.ndarray) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """The whole (possibly disconnected) mask as one object: [(slices, mask within)] or []."""
    sl = ndimage.find_objects(mask.astype(np.int8))
    if not sl or sl[0] is None:
        return []
    return [(sl[0], mask[sl[0]])]


def boxes_from_prediction(pred: np.ndarray, *, params: BoxParams = DEFAULT_BOXES,
                          classes: Sequence[int] | None = None, return_masks: bool = False) -> BoxSet:
    """Boxes from a predicted map (HxW uint8 class ids): one per connected component of each
    class, source ``"prediction"``; lets the teacher run on unlabelled images."""
    pred = _check_map(pred, "prediction")
    height, width = pred.shape
    present = [int(c) for c in np.unique(pred) if c != IGNORE_INDEX and int(c) not in params.skip_classes]
    if classes is not None:
        wanted = {int(c) for c in classes}
        present = [c for c in present if c in wanted]
    objects = [(c, "prediction", sl, m) for c in present for sl, m in _objects(pred == c, params.connectivity)]
    return _collect(objects, height, width, params, return_masks)


def make_boxset(xyxy: np.ndarray, classes: Sequence[int], sources: Sequence[str], height: int,
                width: int) -> BoxSet:
    """A BoxSet from user boxes: clipped to the image, empty/degenerate/outside boxes dropped."""
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if len(classes) != len(xyxy) or len(sources) != len(xyxy):
        raise ValueError(f"boxes: {len(xyxy)} boxes but {len(classes)} classes and {len(sources)} sources")
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise ValueError(f"boxes: unknown source(s) {sorted(set(bad))}; expected one of {SOURCES}")
    clipped, keep = clip_boxes(xyxy, height, width)
    clipped = np.where(keep[:, None], clipped, 0.0).astype(np.float32)
    areas = np.round((clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])).astype(np.int64)
    return BoxSet(clipped[keep], classes[keep], tuple(s for s, k in zip(sources, keep) if k), areas[keep],
                  height, width)
