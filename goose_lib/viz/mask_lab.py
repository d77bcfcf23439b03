"""The mask lab: draw boxes on an image and see what the SAM3 teacher returns for them.

Boxes are drawn, moved, relabelled and deleted in a ``jupyter_bbox_widget.BBoxWidget`` (an
anywidget: its JavaScript travels inside the widget state, so it works in JupyterLab without
network access; the static HTML report shows :meth:`MaskLab.figure` instead). Each edit of its
``bboxes`` trait decodes only the new or moved boxes from the image embedding kept for the
sample shown (:class:`goose_lib.teacher.interactive.BoxPrompter`: one encode per sample) and
redraws three panels: teacher masks | label | student prediction, boxes outlined, with one row
per box in ``table``: the IoU of the box's mask with the label inside the box and with the
student's prediction.

Drive it from Python like the other browsers: set ``.index.value`` / ``.klass.value``, set
boxes with :meth:`MaskLab.set_boxes` (or ``.boxes.bboxes`` directly, in the widget's pixel
frame of the displayed image), read ``.result`` / ``.ious`` / ``.image.value`` (PNG).
``accept()`` keeps the current sample's boxes and masks, ``export(folder)`` writes the
accepted samples (``goose_lib.teacher.curated``: a JSON/PNG folder that the comparison and
distillation read as an extra, hand-curated teacher target set).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from goose_lib.ontology import Ontology
from goose_lib.teacher.boxes import BoxSet, boxes_from_labels, make_boxset
from goose_lib.teacher.config import DEFAULT_BOXES, BoxParams
from goose_lib.teacher.interactive import BoxMasks, BoxPrompter, box_ious
from goose_lib.teacher.prompt import Teacher
from goose_lib.viz.overlay import fit, overlay, to_png

GAP = 4  # white pixels between panels


def _draw_boxes(panel: np.ndarray, xyxy: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Outline boxes (display-frame xyxy) on an HxWx3 uint8 panel, 1 px, in place."""
    h, w = panel.shape[:2]
    for (x1, y1, x2, y2), col in zip(np.round(xyxy).astype(int), colours, strict=True):
        x1, x2 = np.clip([x1, x2 - 1], 0, w - 1)
        y1, y2 = np.clip([y1, y2 - 1], 0, h - 1)
        panel[y1, x1:x2 + 1] = col
        panel[y2, x1:x2 + 1] = col
        panel[y1:y2 + 1, x1] = col
        panel[y1:y2 + 1, x2] = col
    return panel


