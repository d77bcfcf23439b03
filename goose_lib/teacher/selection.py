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

Selection (:class:`SelectionRule`): a class is distilled when it has enough support and the
teacher beats the student by more than ``margin``. An empty selection is valid (training then runs
without distillation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goose_lib.config import EvalProtocol, to_dict
from goose_lib.io import atomic_write_json, atomic_write_text, read_json
from goose_lib.ontology import IGNORE_INDEX, Ontology

COLUMNS = ("name", "category", "teacher_iou", "student_iou", "gain", "box_iou", "student_iou_full",
           "support_pixels", "support_images", "boxes", "selected")


@dataclass(frozen=True)
class SelectionRule:
    """Which classes are distilled: teacher_iou - student_iou > margin with enough support."""

    margin: float = 0.0  # the teacher must beat the student by MORE than this (IoU fraction, not %)
    min_pixels: int = 100  # support: ground-truth pixels of the class inside its boxes
    min_images: int = 1  # support: images with at least one box of the class
    max_classes: int | None = None  # keep the N largest gains; None = all that pass
    exclude: tuple[int, ...] = (0,)  # never distilled (0 = undefined)

    def __post_init__(self) -> None:
        if self.min_pixels < 0 or self.min_images < 0:
            raise ValueError("min_pixels and min_images must be >= 0")
        if self.max_classes is not None and self.max_classes < 0:
            raise ValueError(f"max_classes must be >= 0 or None, got {self.max_classes}")


def compare(samples: Sequence[Any], cache_folder: str | os.PathLike,
            predict_fn: Callable[[np.ndarray], np.ndarray], *, ontology: Ontology | None = None,
            protocol: EvalProtocol | None = None, progress: bool = True) -> tuple[pd.DataFrame, Any]:
    """Teacher vs student per class on labelled ``samples`` (``data.layout.Sample``).

    ``cache_folder``: the key folder of a teacher cache holding these samples;
    ``predict_fn``: image HxWx3 uint8 -> HxW uint8 student prediction (e.g.
    ``lambda im: infer.tta.predict(student, im, TTAConfig())``).
    Returns (table indexed by class id with :data:`COLUMNS` minus "selected", the student's
    full-image ``metrics.Scores``).
    """
    from tqdm.auto import tqdm

    from goose_lib.data.dataset import load_sample
    from goose_lib.metrics import ConfusionMatrix, compute_scores
    from goose_lib.teacher.cache import item_path, read_item

    ontology = ontology or Ontology.load()
    k = ontology.num_classes
    inter_t, union_t, inter_s, union_s, support, images, nboxes, area = (np.zeros(k, np.int64) for _ in range(8))
    cm = ConfusionMatrix(k)
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
    scores = compute_scores(cm.counts, ontology, protocol or EvalProtocol())
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
        "support_pixels": support[rows],
        "support_images": images[rows], "boxes": nboxes[rows]}, index=pd.Index(rows, name="class_id"))
    return df, scores


def select_classes(table: pd.DataFrame, rule: SelectionRule | None = None) -> list[int]:
    """Class ids passing ``rule`` (default :class:`SelectionRule`), largest gain first (ties by id)."""
    rule = rule or SelectionRule()
    ok = ((table["support_pixels"] >= rule.min_pixels) & (table["support_images"] >= rule.min_images)
          & table["gain"].notna() & (table["gain"] > rule.margin) & ~table.index.isin(list(rule.exclude)))
    chosen = table[ok].assign(_id=table.index[ok]).sort_values(["gain", "_id"], ascending=[False, True])
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


def student_predictor(checkpoint: str, *, sam3_checkpoint: str = "embedded", device: str = "auto",
                      seed: int = 0) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """(image HxWx3 uint8 -> HxW uint8 prediction (single-scale), description) for a student.

    ``checkpoint``: a student checkpoint or training run folder (``infer.evaluate.load_model``),
    or ``""`` for the UNTRAINED student (SAM3 encoder of ``sam3_checkpoint`` + a random decoder
    seeded by ``seed``): a reference point, labelled as such in the description.
    """
    import torch

    from goose_lib.infer.tta import TTAConfig, predict

    if checkpoint:
        from goose_lib.infer.evaluate import load_model

        model, label = load_model(checkpoint, device=device, seed=seed)
    else:
        from goose_lib.models.student import StudentConfig, build_student
        from goose_lib.paths import resolve_device

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_student(StudentConfig(checkpoint=sam3_checkpoint), device=resolve_device(device))
        label = f"UNTRAINED student (encoder of {sam3_checkpoint}, random decoder, seed {seed})"
    model.eval()
    cfg = TTAConfig()
    return (lambda image: predict(model, image, cfg)), label


