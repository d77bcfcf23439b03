"""The distillation collapse of the paper ablation, reduced to its mechanism: a selected class whose
box covers another class, with a teacher that fills the box. The comparison must see the damage
(the class is not selected by what distillation would change) and training must not erase the
covered class (its label is protected from the box's targets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from goose_lib.ontology import Ontology
from goose_lib.teacher.boxes import boxes_from_labels
from goose_lib.teacher.cache import item_path, write_item
from goose_lib.teacher.config import SelectionRule
from goose_lib.teacher.prompt import TeacherMaps
from goose_lib.teacher.selection import compare, select_classes
from goose_lib.train.distill import distill_loss, replace_labels
from goose_lib.train.losses import segmentation_loss

ONT = Ontology.load()
A, B, C = ONT.index("high_grass"), ONT.index("asphalt"), ONT.index("sky")  # three categories


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40x40: A is a frame around the left half (its box: rows 0-39, cols 0-19, 800 px); B a
    30x30 square (rows 5-34, cols 5-34: a larger box, 900 px) whose left half lies in A's box;
    C the rest. The teacher of A fills A's box (the smallest box there: A's targets cover B)."""
    label = np.full((40, 40), C, np.uint8)
    label[:, :20] = A
    label[5:35, 5:35] = B
    region = np.full((40, 40), 255, np.uint8)
    prob = np.zeros((40, 40), np.uint8)
    region[label == B] = B
    prob[label == B] = 255
    region[:, :20] = A  # A's box is smaller than B's: A's targets there
    prob[:, :20] = 255  # ... and its mask fills the box
    region[label == C] = C
    prob[label == C] = 255
    return label, region, prob


def _root(tmp: Path, label: np.ndarray) -> Path:
    from goose_lib.data.synthetic import write_mapping_csv

    stem = "scene_0000_1650000000000000000"
    (tmp / "images/val/scene").mkdir(parents=True)
    (tmp / "labels/val/scene").mkdir(parents=True)
    Image.fromarray(np.full((*label.shape, 3), 128, np.uint8)).save(tmp / f"images/val/scene/{stem}_windshield_vis.png")
    Image.fromarray(label).save(tmp / f"labels/val/scene/{stem}_labelids.png")
    write_mapping_csv(tmp)
    return tmp


def test_the_comparison_sees_a_box_that_swallows_its_neighbour(tmp_path: Path) -> None:
    from goose_lib.data.layout import index_split

    label, region, prob = _scene()
    samples = index_split(_root(tmp_path / "root", label), "val", use_cache=False)
    cls = np.where(prob >= 128, region, 255).astype(np.uint8)
    boxes = boxes_from_labels(label)
    write_item(item_path(tmp_path / "cache", samples[0].key), TeacherMaps(cls, prob, region, boxes,
                                                                          np.ones(len(boxes), np.float32)), "h", "s")
    student_map = np.where(label == A, 0, label).astype(np.uint8)  # the student misses A entirely
    table, _ = compare(samples, tmp_path / "cache", lambda im: student_map, progress=False)
    a = table.loc[A]
    # inside A's box the box-filling teacher beats the student on A (350 / 800 vs 0) ...
    assert a["teacher_iou"] == pytest.approx(350 / 800) and a["student_iou"] == 0 and a["gain"] > 0
    # ... but its targets claim 450 of B's 900 pixels: B's IoU 1 -> 0.5 outweighs A's 0 -> 0.44
    assert a["region_pixels"] == 800 and a["region_other"] == pytest.approx(1.0)
    assert a["distill_gain"] < 0
    assert table.loc[B, "distill_gain"] == pytest.approx(0) and table.loc[C, "distill_gain"] == pytest.approx(0)
    assert select_classes(table, SelectionRule(criterion="box", min_pixels=1)) == [A]  # the old rule picks it
    assert select_classes(table, SelectionRule(min_pixels=1)) == []  # the default, "distill", does not


def _fit(label: np.ndarray, region: np.ndarray, prob: np.ndarray, *, protect: bool, steps: int = 300) -> np.ndarray:
    """Free per-pixel logits trained on cross-entropy + soft distillation of A (weight 1): the
    student's prediction once both losses are minimised (no model in the way)."""
    torch.manual_seed(0)
    lab = torch.from_numpy(label.astype(np.int64))[None]
    reg, pr = torch.from_numpy(region)[None], torch.from_numpy(prob)[None]
    logits = torch.zeros(1, 64, *label.shape, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.2)
    for _ in range(steps):
        opt.zero_grad()
        loss = segmentation_loss(logits, lab) + distill_loss(logits, reg, pr, reg, [A], label=lab if protect else None)
        loss.backward()
        opt.step()
    return logits.argmax(1)[0].numpy()


def test_distilling_a_box_that_covers_another_class_does_not_erase_it() -> None:
    label, region, prob = _scene()
    covered = (label == B) & (region == A)  # B's pixels under A's box-filling targets
    assert covered.sum() == 450
    pred = _fit(label, region, prob, protect=True)
    assert (pred[covered] == B).all() and (pred == label).all()
    # the mechanism of the collapse: unprotected, the targets (mean over the box, i.e. twice the
    # per-pixel weight of the label's cross-entropy here) win over B's label
    pred = _fit(label, region, prob, protect=False)
    assert (pred[covered] == A).all()
    # replace mode keeps B's label under protection, relabels it A without
    lab, reg = torch.from_numpy(label)[None], torch.from_numpy(region)[None]
    cls = torch.where(torch.from_numpy(prob)[None] >= 128, reg, torch.tensor(255, dtype=torch.uint8))
    kept = replace_labels(lab, cls, None, reg, [A], protect=True)[0].numpy()
    assert (kept[covered] == B).all()
    assert (replace_labels(lab, cls, None, reg, [A])[0].numpy()[covered] == A).all()


def test_a_target_weighs_per_pixel_what_a_label_weighs() -> None:
    """per="labelled": the soft loss is a sum over the distilled pixels divided by ALL labelled
    pixels (cross-entropy's denominator), not by the distilled ones: a small class's targets no
    longer weigh N_labelled / N_region times its labels."""
    label, region, prob = _scene()
    lab, reg, pr = (torch.from_numpy(a)[None] for a in (label.astype(np.int64), region, prob))
    logits = torch.randn(1, 64, 40, 40, generator=torch.Generator().manual_seed(0))
    per_region = distill_loss(logits, reg, pr, reg, [A], label=lab, protect=False)
    per_pixel = distill_loss(logits, reg, pr, reg, [A], label=lab, protect=False, per="labelled")
    assert float(per_pixel) == pytest.approx(float(per_region) * 800 / 1600, rel=1e-6)
    with pytest.raises(ValueError, match="needs the label"):
        distill_loss(logits, reg, pr, reg, [A], per="labelled")
    # per pixel, a box-filling target no longer outweighs the label it covers (unprotected): a tie at worst
    torch.manual_seed(0)
    free = torch.zeros(1, 64, 40, 40, requires_grad=True)
    opt = torch.optim.Adam([free], lr=0.2)
    for _ in range(300):
        opt.zero_grad()
        (segmentation_loss(free, lab) + distill_loss(free, reg, pr, reg, [A], label=lab, protect=False,
                                                     per="labelled")).backward()
        opt.step()
    covered = (label == B) & (region == A)
    p = free.detach().softmax(1)[0]
    assert (p[B][torch.from_numpy(covered)] >= p[A][torch.from_numpy(covered)] - 1e-3).all()
