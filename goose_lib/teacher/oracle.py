"""The oracle teacher: a control whose masks are the exact labels instead of SAM3's.

It gets the prompt boxes the SAM3 teacher gets (``boxes_from_labels`` on the coarse training
labels, with the cache's :class:`BoxParams` and ``instance_classes``) and answers each box with the
perfect mask, probability 1.0 inside it and 0.0 elsewhere in the box. The masks then go through
the SAM3 teacher's composition (:func:`goose_lib.teacher.prompt.compose_probabilities`, the
``TeacherConfig``'s overlap rule), so an oracle cache item is a SAM3 cache item with perfect masks
(``box_scores`` = 1.0: the IoU of a perfect mask).

The perfect mask of a box is what a box-prompted segmenter returns at best: the object the box
was made from, seen in the exact labels, cut to the box.

- ``"instance"`` box (one instance id i of class c in the coarse label): the exact pixels of class
  c with instance id i (ids follow the labels through the label noise, :mod:`goose_lib.data.degrade`);
  where the exact map has no pixel of class c with id i, the exact pixels of class c.
- ``"component"`` and ``"prediction"`` boxes (no object id to match): the exact pixels of class c.

Where the exact labels live: ``<root>/labels_exact/<split>/<scenario>/<stem>_{labelids,instanceids}.png``,
the twin of each ``labels/`` file (:func:`goose_lib.data.world.exact_train_label`). ``labels_exact``
holds the twin of every split whose labels are degraded; a split absent there is exact as it is
(the embedded worlds degrade ``train`` only, so val is its own oracle). A root without
``labels_exact`` (a real GOOSE download) raises :class:`ExactLabelsMissing` naming the folder.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from goose_lib.teacher.boxes import BoxSet, box_pixels, boxes_from_labels
from goose_lib.teacher.config import DEFAULT_BOXES, DEFAULT_TEACHER, BoxParams, TeacherConfig
from goose_lib.teacher.prompt import TeacherMaps, compose_probabilities

ORACLE = "oracle"  # the teacher kind, and what stands for a checkpoint (its fingerprint, teacher_checkpoint)


class ExactLabelsMissing(FileNotFoundError):
    """The oracle teacher's exact labels are not there; the message names the missing folder or file."""


def exact_labels_root(data_root: str | os.PathLike) -> Path:
    """``<root>/labels_exact`` of a data-root value (a folder or an embedded dataset's name)."""
    from goose_lib.data.embedded import resolve_data_root
    from goose_lib.data.world import EXACT_LABELS

    folder = resolve_data_root(data_root).resolve() / EXACT_LABELS
    if not folder.is_dir():
        raise ExactLabelsMissing(
            f"{folder}: no such folder; the oracle teacher needs the exact labels there "
            "(labels_exact/<split>/<scenario>/<stem>_labelids.png, as an embedded world writes them). "
            "A GOOSE download has none: use teacher 'sam3'")
    return folder


def exact_label_files(exact_root: Path, sample: Any) -> tuple[Path, Path | None]:
    """(labelids, instanceids or None) holding the exact labels of ``sample`` (``data.layout.Sample``)
    of the root whose :func:`exact_labels_root` is ``exact_root``: the twins under
    ``labels_exact/<split>`` where that folder exists, else the sample's own files."""
    from goose_lib.data.world import exact_train_label

    split_dir = exact_root / sample.split
    if not split_dir.is_dir():
        if sample.labelids is None:
            raise ExactLabelsMissing(f"{split_dir}: no such folder, and split {sample.split!r} has no labels "
                                     "of its own; the oracle teacher has no exact labels for it")
        return Path(sample.labelids), None if sample.instanceids is None else Path(sample.instanceids)
    if sample.labelids is None:
        raise ExactLabelsMissing(f"{sample.image}: no label path to find the exact twin of under {split_dir}")
    root = exact_root.parent
    label = exact_train_label(root, sample.labelids)
    if not label.is_file():
        raise ExactLabelsMissing(f"{label}: missing (the exact twin of {sample.labelids})")
    inst = exact_train_label(root, sample.instanceids) if sample.instanceids is not None else None
    return label, inst if inst is not None and inst.is_file() else None


