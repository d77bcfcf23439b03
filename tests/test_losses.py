"""The loss options of issue 13 against known answers: the coarse-category auxiliary term, OHEM,
class-balanced cross-entropy; and that every option off gives today's loss exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goose_lib.ontology import Ontology
from goose_lib.train.config import TrainConfig
from goose_lib.train.losses import (
    balanced_class_weights,
    category_log_probs,
    category_loss,
    criterion_for,
    ohem_loss,
    segmentation_loss,
)


@pytest.fixture(scope="module")
def onto() -> Ontology:
    return Ontology.load()


def _batch(seed: int = 0, c: int = 64, shape=(2, 9, 11)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], c, *shape[1:]), generator=g) * 3
    label = torch.randint(0, c, shape, generator=g)
    label[torch.rand(shape, generator=g) < 0.1] = 255
    return logits, label


def test_zero_category_weight_is_todays_loss_exactly(onto: Ontology) -> None:
    logits, label = _batch()
    for smoothing in (0.0, 0.1):
        cfg = TrainConfig(label_smoothing=smoothing)
        today = segmentation_loss(logits, label, label_smoothing=smoothing)
        assert torch.equal(criterion_for(cfg, onto)(logits, label), today)
    with_cat = criterion_for(TrainConfig(category_loss_weight=0.5), onto)(logits, label)
    assert with_cat > today  # the weight is used


def test_category_probs_are_sums_of_class_probs(onto: Ontology) -> None:
    logits, _ = _batch(1)
    c2c = onto.class_to_category
    groups = [np.flatnonzero(c2c == g).tolist() for g in range(onto.num_categories)]
    cat = category_log_probs(logits, groups).exp()
    probs = logits.softmax(1)
    ref = torch.stack([probs[:, g].sum(1) for g in groups], 1)
    torch.testing.assert_close(cat, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cat.sum(1), torch.ones_like(cat[:, 0]))


def test_category_loss_known_answer_ignores_void(onto: Ontology) -> None:
    logits, label = _batch(2)
    c2c = torch.as_tensor(onto.class_to_category)
    groups = [np.flatnonzero(onto.class_to_category == g).tolist() for g in range(onto.num_categories)]
    got = category_loss(logits, label, c2c, groups, ignore_categories=(0,))
    cat_label = torch.where(label == 255, 255, c2c[label.clamp(max=63)])
    cat_label[cat_label == 0] = 255  # void category pixels are not trained on
    probs = logits.softmax(1)
    cat_probs = torch.stack([probs[:, g].sum(1) for g in groups], 1)
    ref = F.nll_loss(cat_probs.log(), cat_label, ignore_index=255)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    everything_void = torch.zeros_like(label)
    assert category_loss(logits, everything_void, c2c, groups) == 0


def test_ohem_keeps_the_hard_pixels_only() -> None:
    # 4 labelled pixels, two classes: true-class probabilities sigmoid(d) with d = 3, 1, -1, -3
    d = torch.tensor([3.0, 1.0, -1.0, -3.0])
    logits = torch.stack([d, torch.zeros(4)], 0)[None, :, None, :]  # (1, 2, 1, 4)
    label = torch.zeros((1, 1, 4), dtype=torch.long)
    pix = F.cross_entropy(logits, label, reduction="none")[0, 0]
    p = torch.sigmoid(d)  # 0.95, 0.73, 0.27, 0.05
    # thresh 0.5, min_kept 1: threshold = max(0.5, sorted p[1] = 0.27) -> pixels with p < 0.5
    assert ohem_loss(logits, label, thresh=0.5, min_kept=1) == pytest.approx(float(pix[2:].mean()))
    # min_kept 3: threshold = max(0.5, sorted p[3] = 0.95) -> p < 0.95: three pixels
    assert ohem_loss(logits, label, thresh=0.5, min_kept=3) == pytest.approx(float(pix[1:].mean()))
    # thresh 1: every pixel kept -> plain cross-entropy
    assert ohem_loss(logits, label, thresh=1.0, min_kept=1) == pytest.approx(float(pix.mean()))
    assert p[1] > 0.5  # (min_kept 3 kept a pixel above thresh)
    ignored = torch.full_like(label, 255)
    assert ohem_loss(logits, ignored, thresh=0.7, min_kept=10) == 0


def test_class_balanced_weights_and_loss_known_answer() -> None:
    counts = np.array([0, 100, 300, 600])
    w = balanced_class_weights(counts, 1.0)  # inverse frequency, pixel-weighted mean 1
    f = np.array([0.1, 0.3, 0.6])
    np.testing.assert_allclose(w, [0, *(1 / f / 3)])  # sum_c f_c / f_c = 3 classes -> divide by 3
    assert (w[1:] * f).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(balanced_class_weights(counts, 0.0), [0, 1, 1, 1])
    logits, label = _batch(3, c=4)
    wt = torch.tensor([0.0, 1.0, 2.0, 3.0])
    got = segmentation_loss(logits, label, class_weights=wt)
    assert got == pytest.approx(float(F.cross_entropy(logits, label, weight=wt, ignore_index=255)))
    cfg = TrainConfig(loss="class_balanced", balance_power=1.0)
    crit = criterion_for(cfg, None, counts)
    torch.testing.assert_close(crit.class_weights, torch.as_tensor(w, dtype=torch.float32))
    with pytest.raises(ValueError, match="pixel counts"):
        criterion_for(cfg)


def test_options_are_train_config_fields_off_by_default() -> None:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    new = {"loss", "ohem_thresh", "ohem_min_kept", "balance_power", "category_loss_weight",
           "copy_paste_classes", "copy_paste_prob", "copy_paste_count", "keep_best", "layer_decay"}
    assert new <= names
    cfg = TrainConfig()
    assert cfg.loss == "ce" and cfg.category_loss_weight == 0 and cfg.copy_paste_classes == () and cfg.keep_best == 0
    with pytest.raises(ValueError):
        TrainConfig(category_loss_weight=-1)


def test_layer_decay_and_new_options_reach_the_cli() -> None:
    from goose_lib.cli import build_parser
    from goose_lib.train.loop import config_from_params

    args = build_parser().parse_args(["train", "--out-dir", "x", "--layer-decay", "0.5", "--loss", "ohem",
                                      "--category-loss-weight", "0.4", "--copy-paste-classes", "3", "7",
                                      "--keep-best", "3"])
    cfg = config_from_params({k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})
    assert (cfg.layer_decay, cfg.loss, cfg.category_loss_weight, cfg.copy_paste_classes, cfg.keep_best) == \
        (0.5, "ohem", 0.4, (3, 7), 3)
