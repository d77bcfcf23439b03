"""The evaluation error browser, driven from Python (no kernel, no browser)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from infer_fakes import ColourModel

from goose_lib.config import DataConfig
from goose_lib.data.dataset import GooseDataset
from goose_lib.infer.evaluate import evaluate
from goose_lib.infer.tta import TTAConfig
from goose_lib.viz.error_browser import EvalErrorBrowser
from goose_lib.viz.overlay import from_png
from goose_lib.viz.widgets import NO_HIGHLIGHT


@pytest.fixture(scope="module")
def evaluated(tiny_root: Path) -> tuple:
    data = GooseDataset(tiny_root, "val", config=DataConfig(limit=3))
    modes = {"single": TTAConfig(), "ms": TTAConfig(mode="multiscale", scales=(0.5, 1.0))}
    res = evaluate(ColourModel(image_size=32, num_classes=64), data, modes, keep_predictions=True,
                   keep_image_counts=True, progress=False)
    return res, data


def test_browser_follows_mode_class_and_order(evaluated: tuple) -> None:
    res, data = evaluated
    b = EvalErrorBrowser(res, data, max_side=300)
    assert b.mode.value == "single" and len(b.keys) == 3
    rows = res.per_image[res.per_image["mode"] == "single"].set_index("key")["composite"]
    assert list(b.keys) == list(rows.sort_values().index)  # worst first
    first_png = b.browser.image.value
    assert from_png(first_png).shape[1] <= 300

    b.order.value = "dataset order"
    assert b.keys == [s.key for s in data.samples]
    b.order.value = "best first"
    assert list(b.keys) == list(rows.sort_values(ascending=False).index)

    b.mode.value = "ms"
    item = b.browser.item()
    np.testing.assert_array_equal(item["pred"], res.predictions["ms"][item["key"]])

    # pick a class present in only some images: the list shrinks and the panels focus on it
    counts = res.image_counts["ms"]
    per_class = {c: [k for k in counts if counts[k][c].sum() + counts[k][:, c].sum() > 0] for c in range(64)}
    c = next(c for c, ks in per_class.items() if 0 < len(ks) < 3 and c in [v for _, v in b.klass.options])
    b.klass.value = c
    assert sorted(b.keys) == sorted(per_class[c]) and b.browser.focus.value == c
    assert f"class {c}" in b.info.value
    before = b.browser.renders
    b.browser.alpha.value = 0.9
    assert b.browser.renders == before + 1
    b.klass.value = NO_HIGHLIGHT
    assert len(b.keys) == 3 and b.browser.focus.value == NO_HIGHLIGHT


def test_browser_needs_kept_predictions(evaluated: tuple, tiny_root: Path) -> None:
    res, data = evaluated
    bare = evaluate(ColourModel(image_size=32, num_classes=64), data, {"single": TTAConfig()}, progress=False)
    with pytest.raises(ValueError, match="keep_predictions"):
        EvalErrorBrowser(bare, data)
    other = GooseDataset(tiny_root, "train", config=DataConfig(limit=2))
    with pytest.raises(ValueError, match="not in the dataset"):
        EvalErrorBrowser(res, other)


def test_browser_opens_the_current_image_in_the_mask_lab(evaluated: tuple) -> None:
    from test_mask_lab import StubTeacher

    res, data = evaluated
    b = EvalErrorBrowser(res, data, max_side=300)
    b.mode.value = "ms"
    c = [v for _, v in b.klass.options][-1]
    b.klass.value = c  # rebuilds the browser on the images with class c
    b.browser.index.value = len(b.keys) - 1
    lab = b.mask_lab(StubTeacher(10.0), oracle=False)
    assert lab.key() == b.keys[-1] and lab.index.value == len(b.keys) - 1 and lab.klass.value == c
    np.testing.assert_array_equal(lab.prediction(), res.predictions["ms"][lab.key()])  # the mode's prediction
