"""The distillation premise, measured: are the teacher's masks closer to the truth than the
(coarse) training labels they would replace?

For each class c, over the pixels inside c's prompt boxes of every cached training image, the
IoU of ``teacher_cls == c`` with the exact label (``labels_exact/``, :mod:`goose_lib.teacher.oracle`)
and the IoU of the coarse training label ``== c`` with the same exact label, pooled over images.
Thin classes are where the coarse labels are worst (:data:`THIN_CLASSES`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

THIN_CLASSES = ("pole", "tree_trunk", "traffic_sign", "fence")


def exact_agreement(samples: Sequence[Any], cache_folder: str | os.PathLike, data_root: str | os.PathLike,
                    classes: Sequence[int]) -> dict[int, dict[str, float]]:
    """class id -> {"teacher": IoU vs exact, "coarse": IoU vs exact, "pixels": in-box pixels}, for the
    classes with at least one box in the cached items of ``samples`` (pooled in-box IoUs)."""
    from goose_lib.data.decode import read_label
    from goose_lib.teacher.cache import item_path, read_item
    from goose_lib.teacher.oracle import exact_label_files, exact_labels_root

    exact_root = exact_labels_root(data_root)
    wanted = {int(c) for c in classes}
    acc = {c: np.zeros(5, np.int64) for c in wanted}  # teacher inter, union; coarse inter, union; pixels
    for s in samples:
        path = item_path(cache_folder, s.key)
        if not Path(path).is_file() or s.labelids is None:
            continue
        item = read_item(path)
        boxes, cls = np.asarray(item["boxes"].xyxy), np.asarray(item["boxes"].classes)
        present = wanted.intersection(int(c) for c in cls)
        if not present:
            continue
        coarse = read_label(s.labelids)
        exact = read_label(exact_label_files(exact_root, s)[0])
        teacher = np.asarray(item["teacher_cls"])
        h, w = exact.shape
        for c in present:
            inside = np.zeros((h, w), bool)
            for (x1, y1, x2, y2) in boxes[cls == c]:
                inside[max(int(y1), 0):min(int(np.ceil(y2)), h), max(int(x1), 0):min(int(np.ceil(x2)), w)] = True
            e, t, k = (exact == c) & inside, (teacher == c) & inside, (coarse == c) & inside
            acc[c] += [(t & e).sum(), (t | e).sum(), (k & e).sum(), (k | e).sum(), inside.sum()]
    return {c: {"teacher": float(a[0] / a[1]) if a[1] else float("nan"),
                "coarse": float(a[2] / a[3]) if a[3] else float("nan"), "pixels": int(a[4])}
            for c, a in sorted(acc.items()) if a[4]}


def thin_summary(agreement: dict[int, dict[str, float]], names: Sequence[str]) -> dict[str, Any]:
    """Mean over the thin classes present: {"thin_teacher_exact_iou", "thin_coarse_exact_iou", "thin_classes"}."""
    thin = [c for c in agreement if names[c] in THIN_CLASSES]
    if not thin:
        return {"thin_teacher_exact_iou": None, "thin_coarse_exact_iou": None, "thin_classes": []}
    return {"thin_teacher_exact_iou": float(np.mean([agreement[c]["teacher"] for c in thin])),
            "thin_coarse_exact_iou": float(np.mean([agreement[c]["coarse"] for c in thin])),
            "thin_classes": [names[c] for c in thin]}


def agreement_table(agreement: dict[int, dict[str, float]], names: Sequence[str]) -> Any:
    """A DataFrame (index: class id) of :func:`exact_agreement` with names and the teacher's gain."""
    import pandas as pd

    df = pd.DataFrame.from_dict(agreement, orient="index", columns=["teacher", "coarse", "pixels"])
    df.insert(0, "name", [names[c] for c in df.index])
    df["gain"] = df["teacher"] - df["coarse"]
    df["thin"] = df["name"].isin(THIN_CLASSES)
    return df.rename(columns={"teacher": "teacher_vs_exact", "coarse": "coarse_vs_exact"})
