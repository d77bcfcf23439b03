"""Overlays against hand-computed pixel values; legends, crops and PNG round trips."""

from __future__ import annotations

import numpy as np
import pytest

from goose_lib.ontology import IGNORE_INDEX, Ontology
from goose_lib.viz import overlay as ov


@pytest.fixture(scope="module")
def onto() -> Ontology:
    return Ontology.load()


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    label = np.zeros((4, 6), dtype=np.uint8)
    label[:, 2:4] = 7
    label[:, 4:] = 12
    label[0, 0] = IGNORE_INDEX
    return image, label


def test_overlay_blends_palette_colour(onto: Ontology) -> None:
    image, label = _scene()
    out = ov.overlay(image, label, onto, alpha=0.25)
    for cid, col in ((0, 1), (7, 2), (12, 5)):
        expected = np.rint(0.75 * 100 + 0.25 * onto.palette[cid].astype(float)).astype(np.uint8)
        np.testing.assert_array_equal(out[1, col], expected)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # ignore keeps the image
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(image, 100)  # input untouched


def test_overlay_alpha_extremes(onto: Ontology) -> None:
    image, label = _scene()
    np.testing.assert_array_equal(ov.overlay(image, label, onto, alpha=0.0), image)
    full = ov.overlay(image, label, onto, alpha=1.0)
    np.testing.assert_array_equal(full[1:, :], onto.palette[label[1:, :]])


def test_overlay_class_subset(onto: Ontology) -> None:
    image, label = _scene()
    out = ov.overlay(image, label, onto, alpha=1.0, classes=[7])
    np.testing.assert_array_equal(out[:, 2:4], onto.palette[np.full((4, 2), 7)])
    np.testing.assert_array_equal(out[:, 4:], 100)
    np.testing.assert_array_equal(out[1:, :2], 100)


def test_overlay_highlight_dims_others(onto: Ontology) -> None:
    image, label = _scene()
    out = ov.overlay(image, label, onto, alpha=0.5, highlight=12, dim=0.5)
    np.testing.assert_array_equal(out[:, :4], 50)  # dimmed, not coloured (incl. ignore pixel)
    expected = np.rint(0.5 * 100 + 0.5 * onto.palette[12].astype(float)).astype(np.uint8)
    np.testing.assert_array_equal(out[2, 5], expected)
    # a highlight outside the shown subset colours nothing
    none = ov.overlay(image, label, onto, alpha=0.5, classes=[7], highlight=12, dim=0.5)
    np.testing.assert_array_equal(none, 50)


@pytest.mark.parametrize("kwargs, match", [
    ({"alpha": 1.5}, "alpha"),
    ({"highlight": 64}, "highlight"),
    ({"classes": [70]}, "outside"),
])
def test_overlay_rejects_bad_arguments(onto: Ontology, kwargs: dict, match: str) -> None:
    image, label = _scene()
    with pytest.raises(ValueError, match=match):
        ov.overlay(image, label, onto, **kwargs)


def test_overlay_rejects_bad_shapes_and_ids(onto: Ontology) -> None:
    image, label = _scene()
    with pytest.raises(ValueError, match="does not match"):
        ov.overlay(image, label[:, :5], onto)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        ov.overlay(image.astype(np.float32), label, onto)
    bad = label.copy()
    bad[0, 1] = 99
    with pytest.raises(ValueError, match=r"\[99\]"):
        ov.overlay(image, bad, onto)


def test_classes_present_and_legend(onto: Ontology) -> None:
    _, label = _scene()
    assert ov.classes_present(label, 64) == [0, 7, 12]
    assert ov.classes_present(label, 64, min_pixels=8) == [7, 12]
    handles = ov.legend_handles(onto, [7, 12])
    assert [h.get_label() for h in handles] == [f"7 {onto.classes[7].name}", f"12 {onto.classes[12].name}"]
    np.testing.assert_allclose(handles[1].get_facecolor()[:3], onto.palette[12] / 255.0)
    html = ov.legend_html(onto, [12])
    r, g, b = onto.palette[12]
    assert f"rgb({r},{g},{b})" in html and onto.classes[12].name in html