def box_instance_ids(label: np.ndarray | None, instances: np.ndarray | None, boxes: BoxSet, *,
                     box_params: BoxParams = DEFAULT_BOXES,
                     instance_classes: Collection[int] | None = None) -> np.ndarray:
    """(N,) int64: the coarse instance id each ``"instance"`` box was made from, 0 for other boxes.

    With instance boxes among them, the boxes are made again from ``label`` / ``instances`` with
    their objects' masks, so they must be ``boxes_from_labels(label, instances, params=box_params,
    instance_classes=instance_classes)`` (else ValueError). Without instance boxes nothing is
    read (``label`` may be None: an unlabelled split's predicted boxes)."""
    ids = np.zeros(len(boxes), np.int64)
    if "instance" not in boxes.sources:
        return ids
    if label is None or instances is None:
        raise ValueError("oracle: instance boxes need the label and instance maps they were made from")
    made = boxes_from_labels(label, instances, params=box_params, instance_classes=instance_classes,
                             return_masks=True)
    if not (np.array_equal(made.xyxy, boxes.xyxy) and np.array_equal(made.classes, boxes.classes)
            and made.sources == boxes.sources):
        raise ValueError("oracle: these instance boxes were not made from this label with these BoxParams / "
                         "instance_classes, so their objects cannot be found again")
    assert made.masks is not None
    for j, (source, mask) in enumerate(zip(made.sources, made.masks)):
        if source == "instance":
            ids[j] = int(instances[mask].max())
    return ids


def oracle_masks(exact: np.ndarray, exact_instances: np.ndarray | None, boxes: BoxSet,
                 instance_ids: Sequence[int]) -> list[np.ndarray]:
    """Each box's perfect mask (module doc) as bool on its ``box_pixels`` range (rows y1:y2,
    columns x1:x2). ``instance_ids``: per box, the instance id to match (0 = none)."""
    pix = box_pixels(boxes.xyxy, boxes.height, boxes.width)
    out = []
    for (x1, y1, x2, y2), c, i in zip(pix, boxes.classes, instance_ids):
        mask = exact[y1:y2, x1:x2] == c
        if i and exact_instances is not None and np.any((exact == c) & (exact_instances == i)):
            mask &= exact_instances[y1:y2, x1:x2] == i
        out.append(mask)
    return out


def oracle_maps(exact: np.ndarray, exact_instances: np.ndarray | None, boxes: BoxSet,
                instance_ids: Sequence[int], cfg: TeacherConfig = DEFAULT_TEACHER) -> TeacherMaps:
    """Teacher maps of one image from its exact labels: the perfect masks of :func:`oracle_masks`
    at probability 1.0, composed by the SAM3 teacher's rule (``cfg.overlap`` etc.)."""
    if exact.shape != (boxes.height, boxes.width):
        raise ValueError(f"oracle: exact labels of shape {exact.shape} but boxes for "
                         f"{(boxes.height, boxes.width)}")
    masks = oracle_masks(exact, exact_instances, boxes, instance_ids)
    probs = [torch.from_numpy(m.astype(np.float32)) for m in masks]
    cls, prob, region = compose_probabilities(probs.__getitem__, boxes, cfg.mask_threshold, cfg.tie_margin,
                                              cfg.overlap)
    return TeacherMaps(cls, prob, region, boxes, np.ones(len(boxes), np.float32))


class OracleTeacher:
    """The oracle as a mask source of :func:`goose_lib.teacher.cache.build_teacher_cache` (an
    ``ItemTeacher``: it reads each item's sample for its exact labels). Raises
    :class:`ExactLabelsMissing` at once for a root without ``labels_exact``.

    ``box_params`` / ``instance_classes``: those the cache makes its boxes with (to find each
    instance box's object again)."""

    def __init__(self, data_root: str | os.PathLike, *, cfg: TeacherConfig = DEFAULT_TEACHER,
                 box_params: BoxParams = DEFAULT_BOXES, instance_classes: Collection[int] | None = None,
                 num_classes: int = 64) -> None:
        self.exact_root = exact_labels_root(data_root)
        self.cfg = cfg
        self.box_params = box_params
        self.instance_classes = instance_classes
        self.num_classes = num_classes

    def item_maps(self, item: dict[str, Any], boxes: BoxSet) -> TeacherMaps:
        """Teacher maps of one ``data.decode.load_sample`` item with its boxes."""
        from goose_lib.data.decode import read_instances, read_label

        label_path, inst_path = exact_label_files(self.exact_root, item["sample"])
        exact = read_label(label_path, self.num_classes)
        exact_instances = read_instances(inst_path) if inst_path is not None else None
        ids = box_instance_ids(item["label"], item.get("instances"), boxes, box_params=self.box_params,
                               instance_classes=self.instance_classes)
        return oracle_maps(exact, exact_instances, boxes, ids, self.cfg)

    def signature_files(self, sample: Any) -> list[Any]:
        """The files of the cache's source signature of ``sample``: its own (as for SAM3) plus its
        exact label files (``cache.files_signature`` of them is the item's signature)."""
        return [sample.image, sample.labelids, sample.instanceids, *exact_label_files(self.exact_root, sample)]
