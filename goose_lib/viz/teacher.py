"""Views of the teacher comparison: a gallery of teacher vs student masks and an interactive
class picker over the comparison table (the numbers themselves are :mod:`goose_lib.teacher.selection`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goose_lib.ontology import Ontology
from goose_lib.teacher.config import SelectionRule
from goose_lib.teacher.selection import save_selection, select_classes
from goose_lib.viz.overlay import overlay


def teacher_gallery(samples: Sequence[Any], cache_folder: str | os.PathLike,
                    predict_fn: Callable[[np.ndarray], np.ndarray], classes: Sequence[int], *,
                    ontology: Ontology | None = None, rows: int = 3, alpha: float = 0.6) -> Any:
    """A figure of ``rows`` images showing ``classes``: image | ground truth | teacher | student,
    each map restricted to ``classes`` (prompt boxes drawn on the teacher panel)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from goose_lib.data.decode import load_sample
    from goose_lib.teacher.cache import item_path, read_item

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
        col = "distill_gain" if rule.criterion == "distill" else "gain"
        opts = [(f"{int(c):2d} {row['name']}  ({col} {row[col]:+.3f})", int(c)) for c, row in table.iterrows()]
        self.margin = w.FloatSlider(value=rule.margin, min=-1.0, max=1.0, step=0.001 if col == "distill_gain" else 0.01,
                                    readout_format=".3f", description="margin")
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
