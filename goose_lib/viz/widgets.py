"""Interactive browsers (ipywidgets) for JupyterLab: a dataset explorer and an error browser.

The logic lives in plain classes whose widgets are public attributes: a test (or a user) drives
them from Python by setting ``.value`` and reads the displayed picture back from
``.image.value`` (PNG bytes; :func:`goose_lib.viz.overlay.from_png` decodes it). The picture is
an ``ipywidgets.Image``, so executed notebooks keep the last view in their widget state and the
HTML reports show it without a kernel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as W
import numpy as np

from goose_lib.ontology import IGNORE_INDEX, Ontology
from goose_lib.viz.overlay import classes_present, fit, legend_html, overlay, to_png

NO_HIGHLIGHT = -1  # value of the highlight dropdown meaning "no class highlighted"


def _class_options(ontology: Ontology, ids: Sequence[int]) -> list[tuple[str, int]]:
    return [(f"{c} {ontology.classes[c].name}", int(c)) for c in ids]


class _Browser:
    """Shared parts: item index slider, opacity slider, PNG image, caption, one-item cache."""

    def __init__(self, items: Sequence[Mapping[str, Any]], ontology: Ontology, *, alpha: float,
                 index: int, max_side: int | None) -> None:
        if len(items) == 0:
            raise ValueError("nothing to browse: the item sequence is empty")
        self.items = items
        self.ontology = ontology
        self.max_side = max_side
        self.renders = 0  # how many times the picture was redrawn (tests, debugging)
        self._cache: tuple[int, Mapping[str, Any]] | None = None
        self.index = W.IntSlider(value=min(max(index, 0), len(items) - 1), min=0, max=len(items) - 1,
                                 description="image", continuous_update=False)
        self.alpha = W.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="opacity",
                                   continuous_update=False)
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.caption = W.HTML()
        # stable CSS hooks for browser tests and report styling
        for widget, css in ((self.index, "goose-index"), (self.alpha, "goose-alpha"),
                            (self.image, "goose-image"), (self.caption, "goose-caption")):
            widget.add_class(css)

    def item(self) -> Mapping[str, Any]:
        """The current item (loaded once per index)."""
        i = int(self.index.value)
        if self._cache is None or self._cache[0] != i:
            self._cache = (i, self.items[i])
        return self._cache[1]

    def key(self) -> str:
        sample = self.item().get("sample")
        return str(getattr(sample, "key", sample if sample is not None else f"item {self.index.value}"))

    def render(self, max_side: int | None = None) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def caption_html(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def refresh(self, *_: Any) -> None:
        """Redraw the picture and the caption from the current widget values."""
        self.image.value = to_png(self.render(max_side=self.max_side), max_side=self.max_side)
        self.caption.value = self.caption_html()
        self.renders += 1

    def _observe(self, *widgets: W.Widget) -> None:
        for w in widgets:
            w.observe(self.refresh, names="value")

    def mask_lab(self, teacher: Any, **kwargs: Any) -> Any:
        """The current item opened in a :class:`goose_lib.viz.mask_lab.MaskLab` (same items and
        index; the class highlighted / focused here, if any, is the lab's class)."""
        from goose_lib.viz.mask_lab import MaskLab

        chosen = getattr(self, "highlight", None) or getattr(self, "focus", None)
        if chosen is not None and chosen.value != NO_HIGHLIGHT and "klass" not in kwargs:
            offered = kwargs.get("classes")
            if offered is None or int(chosen.value) in offered:
                kwargs["klass"] = int(chosen.value)
        return MaskLab(self.items, teacher, ontology=self.ontology, index=int(self.index.value), **kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)  # type: ignore[attr-defined]


class DatasetExplorer(_Browser):
    """Pick an image, toggle classes, change the opacity, highlight one class.

    Args:
        dataset: a sequence of items ``{"image": HxWx3 uint8, "label": HxW ids | None,
            "sample": Sample?}`` (a ``GooseDataset`` without transform). Unlabelled items show
            the plain image.
        ontology: class colours and names (default: ``dataset.ontology`` or the packaged one).
        classes: ids offered in the class selector (default: all classes); all start selected.
        max_side: the displayed PNG is downscaled so its longer side is at most this.

    Widgets: ``index`` (IntSlider), ``classes`` (SelectMultiple of ids), ``alpha``
    (FloatSlider), ``highlight`` (Dropdown, ``NO_HIGHLIGHT`` = none), ``select_all`` /
    ``select_present`` (Buttons), ``image`` (Image, PNG), ``caption`` (HTML: key + legend of
    the shown classes present); ``widget`` is the whole layout. CSS classes for browsers:
    ``goose-explorer`` (layout), ``goose-index``, ``goose-alpha``, ``goose-image``, ``goose-caption``.
    """

    def __init__(self, dataset: Sequence[Mapping[str, Any]], ontology: Ontology | None = None, *,
                 classes: Sequence[int] | None = None, alpha: float = 0.5, index: int = 0,
                 dim: float = 0.35, max_side: int | None = 640) -> None:
        ontology = ontology or getattr(dataset, "ontology", None) or Ontology.load()
        super().__init__(dataset, ontology, alpha=alpha, index=index, max_side=max_side)
        self.dim = dim
        self._fitted: tuple | None = None  # ((index, max_side), image, label) at display size
        self._present: tuple[int, list[int]] | None = None  # (index, class ids in its label)
        ids = list(range(ontology.num_classes)) if classes is None else [int(c) for c in classes]
        options = _class_options(ontology, ids)
        self.classes = W.SelectMultiple(options=options, value=tuple(ids), rows=12, description="classes")
        self.highlight = W.Dropdown(options=[("(none)", NO_HIGHLIGHT)] + options, value=NO_HIGHLIGHT,
                                    description="highlight")
        self.select_all = W.Button(description="all classes", layout=W.Layout(width="auto"))
        self.select_present = W.Button(description="classes in image", layout=W.Layout(width="auto"))
        self.select_all.on_click(lambda _: self._set_classes([v for _, v in self.classes.options]))
        self.select_present.on_click(lambda _: self._set_classes(self.present()))
        controls = W.VBox([self.index, self.alpha, self.highlight, self.classes,
                           W.HBox([self.select_all, self.select_present])])
        self.widget = W.HBox([controls, W.VBox([self.image, self.caption])])
        self.widget.add_class("goose-explorer")
        self._observe(self.index, self.alpha, self.classes, self.highlight)
        self.refresh()

    def _set_classes(self, ids: Sequence[int]) -> None:
        offered = {v for _, v in self.classes.options}
        self.classes.value = tuple(c for c in ids if c in offered)

    def present(self) -> list[int]:
        """Class ids present in the current image's label (empty when unlabelled)."""
        i = int(self.index.value)
        if self._present is None or self._present[0] != i:
            label = self.item().get("label")
            ids = [] if label is None else classes_present(np.asarray(label), self.ontology.num_classes)
            self._present = (i, ids)
        return list(self._present[1])

    def render(self, max_side: int | None = None) -> np.ndarray:
        """The current view as HxWx3 uint8, downscaled to ``max_side`` (None: full resolution)."""
        key = (int(self.index.value), max_side)
        if self._fitted is None or self._fitted[0] != key:  # refit only when the image changes
            item = self.item()
            label = item.get("label")
            self._fitted = (key, *fit(np.asarray(item["image"]),
                                      None if label is None else np.asarray(label), max_side=max_side))
        _, image, label = self._fitted
        if label is None:
            return image.copy()
        hl = None if self.highlight.value == NO_HIGHLIGHT else int(self.highlight.value)
        return overlay(image, label, self.ontology, alpha=float(self.alpha.value),
                       classes=self.classes.value, highlight=hl, dim=self.dim)

    def caption_html(self) -> str:
        shown = set(self.classes.value)
        if self.highlight.value != NO_HIGHLIGHT:
            shown &= {int(self.highlight.value)}
        present = [c for c in self.present() if c in shown]
        h, w = np.asarray(self.item()["image"]).shape[:2]
        head = f"<b>{self.key()}</b> ({w}x{h}, {len(self.present())} classes)"
        return head + legend_html(self.ontology, present)


class ErrorBrowser(_Browser):
    """Ground truth, prediction and errors side by side, one item at a time.

    Args:
        items: a sequence of ``{"image": HxWx3 uint8, "label": HxW ids, "pred": HxW ids,
            "sample"?: Sample or "key"?: str}`` (it may load lazily in ``__getitem__``).
        ontology: class colours and names.
        classes: ids offered in the class filter (default: all).

    Widgets: ``index``, ``alpha``, ``focus`` (Dropdown: ``NO_HIGHLIGHT`` = all errors, else only
    errors where the label or the prediction is that class), ``image`` (three panels: ground
    truth overlay | prediction overlay | errors in red on the dimmed image), ``caption``.
    """

    ERROR_COLOUR = np.array([255, 0, 0], dtype=np.float32)

    def __init__(self, items: Sequence[Mapping[str, Any]], ontology: Ontology, *,
                 classes: Sequence[int] | None = None, alpha: float = 0.5, index: int = 0,
                 dim: float = 0.35, max_side: int | None = 1200) -> None:
        super().__init__(items, ontology, alpha=alpha, index=index, max_side=max_side)
        self.dim = dim
        ids = list(range(ontology.num_classes)) if classes is None else [int(c) for c in classes]
        self.focus = W.Dropdown(options=[("(all errors)", NO_HIGHLIGHT)] + _class_options(ontology, ids),
                                value=NO_HIGHLIGHT, description="class")
        self.widget = W.VBox([W.HBox([self.index, self.alpha, self.focus]), self.image, self.caption])
        self.widget.add_class("goose-error-browser")
        self._observe(self.index, self.alpha, self.focus)
        self.refresh()

    def key(self) -> str:
        item = self.item()
        return str(item["key"]) if "key" in item else super().key()

    def error_mask(self) -> np.ndarray:
        """HxW bool: scored pixels (label != IGNORE_INDEX) where prediction != label, limited to
        the focused class (label or prediction) when one is chosen."""
        item = self.item()
        label, pred = np.asarray(item["label"]), np.asarray(item["pred"])
        if label.shape != pred.shape:
            raise ValueError(f"{self.key()}: prediction shape {pred.shape} != label shape {label.shape}")
        wrong = (label != IGNORE_INDEX) & (pred != label)
        if self.focus.value != NO_HIGHLIGHT:
            c = int(self.focus.value)
            wrong &= (label == c) | (pred == c)
        return wrong

    def render(self, max_side: int | None = None) -> np.ndarray:
        """Three panels side by side, ``max_side`` wide at most in all (None: full resolution)."""
        wrong = self.error_mask()  # checks the shapes first
        item = self.item()
        panel = None if max_side is None else max(1, (max_side - 8) // 3)  # 2 gaps of 4 px
        image, label, pred, wrong = fit(np.asarray(item["image"]), np.asarray(item["label"]),
                                        np.asarray(item["pred"]), wrong.astype(np.uint8), max_side=panel)
        wrong = wrong.astype(bool)
        alpha = float(self.alpha.value)
        c = None if self.focus.value == NO_HIGHLIGHT else int(self.focus.value)
        gt = overlay(image, label, self.ontology, alpha=alpha, highlight=c, dim=self.dim)
        pr = overlay(image, pred, self.ontology, alpha=alpha, highlight=c, dim=self.dim)
        err = image.astype(np.float32) * self.dim
        err[wrong] = (1 - alpha) * image[wrong] + alpha * self.ERROR_COLOUR
        gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
        return np.concatenate([gt, gap, pr, gap, np.rint(err).astype(np.uint8)], axis=1)

    def caption_html(self) -> str:
        item = self.item()
        label, pred = np.asarray(item["label"]), np.asarray(item["pred"])
        scored = label != IGNORE_INDEX
        acc = float((pred[scored] == label[scored]).mean()) if scored.any() else float("nan")
        k = self.ontology.num_classes
        wrong = scored & (pred != label)
        pairs = np.bincount(label[wrong].astype(np.int64) * k + pred[wrong].astype(np.int64),
                            minlength=k * k)
        top = [i for i in np.argsort(pairs)[::-1][:5] if pairs[i] > 0]
        names = self.ontology.names
        conf = ", ".join(f"{names[i // k]} &rarr; {names[i % k]} ({pairs[i]} px)" for i in top)
        return (f"<b>{self.key()}</b>: pixel accuracy {acc:.3f}; ground truth | prediction | "
                f"errors (red)<br>top confusions: {conf or 'none'}")
