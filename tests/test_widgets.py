"""The explorer and the error browser driven from Python: set widget values, decode the PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from goose_lib.ontology import IGNORE_INDEX, Ontology
from goose_lib.viz.overlay import fit, from_png, overlay
from goose_lib.viz.widgets import NO_HIGHLIGHT, DatasetExplorer, ErrorBrowser


@pytest.fixture(scope="module")
def onto() -> Ontology:
    return Ontology.load()


class CountingItems:
    """A lazy sequence of items that counts loads (like a GooseDataset)."""

    def __init__(self, items: list[dict]) -> None:
        self._items = items
        self.loads = 0

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict:
        self.loads += 1
        return self._items[i]


def _items() -> list[dict]:
    out = []
    for i in range(3):
        image = np.full((6, 8, 3), 40 * (i + 1), dtype=np.uint8)
        label = np.zeros((6, 8), dtype=np.uint8)
        label[:, 4:] = 5 + i
        label[0, 0] = IGNORE_INDEX
        out.append({"image": image, "label": label, "sample": f"train/s/{i}"})
    out.append({"image": np.full((6, 8, 3), 9, np.uint8), "label": None, "sample": "test/s/3"})
    return out


def test_explorer_initial_view_and_slider(onto: Ontology) -> None:
    items = CountingItems(_items())
    ex = DatasetExplorer(items, onto, alpha=0.5, max_side=None)
    first = from_png(ex.image.value)
    np.testing.assert_array_equal(first, overlay(items._items[0]["image"], items._items[0]["label"], onto))
    assert "train/s/0" in ex.caption.value and onto.names[5] in ex.caption.value
    ex.index.value = 2
    shown = from_png(ex.image.value)
    np.testing.assert_array_equal(shown, overlay(items._items[2]["image"], items._items[2]["label"], onto))
    assert not np.array_equal(shown, first)
    ex.alpha.value = 0.25  # same item: no reload
    loads = items.loads
    np.testing.assert_array_equal(from_png(ex.image.value),
                                  overlay(items._items[2]["image"], items._items[2]["label"], onto, alpha=0.25))
    assert items.loads == loads and ex.renders == 3
    ex.index.value = 3  # unlabelled: the plain image
    np.testing.assert_array_equal(from_png(ex.image.value), 9)


def test_explorer_class_toggle_and_highlight(onto: Ontology) -> None:
    items = _items()
    ex = DatasetExplorer(items, onto, alpha=1.0, dim=0.5, max_side=None)
    ex.classes.value = (5,)
    shown = from_png(ex.image.value)
    np.testing.assert_array_equal(shown[:, 4:], onto.palette[np.full((6, 4), 5)])
    np.testing.assert_array_equal(shown[1:, :4], 40)  # class 0 toggled off
    assert onto.names[0] not in ex.caption.value.split("</b>")[1]
    ex.select_all.click()
    assert len(ex.classes.value) == 64
    ex.highlight.value = 0
    shown = from_png(ex.image.value)
    np.testing.assert_array_equal(shown[:, 4:], 20)  # dimmed
    np.testing.assert_array_equal(shown[1:, :4], onto.palette[np.zeros((5, 4), int)])
    ex.highlight.value = NO_HIGHLIGHT
    ex.select_present.click()
    assert ex.classes.value == (0, 5)


def test_explorer_offered_classes_and_downscale(onto: Ontology) -> None:
    items = _items()
    ex = DatasetExplorer(items, onto, classes=[5, 6], max_side=4)
    assert [v for _, v in ex.classes.options] == [5, 6]
    assert ex.classes.value == (5, 6)
    small_image, small_label = fit(items[0]["image"], items[0]["label"], max_side=4)
    np.testing.assert_array_equal(from_png(ex.image.value),
                                  overlay(small_image, small_label, onto, classes=[5, 6]))
    assert from_png(ex.image.value).shape == (3, 4, 3)
    ex.select_present.click()
    assert ex.classes.value == (5,)
    with pytest.raises(ValueError, match="empty"):
        DatasetExplorer([], onto)


def test_explorer_on_synthetic_dataset(tiny_root: Path) -> None:
    from goose_lib.data.dataset import GooseDataset

    ds = GooseDataset(tiny_root, "val")
    ex = DatasetExplorer(ds, max_side=64)
    before = ex.image.value
    ex.index.value = 1
    assert ex.image.value != before
    assert ds.samples[1].key in ex.caption.value
    assert max(from_png(ex.image.value).shape[:2]) == 64


def test_error_browser_panels_and_focus(onto: Ontology) -> None:
    image = np.full((4, 4, 3), 100, np.uint8)
    label = np.array([[1, 1, 2, 2]] * 4, dtype=np.uint8)
    pred = label.copy()
    pred[0, 0] = 2  # 1 -> 2
    pred[3, 3] = 3  # 2 -> 3
    label[2, 2] = IGNORE_INDEX
    pred[2, 2] = 7  # ignored pixel: not an error
    eb = ErrorBrowser([{"image": image, "label": label, "pred": pred, "key": "val/s/x"}], onto,
                      alpha=1.0, dim=0.5, max_side=None)
    shown = from_png(eb.image.value)
    assert shown.shape == (4, 4 * 3 + 8, 3)
    err = shown[:, 16:]
    np.testing.assert_array_equal(err[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(err[3, 3], [255, 0, 0])
    np.testing.assert_array_equal(err[2, 2], 50)
    np.testing.assert_array_equal(shown[0, 4:8], 255)  # gap
    assert "pixel accuracy 0.867" in eb.caption.value  # 13 of 15 scored pixels
    assert f"{onto.names[1]} &rarr; {onto.names[2]}" in eb.caption.value
    eb.focus.value = 3
    assert eb.error_mask().sum() == 1 and eb.error_mask()[3, 3]
    err = from_png(eb.image.value)[:, 16:]
    np.testing.assert_array_equal(err[0, 0], 50)


def test_error_browser_downscales_panels(onto: Ontology) -> None:
    label = np.zeros((40, 60), np.uint8)
    pred = label.copy()
    pred[:20] = 3
    eb = ErrorBrowser([{"image": np.full((40, 60, 3), 80, np.uint8), "label": label, "pred": pred}], onto,
                      alpha=1.0, dim=0.5, max_side=98)
    shown = from_png(eb.image.value)
    assert shown.shape == (20, 30 * 3 + 8, 3)
    np.testing.assert_array_equal(shown[2, 68], [255, 0, 0])  # error panel, top half wrong
    np.testing.assert_array_equal(shown[18, 68], 40)
    assert "pixel accuracy 0.500" in eb.caption.value


def test_error_browser_rejects_mismatched_prediction(onto: Ontology) -> None:
    item = {"image": np.zeros((4, 4, 3), np.uint8), "label": np.zeros((4, 4), np.uint8),
            "pred": np.zeros((4, 5), np.uint8), "key": "val/s/bad"}
    with pytest.raises(ValueError, match="val/s/bad: prediction shape"):
        ErrorBrowser([item], onto)
