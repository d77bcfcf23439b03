"""Figures for notebooks and reports: per-class comparisons, training curves, confusion matrices,
legends; and (re-exported from :mod:`goose_lib.viz.distributions`) class / category
distributions, box sizes and the rare-class gallery.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so nothing is
registered in pyplot's global figure list (no leak across thousands of figures, nothing shown
as a side effect). Jupyter displays a returned Figure like any other; :func:`save_figure`
writes one atomically.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from goose_lib.io import atomic_write_bytes
from goose_lib.ontology import Ontology
from goose_lib.viz.distributions import (
    box_size_distribution,
    boxes_frame,
    category_distribution,
    category_order,
    class_distribution,
    class_summary,
    rare_class_gallery,
    rarest_classes,
)

__all__ = [
    "box_size_distribution",
    "boxes_frame",
    "category_distribution",
    "category_order",
    "class_distribution",
    "class_summary",
    "confusion_heatmap",
    "figure_png",
    "legend_figure",
    "per_class_bars",
    "rare_class_gallery",
    "rarest_classes",
    "read_log",
    "save_figure",
    "training_curves",
]


PAGE_WIDTH_IN = 7.5  # per-class figures are this wide: a report page shows them unscaled, nothing cut off


def per_class_bars(df: pd.DataFrame, ontology: Ontology | None = None, *,
                   columns: Sequence[str] | None = None, ylabel: str = "",
                   title: str | None = None, sort_by: str | None = None,
                   ylim: tuple[float, float] | None = None) -> Figure:
    """Grouped horizontal bars comparing ``columns`` of ``df`` per class (e.g. teacher vs student IoU).

    One row per class, its name written horizontally on the left (never rotated, never cut off:
    the figure is :data:`PAGE_WIDTH_IN` wide and grows in height with the number of classes),
    first class on top; the legend sits above the plot.

    Args:
        df: one row per class; index = class ids (ints, named via ``ontology``) or names.
        columns: numeric columns to compare (default: all numeric columns). NaN -> no bar.
        ylabel, ylim: label and limits of the value axis (horizontal).
        sort_by: a column to sort classes by (descending); default: the index order.
    """
    cols = list(columns) if columns is not None else list(df.select_dtypes("number").columns)
    missing = [c for c in cols if c not in df.columns]
    if missing or not cols:
        raise ValueError(f"columns {missing or cols} not in the frame (has {list(df.columns)})")
    data = df.sort_values(sort_by, ascending=False) if sort_by else df
    if ontology is not None and pd.api.types.is_integer_dtype(data.index):
        names = [ontology.classes[int(i)].name for i in data.index]
    else:
        names = [str(i) for i in data.index]
    n, m = len(data), len(cols)
    fig = Figure(figsize=(PAGE_WIDTH_IN, 1.3 + (0.1 + 0.07 * m) * max(n, 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n)
    height = 0.8 / m
    for j, col in enumerate(cols):
        ax.barh(y - 0.4 + height * (j + 0.5), data[col].to_numpy(float), height, label=col)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_ylim(n - 0.4, -0.6)  # first class on top
    ax.set_xlabel(ylabel)
    if ylim is not None:
        ax.set_xlim(*ylim)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside upper center", ncols=min(m, 4), fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return fig


def read_log(log: pd.DataFrame | str | os.PathLike | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A training log as a DataFrame: a DataFrame, a list of dicts, or a JSON-lines file path.

    Blank lines are skipped; a malformed line raises ``ValueError`` naming the file and line.
    """
    if isinstance(log, pd.DataFrame):
        return log
    if isinstance(log, (str, os.PathLike)):
        path = Path(log)
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {i} is not valid JSON ({exc.msg})") from exc
        return pd.DataFrame(rows)
    return pd.DataFrame(list(log))