def student_id(checkpoint: str, *, sam3_checkpoint: str = "embedded", seed: int = 0) -> str:
    """A stable id of the student behind :func:`student_predictor` (for teacher cache keys of
    predicted boxes): hashes of its weight files, or of the SAM3 checkpoint + seed if untrained."""
    from goose_lib.io import sha256_file, sha256_json

    if not checkpoint:
        from goose_lib.models.sam3 import checkpoint_fingerprint
        from goose_lib.paths import resolve_checkpoint

        return sha256_json({"untrained": checkpoint_fingerprint(resolve_checkpoint(sam3_checkpoint)), "seed": seed})
    path = Path(checkpoint)
    files = sorted(path.rglob("model.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no model.safetensors under the student checkpoint folder")
    return sha256_json({str(f.relative_to(path)): sha256_file(f) for f in files})


def teacher_gallery(samples: Sequence[Any], cache_folder: str | os.PathLike,
                    predict_fn: Callable[[np.ndarray], np.ndarray], classes: Sequence[int], *,
                    ontology: Ontology | None = None, rows: int = 3, alpha: float = 0.6) -> Any:
    """A figure of ``rows`` images showing ``classes``: image | ground truth | teacher | student,
    each map restricted to ``classes`` (prompt boxes drawn on the teacher panel)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from goose_lib.data.dataset import load_sample
    from goose_lib.teacher.cache import item_path, read_item
    from goose_lib.viz.overlay import overlay

    ontology = ontology or Ontology.load()
    wanted = [int(c) for c in classes]
    picked = []
    for s in samples:
        if len(picked) >= rows:
            break
        t = read_item(item_path(cache_folder, s.key))
        if np.isin(t["boxes"].classes, wanted).any():
            picked.append((s, t))
    fig = Figure(figsize=(12, 2.6 * max(len(picked), 1)))
    if not picked:
        fig.text(0.5, 0.5, f"no image with a box of classes {wanted}", ha="center")
        return fig
    axes = fig.subplots(len(picked), 4, squeeze=False)
    for r, (s, t) in enumerate(picked):
        item = load_sample(s)
        img, lab = item["image"], item["label"]
        panels = [("image", img), ("ground truth", overlay(img, lab, ontology, alpha=alpha, classes=wanted)),
                  ("teacher", overlay(img, t["teacher_cls"], ontology, alpha=alpha, classes=wanted)),
                  ("student", overlay(img, predict_fn(img), ontology, alpha=alpha, classes=wanted))]
        for a, (title, pic) in zip(axes[r], panels):
            a.imshow(pic)
            a.set_axis_off()
            name = s.key.rsplit("/", 1)[-1]
            a.set_title(f"{name[:18]}…{name[-14:]}" if title == "image" and len(name) > 34 else
                        (name if title == "image" else title), fontsize=7)
        for (x1, y1, x2, y2), c in zip(t["boxes"].xyxy, t["boxes"].classes):
            if int(c) in wanted:
                col = ontology.palette[int(c)] / 255.0
                axes[r][2].add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1, ec=col))
    fig.tight_layout()
    return fig


class ClassPicker:
    """Interactive class selection (ipywidgets): a margin slider and minimum-support box that
    re-apply :func:`select_classes`, a multi-select to adjust the result by hand, and a summary.

    Drivable from Python: set ``margin.value`` / ``min_pixels.value`` / ``choice.value`` and read
    :attr:`classes`; :meth:`save` writes the selection JSON. ``widget`` is the box to display.
    """

    def __init__(self, table: pd.DataFrame, rule: SelectionRule | None = None,
                 ontology: Ontology | None = None) -> None:
        import ipywidgets as w

        self.table = table
        self.rule = rule = rule or SelectionRule()
        self.ontology = ontology or Ontology.load()
        opts = [(f"{int(c):2d} {row['name']}  (gain {row['gain']:+.2f})", int(c)) for c, row in table.iterrows()]
        self.margin = w.FloatSlider(value=rule.margin, min=-1.0, max=1.0, step=0.01, description="margin")
        self.min_pixels = w.IntText(value=rule.min_pixels, description="min pixels")
        self.choice = w.SelectMultiple(options=opts, rows=min(12, max(len(opts), 1)), description="classes")
        self.summary = w.HTML()
        self.margin.observe(self._on_rule, names="value")
        self.min_pixels.observe(self._on_rule, names="value")
        self.choice.observe(self._on_choice, names="value")
        self.widget = w.VBox([w.HBox([self.margin, self.min_pixels]), self.choice, self.summary])
        self._on_rule()

    def current_rule(self) -> SelectionRule:
        from dataclasses import replace

        return replace(self.rule, margin=float(self.margin.value), min_pixels=int(self.min_pixels.value))

    def _on_rule(self, _change: Any = None) -> None:
        self.choice.value = tuple(select_classes(self.table, self.current_rule()))
        self._on_choice()

    def _on_choice(self, _change: Any = None) -> None:
        names = [self.ontology.names[c] for c in self.classes]
        self.summary.value = f"<b>{len(names)} classes selected</b>: {', '.join(names) or '(none)'}"

    @property
    def classes(self) -> list[int]:
        return [int(c) for c in self.choice.value]

    def save(self, out_dir: str | os.PathLike, **kwargs: Any) -> Path:
        """selection.json (+ csv) of the current choice; kwargs as :func:`save_selection`."""
        return save_selection(out_dir, self.table, self.classes, self.current_rule(), **kwargs)[1]
