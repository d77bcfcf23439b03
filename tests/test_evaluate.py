"""One-pass evaluation over a split: known answers with fake models, and the real tiny student."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from infer_fakes import ColourModel

from goose_lib.config import DataConfig, EvalProtocol
from goose_lib.data.dataset import GooseDataset
from goose_lib.infer.evaluate import boundary_distance, evaluate
from goose_lib.infer.tta import TTAConfig, count_windows, predict
from goose_lib.metrics import ConfusionMatrix, compute_scores
from goose_lib.models.checkpoint import load_student

MODES = {"single": TTAConfig(), "ms": TTAConfig(mode="multiscale", scales=(0.75, 1.25), flip=True)}


class CountingDataset:
    """Wraps a dataset and counts item reads."""

    def __init__(self, inner: object) -> None:
        self.inner, self.reads = inner, 0
        self.ontology = inner.ontology

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict:
        if i >= len(self):
            raise IndexError(i)
        self.reads += 1
        return self.inner[i]


def test_boundary_distance_known_answer() -> None:
    label = np.zeros((3, 10), np.uint8)
    label[:, 5:] = 7
    d = boundary_distance(label)
    np.testing.assert_allclose(d[1], [4, 3, 2, 1, 0, 0, 1, 2, 3, 4])
    assert np.isinf(boundary_distance(np.zeros((4, 4), np.uint8))).all()


def test_one_pass_matches_independent_scoring(tiny_root: Path) -> None:
    model = ColourModel(image_size=32, num_classes=64)
    data = CountingDataset(GooseDataset(tiny_root, "val", config=DataConfig(limit=3)))
    res = evaluate(model, data, MODES, EvalProtocol("ignore_void"), boundary_bins=(1, 4, 16),
                   keep_predictions=True, progress=False)
    n = len(data)
    assert data.reads == n == res.reads  # each image read once for both modes
    assert len(res.per_image) == 2 * n and set(res.per_image["mode"]) == set(MODES)
    for name, cfg in MODES.items():
        cm = ConfusionMatrix(64)
        for i in range(n):
            item = data.inner[i]
            pred = predict(model, item["image"], cfg)
            np.testing.assert_array_equal(pred, res.predictions[name][item["sample"].key])
            cm.update(pred, item["label"])
        np.testing.assert_array_equal(res.counts[name], cm.counts)
        ref = compute_scores(cm.counts, data.ontology, EvalProtocol("ignore_void"))
        assert res.scores[name].composite == pytest.approx(ref.composite)
        # boundary bins: every scored pixel in exactly one bin; errors add up to the confusion's
        b = res.boundary[res.boundary["mode"] == name]
        scored = cm.counts[1:].sum()
        assert b["pixels"].sum() == scored
        assert b["errors"].sum() == scored - np.trace(cm.counts[1:, 1:])
        rows = res.per_image[res.per_image["mode"] == name]
        assert rows["pixels"].sum() == scored
        h, w = data.inner[0]["label"].shape
        assert rows["windows"].iloc[0] == count_windows(h, w, 32, cfg) == (1 if name == "single" else 10)


def test_perfect_model_scores_one_and_results_are_saved(tiny_root: Path, tmp_path: Path) -> None:
    model = ColourModel(image_size=32, num_classes=64)
    base = GooseDataset(tiny_root, "val", config=DataConfig(limit=2))
    # labels = the model's own single-scale prediction -> every score is exactly 1
    items = [{**base[i], "label": predict(model, base[i]["image"])} for i in range(len(base))]
    res = evaluate(model, items, {"single": TTAConfig()}, EvalProtocol("void_as_class"),
                   ontology=base.ontology, progress=False)
    s = res.scores["single"]
    assert s.miou == 1.0 and s.category_miou == 1.0 and s.composite == 1.0
    assert (res.per_image["accuracy"] == 1.0).all()
    paths = res.save(tmp_path / "ev")
    summary = json.loads(paths["summary"].read_text())
    assert summary["modes"]["single"]["composite"] == 1.0 and summary["protocol"] == "void_as_class"
    per_class = pd.read_csv(paths["per_class"], index_col="class_id")
    assert len(per_class) == 64 and "iou_single" in per_class
    assert len(pd.read_csv(paths["per_image"])) == 2


def test_unlabelled_item_is_an_error(tiny_root: Path) -> None:
    data = GooseDataset(tiny_root, "test", config=DataConfig(limit=1))
    with pytest.raises(ValueError, match="has no label"):
        evaluate(ColourModel(num_classes=64), data, {"single": TTAConfig()}, progress=False)


def test_real_tiny_student_single_equals_multiscale_one(tiny_root: Path, tiny_checkpoint: Path) -> None:
    model = load_student("untrained", device="cpu")
    assert "UNTRAINED" in model.description and model.num_classes == 64
    data = GooseDataset(tiny_root, "val", config=DataConfig(limit=1))
    res = evaluate(model, data, {"a": TTAConfig(), "b": TTAConfig(mode="multiscale", scales=(1.0,))},
                   keep_predictions=True, progress=False)
    key = data.samples[0].key
    np.testing.assert_array_equal(res.predictions["a"][key], res.predictions["b"][key])
    np.testing.assert_array_equal(res.counts["a"], res.counts["b"])


def test_modes_share_the_stretched_view(tiny_root: Path) -> None:
    model = ColourModel(image_size=32, num_classes=64)
    data = GooseDataset(tiny_root, "val", config=DataConfig(limit=2))
    modes = {"single": TTAConfig(flip=True), "ms": TTAConfig(mode="multiscale", scales=(1.0, 1.5), flip=True)}
    res = evaluate(model, data, modes, keep_predictions=True, progress=False)
    # per image: single = 2 views; ms = 2 x (1 + 4) windows, of which the 2 scale-1 views are shared
    assert model.windows == 2 * (2 + 10 - 2)
    for name, cfg in modes.items():
        for i in range(2):
            item = data[i]
            np.testing.assert_array_equal(res.predictions[name][item["sample"].key],
                                          predict(ColourModel(image_size=32, num_classes=64), item["image"], cfg))
