"""Per-class teacher-vs-student comparison on labelled images, and the automatic class selection.

Definition of the compared IoU (both models on the same pixels): for class c, let R_c be the
union of the teacher's prompt boxes of class c in an image (minus ignored label pixels), G_c the
ground-truth pixels of c, T_c the pixels where ``teacher_cls == c`` and S_c those where the
student predicts c. Summed over the images,

    teacher_iou[c] = |T_c & G_c & R_c| / |(T_c | G_c) & R_c|
    student_iou[c] = |S_c & G_c & R_c| / |(S_c | G_c) & R_c|

i.e. IoU inside the prompted boxes of c: exactly the pixels where distillation acts. Ground-truth
pixels of c outside every box (objects below ``min_area``) are not compared. ``student_iou_full``
is the student's ordinary full-image IoU (``goose_lib.metrics``), for context; ``box_iou`` the IoU
of simply filling the boxes (|G_c & R_c| / |R_c|), the baseline any box-prompted teacher must
beat to add information beyond its boxes. Support:
``support_pixels`` = sum |G_c & R_c|, ``support_images`` = images with a box of c.

What distillation would change (``distill_gain``, all classes): distilling class c acts on every
pixel of c's *target region* T_c (``teacher_region == c``: the pixels where c's box is the smallest
covering box), whatever their label. Simulate it: the student's map with T_c replaced by the
teacher's verdict there (c where ``teacher_prob >= threshold``; where the teacher says "not c" and
the student said c, class 0 = none: the student's next choice is unknown), scored on the full images
over ALL classes; ``distill_gain`` = its composite minus the student's. A class whose targets
override its neighbours (a stuff box whose mask fills the box and swallows the classes inside it)
loses composite there even when its own in-box IoU beats the student's, so it is not selected.
``region_pixels`` = sum |T_c|, ``region_other`` = the share of T_c labelled with another class
that the teacher claims for c.

Selection (:class:`SelectionRule`): a class is distilled when it has enough support and its gain
(``criterion="distill"``: ``distill_gain``, the default; ``"box"``: the in-box ``gain``) is larger
than ``margin``. An empty selection is valid (training then runs without distillation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goose_lib.config import EvalProtocol, to_dict
from goose_lib.io import atomic_write_json, atomic_write_text, read_json
from goose_lib.ontology import IGNORE_INDEX, Ontology
from goose_lib.teacher.config import SelectionRule

COLUMNS = ("name", "category", "teacher_iou", "student_iou", "gain", "box_iou", "student_iou_full",
           "distill_gain", "region_pixels", "region_other", "support_pixels", "support_images", "boxes", "selected")


def compare(samples: Sequence[Any], cache_folder: str | os.PathLike,
            predict_fn: Callable[[np.ndarray], np.ndarray], *, ontology: Ontology | None = None,
            protocol: EvalProtocol | None = None, threshold: float = 0.5,
            progress: bool = True) -> tuple[pd.DataFrame, Any]:
    """Teacher vs student per class on labelled ``samples`` (``data.layout.Sample``).

    ``cache_folder``: the key folder of a teacher cache holding these samples;
    ``predict_fn``: image HxWx3 uint8 -> HxW uint8 student prediction (e.g.
    ``lambda im: infer.tta.predict(student, im, TTAConfig())``).
    Returns (table indexed by class id with :data:`COLUMNS` minus "selected", the student's
    full-image ``metrics.Scores``).
    """
    from tqdm.auto import tqdm

    from goose_lib.data.decode import load_sample
    from goose_lib.metrics import ConfusionMatrix, compute_scores
    from goose_lib.teacher.cache import item_path, read_item

    ontology = ontology or Ontology.load()
    k = ontology.num_classes
    protocol = protocol or EvalProtocol()
    inter_t, union_t, inter_s, union_s, support, images, nboxes, area = (np.zeros(k, np.int64) for _ in range(8))
    region_px, region_other, region_claimed = (np.zeros(k, np.int64) for _ in range(3))
    sim_delta: dict[int, np.ndarray] = {}  # c -> (k, k) change of the confusion counts when c is distilled
    cm = ConfusionMatrix(k)
    prob_min = int(np.ceil(threshold * 255))
    for s in tqdm(list(samples), desc="compare", disable=not progress):
        item = load_sample(s, num_classes=k)
        label = item["label"]
        if label is None:
            raise ValueError(f"{s.image}: no label; the comparison needs labelled images")
        path = item_path(cache_folder, s.key)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no teacher output for {s.key}; build the cache for this split first")
        t = read_item(path)
        if t["teacher_cls"].shape != label.shape:
            raise ValueError(f"{path}: teacher map {t['teacher_cls'].shape} vs label {label.shape}; stale cache")
        pred = np.asarray(predict_fn(item["image"]))
        cm.update(pred, label, where=str(s.image))
        valid = label != IGNORE_INDEX
        claims = t["teacher_prob"] >= prob_min
        for c in np.unique(t["teacher_region"]):
            c = int(c)
            if c == IGNORE_INDEX:
                continue
            m = (t["teacher_region"] == c) & valid
            g, before = label[m].astype(np.int64), pred[m].astype(np.int64)
            after = np.where(claims[m], c, np.where(before == c, 0, before))
            d = sim_delta.setdefault(c, np.zeros((k, k), np.int64))
            np.add.at(d, (g, after), 1)
            np.add.at(d, (g, before), -1)
            region_px[c] += int(m.sum())
            region_other[c] += int((g != c).sum())
            region_claimed[c] += int(((g != c) & claims[m]).sum())
        boxes = t["boxes"]
        for c in np.unique(boxes.classes):
            c = int(c)
            r = boxes.region(c) & valid
            g = (label == c) & r
            tc = (t["teacher_cls"] == c) & r
            sc = (pred == c) & r
            inter_t[c] += int((tc & g).sum())
            union_t[c] += int((tc | g).sum())
            inter_s[c] += int((sc & g).sum())
            union_s[c] += int((sc | g).sum())
            support[c] += int(g.sum())
            area[c] += int(r.sum())
            images[c] += 1
            nboxes[c] += int((boxes.classes == c).sum())
    scores = compute_scores(cm.counts, ontology, protocol)
    distill_gain = np.full(k, np.nan)
    for c, d in sim_delta.items():
        distill_gain[c] = compute_scores(cm.counts + d, ontology, protocol).composite - scores.composite
    with np.errstate(invalid="ignore", divide="ignore"):
        t_iou = np.where(union_t > 0, inter_t / np.maximum(union_t, 1), np.nan)
        s_iou = np.where(union_s > 0, inter_s / np.maximum(union_s, 1), np.nan)
        b_iou = np.where(area > 0, support / np.maximum(area, 1), np.nan)
    rows = [c for c in range(k) if images[c] > 0]
    df = pd.DataFrame({
        "name": [ontology.names[c] for c in rows],
        "category": [ontology.classes[c].category for c in rows],
        "teacher_iou": t_iou[rows], "student_iou": s_iou[rows], "gain": t_iou[rows] - s_iou[rows],
        "box_iou": b_iou[rows], "student_iou_full": np.asarray(scores.class_iou)[rows],
        "distill_gain": distill_gain[rows], "region_pixels": region_px[rows],
        "region_other": [region_claimed[c] / region_other[c] if region_other[c] else 0.0 for c in rows],
        "support_pixels": support[rows],
        "support_images": images[rows], "boxes": nboxes[rows]}, index=pd.Index(rows, name="class_id"))
    return df, scores


def select_classes(table: pd.DataFrame, rule: SelectionRule | None = None) -> list[int]:
    """Class ids passing ``rule`` (default :class:`SelectionRule`), largest gain first (ties by id)."""
    rule = rule or SelectionRule()
    col = "distill_gain" if rule.criterion == "distill" else "gain"
    ok = ((table["support_pixels"] >= rule.min_pixels) & (table["support_images"] >= rule.min_images)
          & table[col].notna() & (table[col] > rule.margin) & ~table.index.isin(list(rule.exclude)))
    chosen = table[ok].assign(_id=table.index[ok]).sort_values([col, "_id"], ascending=[False, True])
    ids = [int(c) for c in chosen.index]
    return ids if rule.max_classes is None else ids[: rule.max_classes]


def mean_iou(table: pd.DataFrame, column: str, classes: Sequence[int] | None = None) -> float:
    """Mean of ``column`` over ``classes`` (default: every compared class), NaN ignored."""
    sub = table[column] if classes is None else table.loc[[c for c in classes if c in table.index], column]
    vals = sub.to_numpy(dtype=float)
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def _none_if_nan(v: float) -> float | None:
    return None if np.isnan(v) else v


def with_selection(table: pd.DataFrame, classes: Sequence[int]) -> pd.DataFrame:
    """The table with a boolean ``selected`` column."""
    return table.assign(selected=table.index.isin(list(classes)))


def save_selection(out_dir: str | os.PathLike, table: pd.DataFrame, classes: Sequence[int],
                   rule: SelectionRule, *, checkpoint: str, teacher_checkpoint: str, teacher_cache: str,
                   extra: dict[str, Any] | None = None, ontology: Ontology | None = None) -> tuple[Path, Path]:
    """Write ``teacher_comparison.csv`` and ``selection.json`` under ``out_dir`` (atomically).

    selection.json: {"classes": [ids], "class_names": [...], "rule": {...}, "checkpoint": student,
    "teacher_checkpoint", "teacher_cache", "teacher_miou", "student_miou" (on compared classes), ...}.
    """
    ontology = ontology or Ontology.load()
    out = Path(out_dir)
    csv_path = atomic_write_text(out / "teacher_comparison.csv", with_selection(table, classes).to_csv())
    doc = {"classes": [int(c) for c in classes], "class_names": [ontology.names[int(c)] for c in classes],
           "rule": to_dict(rule), "checkpoint": checkpoint, "teacher_checkpoint": teacher_checkpoint,
           "teacher_cache": teacher_cache, "compared_classes": [int(c) for c in table.index],
           "teacher_miou": _none_if_nan(mean_iou(table, "teacher_iou")),
           "student_miou": _none_if_nan(mean_iou(table, "student_iou")),
           **(extra or {})}
    json_path = atomic_write_json(out / "selection.json", doc)
    return csv_path, json_path


def load_selection(path: str | os.PathLike) -> list[int]:
    """The class ids of a selection.json (raises naming the file when malformed)."""
    path = Path(path)
    doc = read_json(path)
    classes = doc.get("classes") if isinstance(doc, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, int) and 0 <= c < 255 for c in classes):
        raise ValueError(f"{path}: selection file needs a 'classes' list of class ids, got {classes!r}")
    return [int(c) for c in classes]