class MaskLab:
    """Box prompts on one sample at a time (see module doc).

    Args:
        items: a sequence of ``{"image", "label"?, "instances"?, "pred"?, "sample"? or "key"?}``
            (a ``GooseDataset`` without transform, or the error browser's items).
        teacher: a ``teacher.prompt.Teacher`` (``load_teacher``) or a :class:`BoxPrompter`.
        predict: image -> HxW uint8 student prediction (once per sample); items with ``"pred"``
            use theirs; None and no ``"pred"``: the student panel stays blank.
        classes: class ids offered for boxes (default: all); ``klass``: the initial class.
        oracle: on each new sample, start from the oracle boxes of the chosen class.
        box_params: how oracle boxes are made (``teacher.boxes.boxes_from_labels``).
        max_side: longer side of each of the three panels; editor_side: of the box editor's picture.
        teacher_fingerprint: recorded in the export (``models.sam3.checkpoint_fingerprint``).

    Widgets: ``index``, ``klass`` (Dropdown), ``alpha``, ``oracle_button``, ``clear_button``,
    ``accept_button``, ``export_dir`` (Text), ``export_button``, ``boxes`` (BBoxWidget),
    ``image`` (three panels, PNG), ``table`` (HTML), ``caption`` (HTML); ``widget`` the layout.
    CSS hooks: ``goose-mask-lab``, ``goose-mask-lab-image``, ``goose-mask-lab-table``, ``goose-caption``.
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], teacher: Teacher | BoxPrompter,
                 predict: Callable[[np.ndarray], np.ndarray] | None = None, *, ontology: Ontology | None = None,
                 classes: Sequence[int] | None = None, klass: int | None = None, index: int = 0,
                 oracle: bool = True, box_params: BoxParams = DEFAULT_BOXES, alpha: float = 0.5,
                 max_side: int = 360, editor_side: int = 640, export_dir: str | os.PathLike = "mask_lab_export",
                 teacher_fingerprint: str = "") -> None:
        from jupyter_bbox_widget import BBoxWidget

        if len(items) == 0:
            raise ValueError("mask lab: the item sequence is empty")
        self.items, self.predict, self.box_params = items, predict, box_params
        self.prompter = teacher if isinstance(teacher, BoxPrompter) else BoxPrompter(teacher)
        self.ontology = ontology or getattr(items, "ontology", None) or Ontology.load()
        self.max_side, self.editor_side = max_side, editor_side
        self.oracle_on_new, self.teacher_fingerprint = oracle, teacher_fingerprint
        ids = list(range(self.ontology.num_classes)) if classes is None else [int(c) for c in classes]
        if not ids:
            raise ValueError("mask lab: no classes offered")
        self._names = {c: f"{c} {self.ontology.names[c]}" for c in ids}
        self._ids = {v: c for c, v in self._names.items()}
        self.accepted: dict[str, tuple[Any, list[np.ndarray]]] = {}
        self.result: BoxMasks | None = None
        self.ious = pd.DataFrame()
        self.last_ms = float("nan")  # decode + redraw time of the last edit
        self._item: tuple[int, Mapping[str, Any], np.ndarray | None] | None = None
        self._scale = (1.0, 1.0)  # image pixels per widget pixel (x, y)
        self._quiet = False
        self.index = W.IntSlider(value=min(max(index, 0), len(items) - 1), min=0, max=len(items) - 1,
                                 description="image", continuous_update=False)
        first = int(klass) if klass is not None else ids[0]
        if first not in self._names:
            raise ValueError(f"mask lab: class {first} is not among the offered classes {ids}")
        self.klass = W.Dropdown(options=[(v, c) for c, v in self._names.items()], value=first, description="class")
        self.alpha = W.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="opacity",
                                   continuous_update=False)
        self.oracle_button = W.Button(description="oracle boxes", layout=W.Layout(width="auto"))
        self.clear_button = W.Button(description="clear boxes", layout=W.Layout(width="auto"))
        self.accept_button = W.Button(description="accept masks", layout=W.Layout(width="auto"))
        self.export_dir = W.Text(value=str(export_dir), description="export to")
        self.export_button = W.Button(description="export", layout=W.Layout(width="auto"))
        palette = self.ontology.palette
        self.boxes = BBoxWidget(classes=list(self._names.values()), hide_buttons=True,
                                colors=["#" + bytes(palette[c].astype(np.uint8)).hex() for c in ids],
                                label=self._names[first])
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.table, self.caption = W.HTML(), W.HTML()
        for widget, css in ((self.image, "goose-mask-lab-image"), (self.table, "goose-mask-lab-table"),
                            (self.caption, "goose-caption"), (self.index, "goose-index")):
            widget.add_class(css)
        self.oracle_button.on_click(lambda _: self.load_oracle())
        self.clear_button.on_click(lambda _: self.set_boxes(np.zeros((0, 4)), []))
        self.accept_button.on_click(lambda _: self.accept())
        self.export_button.on_click(lambda _: self.export())
        self.index.observe(self._on_index, names="value")
        self.klass.observe(lambda ch: setattr(self.boxes, "label", self._names[int(ch["new"])]), names="value")
        self.alpha.observe(lambda _: self.refresh(), names="value")
        self.boxes.observe(self._on_boxes, names="bboxes")
        self.widget = W.VBox([
            W.HBox([self.index, self.klass, self.alpha]),
            W.HBox([self.oracle_button, self.clear_button, self.accept_button, self.export_dir, self.export_button]),
            W.HBox([self.boxes, W.VBox([self.image, self.table, self.caption])])])
        self.widget.add_class("goose-mask-lab")
        self._on_index()

    # --- the current sample -------------------------------------------------------------
    def item(self) -> Mapping[str, Any]:
        return self._current()[1]

    def key(self) -> str:
        item, i = self.item(), int(self.index.value)
        sample = item.get("sample")
        return str(getattr(sample, "key", None) or item.get("key") or f"item{i:06d}")

    def prediction(self) -> np.ndarray | None:
        return self._current()[2]

    def _current(self) -> tuple[int, Mapping[str, Any], np.ndarray | None]:
        i = int(self.index.value)
        if self._item is None or self._item[0] != i:
            item = self.items[i]
            pred = item.get("pred")
            if pred is None and self.predict is not None:
                pred = self.predict(np.asarray(item["image"]))
            self._item = (i, item, None if pred is None else np.asarray(pred))
        return self._item

    def _on_index(self, *_: Any) -> None:
        image = np.asarray(self.item()["image"])
        self.prompter.set_image(image, self.key())
        small = fit(image, max_side=self.editor_side)[0]
        h, w = image.shape[:2]
        self._scale = (w / small.shape[1], h / small.shape[0])
        self._quiet = True
        try:
            self.boxes.image_bytes = to_png(small)
        finally:
            self._quiet = False
        if self.oracle_on_new and self.item().get("label") is not None:
            self.load_oracle(replace_all=True)
        else:
            self.set_boxes(np.zeros((0, 4)), [])

    # --- boxes ----------------------------------------------------------------------------
    def boxset(self) -> BoxSet:
        """The widget's boxes in the image frame (clipped; empty ones dropped)."""
        h, w = np.asarray(self.item()["image"]).shape[:2]
        sx, sy = self._scale
        xyxy, classes = [], []
        for b in self.boxes.bboxes:
            x0, x1 = sorted((float(b["x"]), float(b["x"]) + float(b["width"])))
            y0, y1 = sorted((float(b["y"]), float(b["y"]) + float(b["height"])))
            xyxy.append([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
            classes.append(self._ids.get(str(b.get("label", "")), int(self.klass.value)))
        return make_boxset(np.array(xyxy, np.float32).reshape(-1, 4), classes, ["component"] * len(classes), h, w)

    def set_boxes(self, xyxy: np.ndarray, classes: Sequence[int]) -> None:
        """Replace the boxes (image-frame xyxy, one class id each); the masks follow."""
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        if len(classes) != len(xyxy):
            raise ValueError(f"mask lab: {len(xyxy)} boxes but {len(classes)} classes")
        unknown = sorted({int(c) for c in classes} - set(self._names))
        if unknown:
            raise ValueError(f"mask lab: classes {unknown} are not among the offered ones")
        sx, sy = self._scale
        new = [{"x": float(x1 / sx), "y": float(y1 / sy), "width": float((x2 - x1) / sx),
                "height": float((y2 - y1) / sy), "label": self._names[int(c)]}
               for (x1, y1, x2, y2), c in zip(xyxy, classes, strict=True)]
        if new == self.boxes.bboxes:
            self._on_boxes()  # no change event for equal lists, but the sample may be a new one
        else:
            self.boxes.bboxes = new

    def load_oracle(self, replace_all: bool = False) -> None:
        """The oracle boxes of the chosen class (``boxes_from_labels``), replacing that class's
        boxes (``replace_all``: every box)."""
        item, c = self.item(), int(self.klass.value)
        label = item.get("label")
        if label is None:
            raise ValueError(f"{self.key()}: no label, so no oracle boxes")
        oracle = boxes_from_labels(np.asarray(label), item.get("instances"), params=self.box_params, classes=[c])
        keep = BoxSet.empty(*np.asarray(label).shape) if replace_all else self.boxset()
        mine = keep.classes != c
        self.set_boxes(np.concatenate([keep.xyxy[mine], oracle.xyxy]),
                       [int(v) for v in keep.classes[mine]] + [int(v) for v in oracle.classes])

    def show_class(self, c: int) -> int:
        """Choose class ``c``, go to the first sample from the current one on (wrapping) whose
        label has it, and load its oracle boxes; returns that index (unchanged when none has)."""
        if int(c) not in self._names:
            raise ValueError(f"mask lab: class {c} is not among the offered classes")
        self.klass.value = int(c)
        n, start = len(self.items), int(self.index.value)
        for k in range(n):
            i = (start + k) % n
            label = self.items[i].get("label")
            if label is not None and (np.asarray(label) == int(c)).any():
                if i != int(self.index.value):
                    self.index.value = i  # loads the oracle boxes when ``oracle``
                if i == start or not self.oracle_on_new:
                    self.load_oracle(replace_all=True)
                return i
        return start

    def _on_boxes(self, *_: Any) -> None:
        if self._quiet:
            return
        t0 = time.perf_counter()
        item = self.item()
        self.result = self.prompter.masks(self.boxset())
        label = item.get("label")
        self.ious = box_ious(self.result, None if label is None else np.asarray(label), self.prediction())
        self.refresh()
        self.last_ms = (time.perf_counter() - t0) * 1000

    # --- drawing --------------------------------------------------------------------------
    def render(self, max_side: int | None = None) -> np.ndarray:
        """teacher masks | label | student as one HxWx3 uint8 picture (panels ``max_side`` wide)."""
        item = self.item()
        image = np.asarray(item["image"])
        label, pred = item.get("label"), self.prediction()
        maps = self.result.maps if self.result is not None else None
        teacher = maps.teacher_cls if maps is not None else np.full(image.shape[:2], 255, np.uint8)
        small, t, lab, pr = fit(image, teacher, None if label is None else np.asarray(label), pred,
                                max_side=max_side)
        boxes = maps.boxes if maps is not None else BoxSet.empty(*image.shape[:2])
        shown = sorted({int(c) for c in boxes.classes} | {int(self.klass.value)})
        alpha = float(self.alpha.value)
        panels = []
        for m in (t, lab, pr):
            p = small.copy() if m is None else overlay(small, m, self.ontology, alpha=alpha,
                                                        classes=None if m is t else shown)
            if m is None:
                p = (p * 0.35).astype(np.uint8)  # blank panel: nothing to show
            scale = np.array([small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]] * 2)
            panels.append(_draw_boxes(p, boxes.xyxy * scale, self.ontology.palette[boxes.classes] // 2 + 127))
        gap = np.full((small.shape[0], GAP, 3), 255, np.uint8)
        return np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)

    def refresh(self, *_: Any) -> None:
        self.image.value = to_png(self.render(max_side=self.max_side))
        self.table.value = self._table_html()
        n = len(self.result.maps.boxes) if self.result is not None else 0
        kept = self.accepted.get(self.key())
        done = f"{len(kept[0].boxes)} box(es) accepted" if kept else "not accepted"
        self.caption.value = (f"<b>{self.key()}</b>: teacher masks | label | student; {n} box(es), "
                              f"{self.prompter.teacher.calls['encode']} encode(s) so far; {done}; "
                              f"{len(self.accepted)} sample(s) accepted")

    def _table_html(self) -> str:
        if self.ious.empty:
            return "<i>no boxes: draw one on the image, or load the oracle boxes</i>"
        df = self.ious.assign(name=[self.ontology.names[c] for c in self.ious["class_id"]])
        cols = ["class_id", "name", "x1", "y1", "x2", "y2", "score", "mask_pixels", "iou_label", "iou_student"]
        return df[cols].to_html(index=True, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0)

    def figure(self, *, panel_width: float = 3.6) -> Figure:
        """Static snapshot for reports: the three panels with each box's IoUs (no pyplot)."""
        pic = self.render(max_side=None)
        h, w = np.asarray(self.item()["image"]).shape[:2]
        fig = Figure(figsize=(3 * panel_width, panel_width * h / w + 0.6), layout="constrained")
        axes = fig.subplots(1, 3)
        for k, (ax, name) in enumerate(zip(axes, ("teacher (box prompts)", "label", "student"), strict=True)):
            ax.imshow(pic[:, k * (w + GAP): k * (w + GAP) + w])
            ax.set_title(name, fontsize=8)
            ax.set_axis_off()
        for j, r in self.ious.iterrows():
            axes[0].text(r["x1"], r["y1"], f"{j}: {r['iou_label']:.2f}/{r['iou_student']:.2f}", fontsize=6,
                         color="white", va="bottom", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
        fig.suptitle(f"{self.key()}  (box: IoU vs label / vs student inside the box)", fontsize=8)
        return fig

    # --- keeping what was learnt ----------------------------------------------------------
    def accept(self) -> None:
        """Keep the current sample's boxes and their masks for :meth:`export` (again: replace)."""
        if self.result is None or len(self.result.maps.boxes) == 0:
            raise ValueError(f"{self.key()}: no boxes to accept")
        r = self.result
        self.accepted[self.key()] = (r.maps, [r.box_mask(j) for j in range(len(r.maps.boxes))])
        self.refresh()

    def reject(self) -> None:
        """Forget the current sample's accepted masks."""
        self.accepted.pop(self.key(), None)
        self.refresh()

    def export(self, folder: str | os.PathLike | None = None) -> Path:
        """Write the accepted samples (``teacher.curated.write_curated``); returns the folder."""
        from goose_lib.teacher.curated import write_curated

        if not self.accepted:
            raise ValueError("mask lab: nothing accepted yet; accept the masks of a sample first")
        out = write_curated(Path(folder if folder is not None else self.export_dir.value), self.accepted,
                            class_names=list(self.ontology.names), teacher_fingerprint=self.teacher_fingerprint,
                            teacher_config=self.prompter.teacher.cfg.result_key())
        self.caption.value += f"<br>exported {len(self.accepted)} sample(s) to {out}"
        return out

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