def training_curves(log: pd.DataFrame | str | os.PathLike | Sequence[Mapping[str, Any]], *,
                    x: str = "step", keys: Sequence[str | Sequence[str]] | None = None,
                    ncols: int = 3, log_y: Sequence[str] = ("lr",),
                    title: str | None = None) -> Figure:
    """One panel per metric of a training log against ``x``.

    Args:
        log: DataFrame / list of dicts / JSON-lines path (see :func:`read_log`); rows may hold
            different keys (train rows with ``loss``, validation rows with ``miou``): each
            curve uses the rows where its key is present.
        keys: panels; an entry is a key or a list of keys drawn together (e.g.
            ``["train_loss", "val_loss"]``). Default: every numeric column but ``x``.
        log_y: keys whose panels use a log y axis.
    """
    df = read_log(log)
    if x not in df.columns:
        raise ValueError(f"log has no {x!r} column (has {list(df.columns)})")
    if keys is None:
        keys = [c for c in df.select_dtypes("number").columns if c != x]
    panels = [[k] if isinstance(k, str) else list(k) for k in keys]
    absent = [k for p in panels for k in p if k not in df.columns]
    if absent:
        raise ValueError(f"log has no column(s) {absent} (has {list(df.columns)})")
    n = max(len(panels), 1)
    cols = min(ncols, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for key in panel:
            sub = df[[x, key]].dropna()
            ax.plot(sub[x], sub[key], marker="o" if len(sub) < 30 else None, markersize=3, label=key)
        if any(k in log_y for k in panel):
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_title(", ".join(panel), fontsize=9)
        ax.grid(alpha=0.3)
        if len(panel) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def confusion_heatmap(counts: np.ndarray, names: Sequence[str] | Ontology, *,
                      normalize: str | None = "true", classes: Sequence[int] | None = None,
                      title: str | None = None, annotate: bool | None = None) -> Figure:
    """A confusion-matrix heatmap (rows = ground truth, columns = prediction).

    Args:
        counts: (K, K) pixel counts, rows = label, columns = prediction.
        names: K class names, or an Ontology.
        normalize: ``"true"`` (rows sum to 1: recall), ``"pred"`` (columns sum to 1:
            precision), ``"all"`` or None (raw counts). Empty rows/columns stay 0.
        classes: ids to show (default: classes with any label or prediction pixel).
        annotate: print values in cells (default: when <= 20 classes are shown).
    """
    cm = np.asarray(counts, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"counts must be a square (K, K) matrix, got shape {cm.shape}")
    labels = names.names if isinstance(names, Ontology) else list(names)
    if len(labels) != cm.shape[0]:
        raise ValueError(f"{len(labels)} names for a {cm.shape[0]}-class matrix")
    if classes is None:
        classes = np.flatnonzero((cm.sum(0) + cm.sum(1)) > 0).tolist()
    idx = np.asarray(list(classes), dtype=np.int64)
    if normalize == "true":
        denom = cm.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        denom = cm.sum(axis=0, keepdims=True)
    elif normalize == "all":
        denom = np.array([[cm.sum()]])
    elif normalize is None:
        denom = np.ones((1, 1))
    else:
        raise ValueError(f"normalize must be 'true', 'pred', 'all' or None, got {normalize!r}")
    norm = np.divide(cm, denom, out=np.zeros_like(cm), where=denom > 0)
    shown = norm[np.ix_(idx, idx)]
    n = len(idx)
    side = min(max(4.0, 0.22 * n + 2.5), 18.0)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else None
    im = ax.imshow(shown, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label={"true": "recall (row-normalised)",
                                               "pred": "precision (column-normalised)",
                                               "all": "share of all pixels"}.get(normalize or "", "pixels"))
    fs = 8 if n <= 20 else 6
    ax.set_xticks(np.arange(n), [labels[i] for i in idx], rotation=90, fontsize=fs)
    ax.set_yticks(np.arange(n), [labels[i] for i in idx], fontsize=fs)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if annotate if annotate is not None else n <= 20:
        for (r, c), v in np.ndenumerate(shown):
            if v:
                ax.text(c, r, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                        fontsize=6, color="white" if v < 0.5 * (vmax or shown.max()) else "black")
    if title:
        ax.set_title(title)
    return fig


def legend_figure(ontology: Ontology, class_ids: Sequence[int], *, ncols: int = 4) -> Figure:
    """A stand-alone legend of class colours (for reports)."""
    fig = Figure(figsize=(2.2 * ncols, 0.25 * (-(-len(class_ids) // ncols)) + 0.3))
    handles = [Patch(facecolor=ontology.palette[c] / 255.0, edgecolor="black", label=ontology.classes[c].name)
               for c in class_ids]
    fig.legend(handles=handles, ncols=ncols, loc="center", frameon=False, fontsize=8)
    return fig


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_jpeg(fig: Figure, *, dpi: int = 100, quality: int = 85) -> bytes:
    """JPEG bytes of ``fig``: photo-like figures (image galleries) are ~5x smaller than PNG,
    which keeps report pages small."""
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=dpi, pil_kwargs={"quality": quality})
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Write ``fig`` atomically; the format follows the suffix (.png, .svg, .pdf)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())
