"""Figures describing a dataset split: class / category distributions, box sizes and a gallery
of the rarest classes, plus the per-class summary table behind them.

Inputs are plain arrays (e.g. the fields of ``goose_lib.data.stats.SplitStats``). Every function
returns a ``matplotlib.figure.Figure`` built without pyplot (see :mod:`goose_lib.viz.plots`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from goose_lib.ontology import Ontology
from goose_lib.viz.overlay import overlay


def _colour(ontology: Ontology, c: int) -> np.ndarray:
    return ontology.palette[c] / 255.0


def _as_counts(values: Sequence[float] | np.ndarray, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if np.any(arr < 0):
        raise ValueError(f"{name} has negative entries")
    return arr


def category_order(ontology: Ontology, class_ids: Iterable[int] | None = None) -> list[int]:
    """Class ids sorted by (category index, class id): the x order of the distribution plots."""
    ids = range(ontology.num_classes) if class_ids is None else class_ids
    return sorted((int(c) for c in ids), key=lambda c: (int(ontology.class_to_category[c]), c))


def _category_separators(ax: Any, ontology: Ontology, order: list[int]) -> None:
    """Vertical lines between category groups and the category names above the bars."""
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    cats = [int(ontology.class_to_category[c]) for c in order]
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or cats[i] != cats[start]:
            if i < len(order):
                ax.axvline(i - 0.5, color="0.6", linewidth=0.6, linestyle="--")
            ax.text((start + i - 1) / 2, 1.01, ontology.categories[cats[start]], transform=trans,
                    rotation=45, ha="left", va="bottom", fontsize=7)
            start = i


def _class_bars(ax: Any, values: np.ndarray, ontology: Ontology, order: list[int], ylabel: str,
                log: bool) -> None:
    x = np.arange(len(order))
    heights = values[order]
    ax.bar(x, heights, color=[_colour(ontology, c) for c in order], edgecolor="0.2", linewidth=0.4)
    if log and np.any(heights > 0):
        ax.set_yscale("log")
        ax.set_ylim(bottom=heights[heights > 0].min() / 2)
    ax.set_ylabel(ylabel)
    ax.set_xticks(x, [ontology.classes[c].name for c in order], rotation=90, fontsize=7)
    for tick, h in zip(ax.get_xticklabels(), heights):
        if h == 0:
            tick.set_color("0.6")  # absent from the split
    ax.set_xlim(-0.6, len(order) - 0.4)
    _category_separators(ax, ontology, order)


def class_distribution(pixel_counts: Sequence[float] | np.ndarray, ontology: Ontology, *,
                       image_counts: Sequence[float] | np.ndarray | None = None,
                       num_images: int | None = None, log: bool = True,
                       title: str | None = None) -> Figure:
    """Per-class pixel share (and image share) bars, coloured by class, grouped by category.

    Args:
        pixel_counts: (K,) labelled pixels per class. Plotted as share of all counted pixels.
        image_counts: (K,) number of images containing each class (optional second panel),
            plotted as share of ``num_images`` (required with it).
        log: log-scaled y axis (shares span several decades on GOOSE).
    Absent classes have no bar and a grey tick label.
    """
    k = ontology.num_classes
    pix = _as_counts(pixel_counts, k, "pixel_counts")
    panels = [(pix / max(pix.sum(), 1.0), "pixel share")]
    if image_counts is not None:
        if not num_images or num_images < 1:
            raise ValueError("num_images (>= 1) is required with image_counts")
        img = _as_counts(image_counts, k, "image_counts")
        panels.append((img / num_images, "image share"))
    order = category_order(ontology)
    fig = Figure(figsize=(16, 3.6 * len(panels) + 0.8), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (values, ylabel) in zip(axes, panels):
        _class_bars(ax, values, ontology, order, ylabel, log)
    if title:
        fig.suptitle(title)
    return fig


def category_distribution(pixel_counts: Sequence[float] | np.ndarray, ontology: Ontology, *,
                          log: bool = True, title: str | None = None) -> Figure:
    """Pixel share per category (horizontal bars; sums the classes of each category)."""
    pix = _as_counts(pixel_counts, ontology.num_classes, "pixel_counts")
    per_cat = np.bincount(ontology.class_to_category, weights=pix, minlength=ontology.num_categories)
    share = per_cat / max(per_cat.sum(), 1.0)
    # Colour each category by its most frequent class (falls back to its first class).
    colours = []
    for ci in range(ontology.num_categories):
        members = np.flatnonzero(ontology.class_to_category == ci)
        best = members[np.argmax(pix[members])] if members.size else 0
        colours.append(_colour(ontology, int(best)))
    fig = Figure(figsize=(7, 0.35 * ontology.num_categories + 1.2), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(ontology.num_categories)
    ax.barh(y, share, color=colours, edgecolor="0.2", linewidth=0.4)
    ax.set_yticks(y, list(ontology.categories))
    ax.invert_yaxis()
    if log and np.any(share > 0):
        ax.set_xscale("log")
    ax.set_xlabel("pixel share")
    for yi, s in zip(y, share):
        if s > 0:
            ax.text(s, yi, f" {100 * s:.2g}%", va="center", fontsize=7)
    ax.set_title(title or "category distribution")
    return fig


def boxes_frame(boxes: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """Boxes as a DataFrame with ``class_id``, ``width``, ``height`` (pixels).

    Accepts a DataFrame with ``class_id`` and either ``width``/``height`` or ``x0, y0, x1, y1``
    (x1/y1 exclusive), or an (N, >=5) array whose first columns are ``[class_id, x0, y0, x1, y1]``
    (the layout of ``SplitStats.boxes``).
    """
    if isinstance(boxes, pd.DataFrame):
        df = boxes
    else:
        arr = np.asarray(boxes)
        if arr.ndim != 2 or arr.shape[1] < 5:
            raise ValueError(f"boxes must be (N, >=5) [class_id, x0, y0, x1, y1, ...], got shape {arr.shape}")
        df = pd.DataFrame(arr[:, :5], columns=["class_id", "x0", "y0", "x1", "y1"])
    if {"width", "height"} - set(df.columns) and {"x0", "y0", "x1", "y1"} <= set(df.columns):
        df = df.assign(width=df["x1"] - df["x0"], height=df["y1"] - df["y0"])
    missing = {"class_id", "width", "height"} - set(df.columns)
    if missing:
        raise ValueError(f"boxes lacks column(s) {sorted(missing)}; has {list(df.columns)}")
    return df


def box_size_distribution(boxes: pd.DataFrame | np.ndarray, ontology: Ontology, *, min_count: int = 1,
                          title: str | None = None) -> Figure:
    """Box sizes per class: a box plot of sqrt(box area) per class (log axis) and a
    width-vs-height scatter (log-log), coloured by class.

    Args:
        boxes: anything :func:`boxes_frame` accepts (one row per box).
        min_count: classes with fewer boxes are left out of the box plot.
    """
    boxes = boxes_frame(boxes)
    fig = Figure(figsize=(14, 0.22 * ontology.num_classes + 2), layout="constrained")
    ax_box, ax_sc = fig.subplots(1, 2, width_ratios=[1.4, 1])
    df = boxes[(boxes["width"] > 0) & (boxes["height"] > 0)]
    if df.empty:
        for ax in (ax_box, ax_sc):
            ax.text(0.5, 0.5, "no boxes", ha="center", va="center", transform=ax.transAxes)
        return fig
    side = np.sqrt(df["width"].to_numpy(float) * df["height"].to_numpy(float))
    groups = pd.Series(side, index=df.index).groupby(df["class_id"].astype(int))
    counts = groups.size()
    order = category_order(ontology, [c for c, n in counts.items() if n >= min_count])
    data = [groups.get_group(c).to_numpy() for c in order]
    if data:
        bp = ax_box.boxplot(data, orientation="horizontal", patch_artist=True, widths=0.6,
                            flierprops={"markersize": 2})
        for patch, c in zip(bp["boxes"], order):
            patch.set_facecolor(_colour(ontology, c))
        ax_box.set_yticks(np.arange(1, len(order) + 1),
                          [f"{ontology.classes[c].name} ({counts[c]})" for c in order], fontsize=7)
        ax_box.invert_yaxis()
    ax_box.set_xscale("log")
    ax_box.set_xlabel("sqrt(box area) [px]")
    ax_box.set_title("box size per class (box count)")
    for c, g in df.groupby(df["class_id"].astype(int)):
        ax_sc.scatter(g["width"], g["height"], s=6, color=_colour(ontology, c), alpha=0.7,
                      edgecolors="none")
    ax_sc.set_xscale("log")
    ax_sc.set_yscale("log")
    ax_sc.set_xlabel("width [px]")
    ax_sc.set_ylabel("height [px]")
    ax_sc.set_title("box width vs height")
    if title:
        fig.suptitle(title)
    return fig


def rarest_classes(pixel_counts: Sequence[float] | np.ndarray, k: int, *,
                   exclude: Iterable[int] = (0,)) -> list[int]:
    """The ``k`` present classes with the fewest pixels (ties by id), rarest first.

    Absent classes (0 pixels) and ``exclude`` (default: class 0, undefined) are skipped.
    """
    pix = np.asarray(pixel_counts, dtype=np.float64)
    skip = {int(c) for c in exclude}
    present = [c for c in np.flatnonzero(pix > 0).tolist() if c not in skip]
    return sorted(present, key=lambda c: (pix[c], c))[:k]


def rare_class_gallery(crops: Sequence[Mapping[str, Any]], ontology: Ontology, *,
                       alpha: float = 0.5, title: str | None = None) -> Figure:
    """A grid of crops, one row per class, each crop with its class highlighted.

    Args:
        crops: dicts with ``class_id`` (int), ``image`` (hxwx3 uint8), ``label`` (hxw ids) and
            optionally ``key`` (shown under the crop); e.g. from
            :func:`goose_lib.viz.overlay.collect_class_crops`.
    """
    by_class: dict[int, list[Mapping[str, Any]]] = {}
    for crop in crops:
        by_class.setdefault(int(crop["class_id"]), []).append(crop)
    rows = list(by_class)
    ncols = max((len(v) for v in by_class.values()), default=1)
    fig = Figure(figsize=(2.6 * ncols + 1.5, 2.3 * max(len(rows), 1) + 0.4), layout="constrained")
    if not rows:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no instances of the selected classes", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, c in enumerate(rows):
        for j in range(ncols):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(by_class[c]):
                ax.set_axis_off()
                continue
            crop = by_class[c][j]
            ax.imshow(overlay(crop["image"], crop["label"], ontology, alpha=alpha, highlight=c))
            for spine in ax.spines.values():
                spine.set_edgecolor(_colour(ontology, c))
                spine.set_linewidth(3)
            if "key" in crop:
                ax.set_xlabel(str(crop["key"]).rsplit("/", 1)[-1][-28:], fontsize=6)
            if j == 0:
                ax.set_ylabel(f"{c} {ontology.classes[c].name}", fontsize=9)
    fig.suptitle(title or "rarest classes (highlighted, others dimmed)")
    return fig


def class_summary(pixel_counts: Sequence[float] | np.ndarray, ontology: Ontology, *,
                  image_counts: Sequence[float] | np.ndarray | None = None, num_images: int | None = None,
                  boxes: pd.DataFrame | np.ndarray | None = None) -> pd.DataFrame:
    """One row per class (index = class id): ``name``, ``category``, ``pixels``, ``pixel_share``,
    and when given ``images``, ``image_share`` (needs ``num_images``), ``boxes`` (count),
    ``median_width``, ``median_height`` (NaN without boxes)."""
    k = ontology.num_classes
    pix = _as_counts(pixel_counts, k, "pixel_counts")
    df = pd.DataFrame({"name": ontology.names,
                       "category": [ontology.categories[i] for i in ontology.class_to_category],
                       "pixels": pix.astype(np.int64), "pixel_share": pix / max(pix.sum(), 1.0)},
                      index=pd.RangeIndex(k, name="class_id"))
    if image_counts is not None:
        if not num_images or num_images < 1:
            raise ValueError("num_images (>= 1) is required with image_counts")
        img = _as_counts(image_counts, k, "image_counts")
        df["images"] = img.astype(np.int64)
        df["image_share"] = img / num_images
    if boxes is not None:
        b = boxes_frame(boxes)
        g = b.groupby(b["class_id"].astype(int))
        df["boxes"] = g.size().reindex(df.index, fill_value=0).astype(np.int64)
        df["median_width"] = g["width"].median().reindex(df.index)
        df["median_height"] = g["height"].median().reindex(df.index)
    return df