def test_overlay_figure_legend_lists_shown_classes(onto: Ontology) -> None:
    image, label = _scene()
    fig = ov.overlay_figure(image, label, onto, classes=[0, 12])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == [f"0 {onto.classes[0].name}", f"12 {onto.classes[12].name}"]


def test_png_round_trip_and_downscale() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ov.from_png(ov.to_png(img)), img)
    assert ov.from_png(ov.to_png(img, max_side=25)).shape == (15, 25, 3)


def test_crop_box_largest_region_with_padding() -> None:
    label = np.zeros((100, 100), dtype=np.uint8)
    label[10:12, 10:12] = 5  # small region
    label[40:60, 50:70] = 5  # largest region: 20x20
    assert ov.crop_box(label, 5, pad=0.5, min_side=1) == (30, 70, 40, 80)
    assert ov.crop_box(label, 5, pad=0.0, min_side=40) == (30, 70, 40, 80)
    assert ov.crop_box(label, 5, pad=2.0, min_side=1) == (0, 100, 10, 100)  # clipped
    assert ov.crop_box(label, 6) is None


def test_collect_class_crops_per_class_limit() -> None:
    image = np.arange(64 * 64 * 3, dtype=np.int64).reshape(64, 64, 3).astype(np.uint8)
    with_a = np.zeros((64, 64), dtype=np.uint8)
    with_a[8:16, 8:16] = 3
    with_b = np.zeros((64, 64), dtype=np.uint8)
    with_b[30:40, 30:40] = 4
    items = [{"image": image, "label": lab, "sample": f"s{i}"}
             for i, lab in enumerate([with_a, with_b, with_a, with_a])]
    items.insert(1, {"image": image, "label": None})  # unlabelled items are skipped
    crops = ov.collect_class_crops(items, [4, 3, 9], per_class=2, pad=0.0, max_side=256)
    assert [(c["class_id"], c["key"]) for c in crops] == [(4, "s1"), (3, "s0"), (3, "s2")]
    first = crops[1]  # 8x8 region, pad 0, min_side 32 -> rows/cols 0..28 (clipped at 0)
    assert first["label"].shape == (28, 28) and first["image"].shape == (28, 28, 3)
    np.testing.assert_array_equal(first["image"], image[0:28, 0:28])
    assert (first["label"] == 3).sum() == 64
    small = ov.collect_class_crops(items, [3], per_class=1, pad=0.0, max_side=4)
    assert max(small[0]["image"].shape[:2]) <= 4


def test_dataset_class_crops_on_synthetic(tiny_root) -> None:
    from goose_lib.data.dataset import GooseDataset
    from goose_lib.data.decode import read_label

    ds = GooseDataset(tiny_root, "val")
    counts = np.zeros(64, np.int64)
    for s in ds.samples:
        counts[np.unique(read_label(s.labelids))] += 1
    rare = [int(c) for c in np.argsort(counts) if counts[c] > 0][:2]
    crops = ov.dataset_class_crops(ds, rare, per_class=5, max_scan=None, seed=1)
    got = [c["class_id"] for c in crops]
    assert got == sorted(got, key=rare.index)
    for c in rare:
        assert got.count(c) == min(5, counts[c])  # one crop per image that holds it
    for crop in crops:
        assert (crop["label"] == crop["class_id"]).any() and crop["key"].startswith("val/")
    assert ov.dataset_class_crops(ds, rare, max_scan=0) == []


def test_fit_downscales_maps_with_nearest() -> None:
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, 4:] = 200
    label = np.repeat(np.array([[1, 1, 2, 2, 3, 3, 4, 4]], np.uint8), 4, axis=0)
    small, lab, none = ov.fit(image, label, None, max_side=4)
    assert small.shape == (2, 4, 3) and none is None
    assert set(np.unique(lab).tolist()) <= {1, 2, 3, 4} and lab.shape == (2, 4)  # no blended ids
    np.testing.assert_array_equal(lab[0], [1, 2, 3, 4])
    assert small[0, 0, 0] == 0 and small[0, 3, 0] == 200
    same = ov.fit(image, label, max_side=8)
    assert same[0] is image and same[1] is label
