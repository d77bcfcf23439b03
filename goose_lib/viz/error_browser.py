"""Interactive error browser over an evaluation result (ipywidgets).

:class:`EvalErrorBrowser` puts evaluation-level choices — inference mode, a class, the image
order — on top of :class:`goose_lib.viz.widgets.ErrorBrowser` (ground truth | prediction |
errors for one image, opacity, image slider). Picking a class keeps only the images where that
class is in the label or the prediction, orders them by that class's IoU (worst first) and
focuses the panels on it. Images are re-read from the dataset on demand; predictions and
per-image confusions come from :func:`goose_lib.infer.evaluate.evaluate` run with
``keep_predictions=True, keep_image_counts=True``.

Drive it from Python: set ``.mode.value`` / ``.klass.value`` / ``.order.value`` /
``.browser.index.value``; read ``.keys`` (images offered, in order) and ``.browser.image.value``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from goose_lib.infer.evaluate import EvalResult
from goose_lib.metrics import apply_protocol
from goose_lib.ontology import IGNORE_INDEX
from goose_lib.viz.widgets import NO_HIGHLIGHT, ErrorBrowser

ORDERS = ("worst first", "best first", "dataset order")


class _Items(Sequence):
    """Lazy ``{"image", "label", "pred", "key"}`` items for a list of keys (reads on access)."""

    def __init__(self, dataset: Sequence[Mapping[str, Any]], index_of: Mapping[str, int], keys: list[str],
                 predictions: Mapping[str, np.ndarray]) -> None:
        self.dataset, self.index_of, self.keys, self.predictions = dataset, index_of, keys, predictions

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        key = self.keys[i]
        item = self.dataset[self.index_of[key]]
        return {"image": item["image"], "label": item["label"], "pred": self.predictions[key], "key": key}


def _dataset_keys(dataset: Sequence[Mapping[str, Any]]) -> list[str]:
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return [s.key for s in samples]
    return [str(getattr(dataset[i].get("sample"), "key", None) or f"item{i:06d}") for i in range(len(dataset))]


class EvalErrorBrowser:
    """Browse an evaluation's errors by mode, class and image.

    Args:
        result: an :class:`EvalResult` with predictions and per-image counts kept.
        dataset: the dataset that was evaluated (same order; items are re-read on demand).
        mode: the initial mode (default: the first).
        max_side: width of the three-panel picture.

    Widgets: ``mode`` (Dropdown), ``klass`` (Dropdown: ``NO_HIGHLIGHT`` = all classes, else a
    class id present in some image), ``order`` (Dropdown of :data:`ORDERS`), ``info`` (HTML),
    ``browser`` (the current :class:`ErrorBrowser`, rebuilt when the selection changes);
    ``widget`` is the whole layout.
    """

    def __init__(self, result: EvalResult, dataset: Sequence[Mapping[str, Any]], *, mode: str | None = None,
                 max_side: int | None = 1200) -> None:
        if not result.predictions or not result.image_counts:
            raise ValueError("EvalErrorBrowser needs evaluate(..., keep_predictions=True, keep_image_counts=True)")
        self.result, self.dataset, self.max_side = result, dataset, max_side
        keys = _dataset_keys(dataset)
        self.index_of = {k: i for i, k in enumerate(keys)}
        first = next(iter(result.predictions))
        missing = [k for k in result.predictions[first] if k not in self.index_of]
        if missing:
            raise ValueError(f"{missing[0]}: evaluated image not in the dataset given to the browser")
        self.order_keys = [k for k in keys if k in result.predictions[first]]
        onto = result.ontology
        present = np.zeros(onto.num_classes, dtype=bool)
        for counts in result.image_counts[first].values():
            present |= (counts.sum(0) + counts.sum(1)) > 0
        options = [(f"{c} {onto.names[c]}", int(c)) for c in np.flatnonzero(present)]
        self.mode = W.Dropdown(options=list(result.predictions), value=mode or first, description="mode")
        self.klass = W.Dropdown(options=[("(all classes)", NO_HIGHLIGHT)] + options, value=NO_HIGHLIGHT,
                                description="class")
        self.order = W.Dropdown(options=list(ORDERS), value=ORDERS[0], description="order")
        self.info = W.HTML()
        self.keys: list[str] = []
        self.browser: ErrorBrowser | None = None
        self.widget = W.VBox([W.HBox([self.mode, self.klass, self.order]), self.info])
        self.widget.add_class("goose-eval-error-browser")
        for w in (self.mode, self.klass, self.order):
            w.observe(self._rebuild, names="value")
        self._rebuild()

    def _image_score(self, key: str) -> float:
        """Per-image score used for ordering: composite, or the chosen class's IoU."""
        counts = apply_protocol(self.result.image_counts[self.mode.value][key], self.result.protocol,
                                self.result.ontology)
        c = int(self.klass.value)
        if c == NO_HIGHLIGHT:
            rows = self.result.per_image
            sel = rows[(rows["mode"] == self.mode.value) & (rows["key"] == key)]["composite"]
            return float(sel.iloc[0]) if len(sel) else float("nan")
        union = counts[c].sum() + counts[:, c].sum() - counts[c, c]
        return float(counts[c, c] / union) if union else float("nan")

    def _select(self) -> list[str]:
        keys = list(self.order_keys)
        c = int(self.klass.value)
        if c != NO_HIGHLIGHT:
            counts = self.result.image_counts[self.mode.value]
            keys = [k for k in keys if counts[k][c].sum() + counts[k][:, c].sum() > 0]
        if self.order.value != "dataset order":
            scores = {k: self._image_score(k) for k in keys}
            sign = 1.0 if self.order.value == "worst first" else -1.0
            keys.sort(key=lambda k: (np.isnan(scores[k]), sign * np.nan_to_num(scores[k])))
        return keys

    def _rebuild(self, *_: Any) -> None:
        self.keys = self._select()
        c = int(self.klass.value)
        what = "all classes" if c == NO_HIGHLIGHT else f"class {c} {self.result.ontology.names[c]}"
        self.info.value = f"{len(self.keys)} image(s), {what}, mode <b>{self.mode.value}</b>, {self.order.value}"
        if not self.keys:
            self.browser = None
            self.widget.children = [self.widget.children[0], self.info]
            return
        items = _Items(self.dataset, self.index_of, self.keys, self.result.predictions[self.mode.value])
        self.browser = ErrorBrowser(items, self.result.ontology, max_side=self.max_side)
        if c != NO_HIGHLIGHT:
            self.browser.focus.value = c
        self.widget.children = [self.widget.children[0], self.info, self.browser.widget]

    def mask_lab(self, teacher: Any, **kwargs: Any) -> Any:
        """The image shown now in a :class:`goose_lib.viz.mask_lab.MaskLab` (the student panel
        shows this mode's prediction; the chosen class, if any, is the lab's class)."""
        if self.browser is None:
            raise ValueError("no image selected: the current class / mode offers none")
        return self.browser.mask_lab(teacher, **kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def worst_images_figure(result: EvalResult, dataset: Sequence[Mapping[str, Any]], keys: Sequence[str], *,
                        mode: str, alpha: float = 0.5, panel_width: float = 3.2) -> Figure:
    """One row per key: image | ground truth | prediction | errors (red), titled with the key and
    its composite. Built without pyplot (display it as a cell's last expression)."""
    from goose_lib.viz.overlay import overlay

    index_of = {k: i for i, k in enumerate(_dataset_keys(dataset))}
    rows = result.per_image[result.per_image["mode"] == mode].set_index("key")
    fig = Figure(figsize=(4 * panel_width, max(1, len(keys)) * panel_width * 0.62), layout="constrained")
    axes = fig.subplots(max(1, len(keys)), 4, squeeze=False)
    for r, key in enumerate(keys):
        item = dataset[index_of[key]]
        image, label = np.asarray(item["image"]), np.asarray(item["label"])
        pred = result.predictions[mode][key]
        wrong = (label != IGNORE_INDEX) & (pred != label)
        err = image.astype(np.float32) * 0.35
        err[wrong] = (1 - alpha) * image[wrong] + alpha * np.array([255.0, 0.0, 0.0])
        panels = (image, overlay(image, label, result.ontology, alpha=alpha),
                  overlay(image, pred, result.ontology, alpha=alpha), np.rint(err).astype(np.uint8))
        for c, (ax, pic, name) in enumerate(zip(axes[r], panels, ("image", "ground truth", "prediction",
                                                                  "errors"), strict=True)):
            ax.imshow(pic)
            ax.set_axis_off()
            ax.set_title(f"{key.split('/')[-1][-28:]}  composite {rows.loc[key, 'composite']:.3f}"
                         if c == 0 else name, fontsize=7)
    return fig


def boundary_error_figure(boundary: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Error rate against distance to the nearest label boundary, one line per mode, with the
    share of scored pixels per distance bin as bars (``EvalResult.boundary``)."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.add_subplot()
    first = boundary[boundary["mode"] == boundary["mode"].iloc[0]]
    labels = [f"<= {hi:g}" if np.isfinite(hi) else f"> {lo:g}" for lo, hi in zip(first["lo"], first["hi"],
                                                                               strict=True)]
    x = np.arange(len(first))
    share = first["pixels"].to_numpy(float) / max(1.0, float(first["pixels"].sum()))
    ax2 = ax.twinx()
    ax2.bar(x, share, color="0.85", zorder=0)
    ax2.set_ylabel("share of scored pixels")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    for mode, g in boundary.groupby("mode", sort=False):
        ax.plot(x, g["error_rate"].to_numpy(float), marker="o", label=str(mode))
    ax.set_xticks(x, labels)
    ax.set_xlabel("distance to the nearest ground-truth boundary (px)")
    ax.set_ylabel("error rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return fig
