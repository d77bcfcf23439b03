"""Plots: the data drawn equals known answers; no pyplot state; figures are collectable."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from goose_lib.ontology import Ontology
from goose_lib.viz import plots


@pytest.fixture(scope="module")
def onto() -> Ontology:
    return Ontology.load()


def _bar_heights(ax) -> np.ndarray:
    return np.array([p.get_height() for p in ax.patches])


def test_category_order_groups_by_category(onto: Ontology) -> None:
    order = plots.category_order(onto)
    assert sorted(order) == list(range(64))
    cats = onto.class_to_category[order]
    assert np.all(np.diff(cats) >= 0)
    assert plots.category_order(onto, [5, 0]) == sorted([5, 0], key=lambda c: (onto.class_to_category[c], c))


def test_class_distribution_shares_colours_and_order(onto: Ontology) -> None:
    pix = np.zeros(64)
    pix[[1, 7, 12]] = [100, 300, 600]
    imgs = np.zeros(64)
    imgs[[1, 7, 12]] = [1, 2, 4]
    fig = plots.class_distribution(pix, onto, image_counts=imgs, num_images=4, title="t")
    ax_pix, ax_img = fig.axes
    order = plots.category_order(onto)
    np.testing.assert_allclose(_bar_heights(ax_pix), (pix / 1000)[order])
    np.testing.assert_allclose(_bar_heights(ax_img), (imgs / 4)[order])
    pos = order.index(12)
    np.testing.assert_allclose(ax_pix.patches[pos].get_facecolor()[:3], onto.palette[12] / 255)
    assert ax_pix.get_yscale() == "log"
    assert [t.get_text() for t in ax_pix.get_xticklabels()] == [onto.names[c] for c in order]
    grey = [t.get_text() for t in ax_pix.get_xticklabels() if t.get_color() == "0.6"]
    assert len(grey) == 61 and onto.names[7] not in grey
    with pytest.raises(ValueError, match="num_images"):
        plots.class_distribution(pix, onto, image_counts=imgs)
    with pytest.raises(ValueError, match=r"shape \(64,\)"):
        plots.class_distribution(pix[:10], onto)


def test_category_distribution_sums_classes(onto: Ontology) -> None:
    pix = np.arange(64, dtype=float)
    fig = plots.category_distribution(pix, onto, log=False)
    widths = np.array([p.get_width() for p in fig.axes[0].patches])
    expected = np.array([pix[onto.class_to_category == c].sum() for c in range(onto.num_categories)])
    np.testing.assert_allclose(widths, expected / pix.sum())
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(onto.categories)


def test_box_size_distribution(onto: Ontology) -> None:
    boxes = pd.DataFrame({"class_id": [3, 3, 3, 9, 20], "width": [4, 16, 64, 10, 0],
                          "height": [4, 16, 64, 40, 5]})
    fig = plots.box_size_distribution(boxes, onto, min_count=2)
    ax_box, ax_sc = fig.axes
    assert [t.get_text() for t in ax_box.get_yticklabels()] == [f"{onto.names[3]} (3)"]
    assert ax_box.get_xscale() == "log" and ax_sc.get_xscale() == ax_sc.get_yscale() == "log"
    assert any(np.allclose(line.get_xdata(), [16, 16]) for line in ax_box.lines)  # median side = 16
    points = np.concatenate([c.get_offsets() for c in ax_sc.collections])
    assert len(points) == 4  # the zero-width box is dropped
    with pytest.raises(ValueError, match="height"):
        plots.box_size_distribution(boxes.drop(columns="height"), onto)


def test_rarest_classes() -> None:
    pix = np.zeros(64)
    pix[[0, 3, 5, 9, 11]] = [1, 50, 10, 10, 1000]
    assert plots.rarest_classes(pix, 3) == [5, 9, 3]
    assert plots.rarest_classes(pix, 2, exclude=()) == [0, 5]


def test_rare_class_gallery_grid(onto: Ontology) -> None:
    img = np.full((8, 8, 3), 100, np.uint8)
    lab = np.full((8, 8), 4, np.uint8)
    crops = [{"class_id": 4, "image": img, "label": lab, "key": "train/s/a"},
             {"class_id": 4, "image": img, "label": lab, "key": "train/s/b"},
             {"class_id": 9, "image": img, "label": lab}]
    fig = plots.rare_class_gallery(crops, onto, alpha=1.0)
    assert len(fig.axes) == 4  # 2 classes x 2 columns
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_array_equal(shown[0, 0], onto.palette[4])
    assert fig.axes[0].get_ylabel() == f"4 {onto.names[4]}"
    assert not fig.axes[3].axison  # row of class 9 has one crop
    assert len(plots.rare_class_gallery([], onto).axes) == 1


def test_per_class_bars_values_and_nan(onto: Ontology) -> None:
    df = pd.DataFrame({"teacher": [0.5, np.nan, 0.9], "student": [0.4, 0.6, 0.1]}, index=[3, 7, 12])
    fig = plots.per_class_bars(df, onto, ylabel="IoU", sort_by="student")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [onto.names[7], onto.names[3], onto.names[12]]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # first class on top
    widths = np.array([p.get_width() for p in ax.patches])  # horizontal bars: the value is the width
    np.testing.assert_allclose(widths[:3], [np.nan, 0.5, 0.9])
    np.testing.assert_allclose(widths[3:], [0.6, 0.4, 0.1])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["teacher", "student"]
    assert ax.get_xlabel() == "IoU"
    with pytest.raises(ValueError, match="nope"):
        plots.per_class_bars(df, columns=["nope"])


@pytest.mark.parametrize("n", [3, 64])
def test_per_class_bars_labels_are_never_cut_off(onto: Ontology, tmp_path: Path, n: int) -> None:
    from PIL import Image

    longest = max(range(64), key=lambda i: len(onto.names[i]))
    ids = sorted({longest, *range(n)})[:n]
    df = pd.DataFrame({"student": np.linspace(1, 0, n), "baseline": np.full(n, 0.1)}, index=ids)
    fig = plots.per_class_bars(df, onto, columns=["student", "baseline"], ylabel="IoU", ylim=(0, 1))
    path = plots.save_figure(fig, tmp_path / "bars.png")
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()
    page = fig.bbox
    labels = fig.axes[0].get_yticklabels()
    assert [t.get_text() for t in labels] == [onto.names[i] for i in ids]
    for t in [*labels, *fig.legends[0].get_texts(), fig.axes[0].xaxis.label]:
        box = t.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, t.get_text()
    assert Image.open(path).size[0] == round(plots.PAGE_WIDTH_IN * 100)  # same width for 3 or 64 classes


def test_training_curves_from_jsonl(tmp_path: Path) -> None:
    rows = [{"step": i, "loss": 1.0 / (i + 1), "lr": 0.1 * 0.5 ** i} for i in range(5)]
    rows += [{"step": 4, "val_miou": 0.3}, {"step": 8, "val_miou": 0.5}]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    fig = plots.training_curves(log, keys=["loss", "lr", "val_miou"])
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.lines}
    np.testing.assert_allclose(by_title["val_miou"].lines[0].get_xydata(), [[4, 0.3], [8, 0.5]])
    np.testing.assert_allclose(by_title["loss"].lines[0].get_ydata(), [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert by_title["lr"].get_yscale() == "log"
    together = plots.training_curves(pd.DataFrame(rows), keys=[["loss", "val_miou"]])
    assert len(together.axes[0].lines) == 2
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2"):
        plots.training_curves(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="epoch"):
        plots.training_curves(rows, x="epoch")


def test_confusion_heatmap_normalisation() -> None:
    counts = np.zeros((5, 5), dtype=np.int64)
    counts[1, 1], counts[1, 3] = 3, 1
    counts[3, 3] = 2
    names = [f"c{i}" for i in range(5)]
    fig = plots.confusion_heatmap(counts, names)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.75, 0.25], [0.0, 1.0]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["c1", "c3"]
    pred = plots.confusion_heatmap(counts, names, normalize="pred", classes=[1, 3, 4])
    np.testing.assert_allclose(pred.axes[0].images[0].get_array(),
                               [[1.0, 1 / 3, 0.0], [0.0, 2 / 3, 0.0], [0.0, 0.0, 0.0]])
    raw = plots.confusion_heatmap(counts, names, normalize=None)
    np.testing.assert_allclose(raw.axes[0].images[0].get_array(), [[3, 1], [0, 2]])
    with pytest.raises(ValueError, match="normalize"):
        plots.confusion_heatmap(counts, names, normalize="rows")
    with pytest.raises(ValueError, match="names"):
        plots.confusion_heatmap(counts, names[:4])


def test_no_pyplot_state_and_figures_are_freed(onto: Ontology, tmp_path: Path) -> None:
    before = plt.get_fignums()
    refs = []
    for i in range(10):
        fig = plots.category_distribution(np.arange(64) + i, onto)
        refs.append(weakref.ref(fig))
        del fig
    gc.collect()
    assert plt.get_fignums() == before
    assert sum(r() is not None for r in refs) == 0
    out = plots.save_figure(plots.legend_figure(onto, [1, 2, 3]), tmp_path / "sub" / "legend.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.figure_png(Figure(figsize=(1, 1)))[:4] == b"\x89PNG"


def test_boxes_from_stats_array_and_class_summary(onto: Ontology) -> None:
    # SplitStats.boxes layout: [class_id, x0, y0, x1, y1, pixels, is_instance], x1/y1 exclusive
    arr = np.array([[3, 0, 0, 4, 2, 8, 0], [3, 10, 10, 20, 16, 60, 1], [9, 5, 5, 6, 6, 1, 0]])
    df = plots.boxes_frame(arr)
    assert df["width"].tolist() == [4, 10, 1] and df["height"].tolist() == [2, 6, 1]
    with pytest.raises(ValueError, match=r"\(N, >=5\)"):
        plots.boxes_frame(np.zeros((2, 3)))
    pix = np.zeros(64)
    pix[[3, 9]] = [30, 10]
    imgs = np.zeros(64)
    imgs[[3, 9]] = [2, 1]
    table = plots.class_summary(pix, onto, image_counts=imgs, num_images=4, boxes=arr)
    assert len(table) == 64 and table.loc[3, "name"] == onto.names[3]
    assert table.loc[3, "category"] == onto.categories[onto.class_to_category[3]]
    assert table.loc[3, "pixel_share"] == 0.75 and table.loc[9, "image_share"] == 0.25
    assert table.loc[3, "boxes"] == 2 and table.loc[3, "median_width"] == 7.0
    assert table.loc[5, "boxes"] == 0 and np.isnan(table.loc[5, "median_height"])
    fig = plots.box_size_distribution(arr, onto)
    assert len(fig.axes[0].get_yticklabels()) == 2
