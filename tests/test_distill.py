"""Self-distillation: the soft loss against a naive reference, label replacement (known answer),
teacher maps attached before augmentation, and the empty selection (training without distillation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from goose_lib.teacher.boxes import make_boxset
from goose_lib.teacher.cache import MANIFEST, item_path, write_item
from goose_lib.teacher.prompt import TeacherMaps
from goose_lib.train.distill import (
    DistillConfig,
    TeacherTargets,
    distill_loss,
    replace_labels,
    resolve_distill,
)


def _reference_bce(logits, prob, region, classes) -> torch.Tensor:
    """Naive reference: softmax probabilities, per-pixel loop over the selected pixels."""
    p = F.softmax(logits.double(), dim=1)
    vals = []
    for b, y, x in zip(*np.nonzero(np.isin(region.numpy(), classes))):
        c = int(region[b, y, x])
        t = float(prob[b, y, x]) / 255
        pc = p[b, c, y, x]
        vals.append(-(t * torch.log(pc) + (1 - t) * torch.log(1 - pc)))
    return torch.stack(vals).mean()


def _maps(seed=0, b=2, s=12, k=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, s, s, generator=g) * 3
    region = torch.randint(0, k, (b, s, s), generator=g).to(torch.uint8)
    region[:, :3] = 255  # outside every box
    prob = torch.randint(0, 256, (b, s, s), generator=g).to(torch.uint8)
    cls = torch.where(prob >= 128, region, torch.full_like(region, 255))
    return logits, cls, prob, region


def test_soft_loss_matches_the_naive_reference_and_has_gradients() -> None:
    logits, cls, prob, region = _maps()
    classes = [1, 3, 4]
    logits.requires_grad_(True)
    loss = distill_loss(logits, cls, prob, region, classes, mode="soft")
    torch.testing.assert_close(loss.double(), _reference_bce(logits.detach(), prob, region, classes),
                               rtol=1e-5, atol=1e-6)
    loss.backward()
    g = logits.grad
    assert g.abs().sum() > 0
    # pixels outside the boxes of the selected classes get no gradient
    outside = ~torch.from_numpy(np.isin(region.numpy(), classes))
    assert g.permute(0, 2, 3, 1)[outside].abs().max() == 0


def test_soft_loss_is_minimal_at_the_teacher_probability() -> None:
    target = torch.tensor(0.8)
    region = torch.full((1, 1, 1), 2, dtype=torch.uint8)
    prob = torch.full((1, 1, 1), 204, dtype=torch.uint8)  # 0.8
    def at(p):  # logits giving softmax prob p for class 2 among 3 classes
        lg = torch.zeros(1, 3, 1, 1)
        lg[0, 2] = np.log(2 * p / (1 - p))
        return distill_loss(lg, region, prob, region, [2])
    best = at(float(target))
    assert best < at(0.6) and best < at(0.95)
    assert float(best) == pytest.approx(-(0.8 * np.log(0.8) + 0.2 * np.log(0.2)), abs=1e-4)


def test_soft_loss_is_zero_without_selected_pixels_or_when_off() -> None:
    logits, cls, prob, region = _maps()
    assert float(distill_loss(logits, cls, prob, region, [], mode="soft")) == 0.0
    assert float(distill_loss(logits, cls, prob, torch.full_like(region, 255), [1], mode="soft")) == 0.0
    assert float(distill_loss(logits, cls, prob, region, [1], mode="replace")) == 0.0
    with pytest.raises(ValueError, match="teacher maps"):
        distill_loss(logits[..., :5], cls, prob, region, [1])


def test_replace_labels_known_answer() -> None:
    label = torch.tensor([[5, 5, 7, 7, 9]], dtype=torch.uint8)
    region = torch.tensor([[5, 5, 5, 255, 7]], dtype=torch.uint8)
    tcls = torch.tensor([[5, 255, 5, 255, 7]], dtype=torch.uint8)
    prob = torch.zeros_like(label)
    out = replace_labels(label, tcls, prob, region, [5])
    # teacher says 5 -> 5; labelled 5 but teacher disagrees -> ignore; class 7 is not selected
    assert out.tolist() == [[5, 255, 5, 7, 9]]
    assert replace_labels(label, tcls, prob, region, []).tolist() == label.tolist()
    assert out.dtype == label.dtype and label.tolist() == [[5, 5, 7, 7, 9]]


def _cache_with_one_item(tmp_path, key: str, h: int, w: int):
    folder = tmp_path / "cache"
    (folder).mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({"key": {"checkpoint_fingerprint": "fp"}, "key_hash": "h"}))
    cls = np.full((h, w), 255, np.uint8)
    cls[: h // 2] = 53
    bs = make_boxset(np.array([[0, 0, w, h // 2]], np.float32), [53], ["component"], h, w)
    write_item(item_path(folder, key), TeacherMaps(cls, (cls != 255).astype(np.uint8) * 200, cls.copy(), bs,
                                                   np.ones(1, np.float32)), "h", "sig")
    return folder, cls


class _S:
    key = "val/scn/img_front"
    image = "img_front.png"


def test_teacher_targets_attach_maps_before_augmentation(tmp_path) -> None:
    h, w = 40, 60
    folder, cls = _cache_with_one_item(tmp_path, _S.key, h, w)
    item = {"image": np.zeros((h, w, 3), np.uint8), "label": cls.copy(), "sample": _S()}
    out = TeacherTargets(folder)(item)
    assert (out["teacher_cls"] == cls).all() and out["teacher_prob"].max() == 200
    from goose_lib.data.augment import MAP_KEYS, GeometryConfig, TrainTransform

    assert {"teacher_cls", "teacher_prob", "teacher_region"} <= set(MAP_KEYS)
    tr = TrainTransform(28, GeometryConfig(flip_prob=1.0))
    aug = tr(out, np.random.default_rng(0))
    assert aug["teacher_cls"].shape == (28, 28)
    # the teacher map moves with the label: identical maps stay identical after the geometry
    assert torch.equal(aug["teacher_cls"].long(), torch.where(aug["label"].long() == 255, 255,
                                                              aug["label"].long()))
    with pytest.raises(ValueError, match="written by checkpoint"):
        TeacherTargets(folder, expected_fingerprint="other")


def test_teacher_targets_missing_and_stale_items(tmp_path) -> None:
    folder, _ = _cache_with_one_item(tmp_path, _S.key, 40, 60)

    class Other:
        key = "val/scn/none_front"
        image = "none_front.png"

    item = {"image": np.zeros((40, 60, 3), np.uint8), "sample": Other()}
    with pytest.raises(FileNotFoundError, match="none_front.npz"):
        TeacherTargets(folder)(item)
    out = TeacherTargets(folder, on_missing="empty")(item)
    assert (out["teacher_region"] == 255).all() and (out["teacher_prob"] == 0).all()
    with pytest.raises(ValueError, match="stale"):
        TeacherTargets(folder)({"image": np.zeros((41, 60, 3), np.uint8), "sample": _S()})


def test_empty_selection_means_training_without_distillation(tmp_path) -> None:
    sel = tmp_path / "selection.json"
    sel.write_text(json.dumps({"classes": [], "rule": {}}))
    cfg, msg = resolve_distill("soft", 1.0, (), str(sel), str(tmp_path))
    assert cfg.mode == "off" and not cfg.active and "WITHOUT distillation" in msg and str(sel) in msg
    sel.write_text(json.dumps({"classes": [53, 12]}))
    cfg, msg = resolve_distill("soft", 0.5, (), str(sel), str(tmp_path))
    assert cfg.active and cfg.classes == (53, 12) and cfg.weight == 0.5
    cfg, _ = resolve_distill("replace", 1.0, (7,), str(sel), str(tmp_path))
    assert cfg.classes == (7,)  # explicit classes win over the selection file
    with pytest.raises(ValueError, match="teacher cache"):
        resolve_distill("soft", 1.0, (7,), None, None)
    with pytest.raises(ValueError, match="weight"):
        DistillConfig(weight=-1)


def test_soft_loss_gradient_is_exact_and_stable_when_confident() -> None:
    """The closed-form backward against autograd's numerical gradient (float64), and finite
    values where the student is certain (p_c = 1 - 1e-30 in float32 would give log(0) naively)."""
    from goose_lib.train.distill import _SoftBCE

    g = torch.Generator().manual_seed(3)
    x = (torch.randn(7, 5, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    c = torch.randint(0, 5, (7,), generator=g)
    t = torch.rand(7, generator=g, dtype=torch.float64)
    w = (torch.rand(7, generator=g) > 0.3).to(torch.float64)
    assert torch.autograd.gradcheck(lambda x: _SoftBCE.apply(x, c, t, None), (x,))
    assert torch.autograd.gradcheck(lambda x: _SoftBCE.apply(x, c, t, w), (x,))
    confident = torch.tensor([[80.0, 0.0, 0.0], [0.0, -80.0, 0.0]], requires_grad=True)
    loss = _SoftBCE.apply(confident, torch.tensor([0, 1]), torch.tensor([0.8, 0.3]), None)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(confident.grad).all()
    # row 0: p_c = 1 - 2e^-80, log(1 - p_c) = log 2 - 80; row 1: p_c = e^-80 / (e^-80 + 2)
    row0 = -(0.8 * np.log1p(-2 * np.exp(-80.0)) + 0.2 * (np.log(2) - 80))
    row1 = -(0.3 * (-80 - np.log(2)) + 0.7 * 0.0)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


@pytest.mark.parametrize("dense_from", [0.0, 1.01])
def test_both_soft_loss_paths_match_the_reference(monkeypatch: pytest.MonkeyPatch, dense_from: float) -> None:
    """Every-pixel rows weighted by the selection (dense_from 0) and the selected rows only
    (dense_from > 1) give the naive reference's loss and the same gradients; logits 200 apart
    stay finite (exp underflows there: log(1 - p_c) must come from the other classes' LSE)."""
    from goose_lib.train import distill

    monkeypatch.setattr(distill, "DENSE_FROM", dense_from)
    logits, cls, prob, region = _maps(seed=5)
    classes = [1, 3, 4]
    logits.requires_grad_(True)
    loss = distill_loss(logits, cls, prob, region, classes)
    torch.testing.assert_close(loss.double(), _reference_bce(logits.detach(), prob, region, classes),
                               rtol=1e-5, atol=1e-6)
    loss.backward()
    ref_logits = logits.detach().double().requires_grad_(True)
    _reference_bce(ref_logits, prob, region, classes).backward()
    torch.testing.assert_close(logits.grad.double(), ref_logits.grad, rtol=1e-4, atol=1e-7)
    extreme = torch.zeros(1, 3, 1, 2)
    extreme[0, 0] = 200.0
    out = distill_loss(extreme, None, torch.full((1, 1, 2), 128, dtype=torch.uint8),
                       torch.tensor([[[0, 1]]], dtype=torch.uint8), [0, 1])
    assert torch.isfinite(out)
