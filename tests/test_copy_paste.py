"""Rare-class copy-paste: pasted pixels carry their label (and the donor's pixels and teacher
maps, a fresh instance id); nothing outside the pasted mask moves; draws stay reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from goose_lib.data.copy_paste import CopyPasteConfig, CopyPasteTransform, objects, paste


def _item(seed: int, h: int = 20, w: int = 24, with_teacher: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    item = {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "label": rng.integers(1, 5, (h, w)).astype(np.uint8),
            "instances": np.zeros((h, w), np.int32)}
    if with_teacher:
        item |= {"teacher_cls": rng.integers(0, 5, (h, w)).astype(np.uint8),
                 "teacher_prob": rng.integers(0, 256, (h, w)).astype(np.uint8),
                 "teacher_region": rng.integers(0, 5, (h, w)).astype(np.uint8)}
    return item


def _donor() -> dict:
    d = _item(1)
    d["label"][:] = 2
    d["label"][3:7, 4:9] = 9  # one instance of the rare class 9 ...
    d["instances"][3:7, 4:9] = 5
    d["label"][3, 4], d["instances"][3, 4] = 2, 0  # not a rectangle: its box holds other pixels
    d["label"][12:14, 15:20] = 9  # ... and a component of 9 without an instance id
    return d


def test_objects_from_instances_then_components() -> None:
    found = objects(_donor(), [9, 11])
    assert [c for c, _ in found] == [9, 9]
    assert found[0][1].sum() == 19 and found[0][1][3:7, 4:9].sum() == 19
    assert found[1][1].sum() == 10 and found[1][1][12:14, 15:20].all()


@pytest.mark.parametrize("target_hw", [(20, 24), (16, 30)])
def test_pasted_pixels_carry_their_label_and_nothing_else_moves(target_hw) -> None:
    target, donor = _item(0, *target_hw), _donor()
    target["instances"][0:2, 0:2] = 3
    before = {k: v.copy() for k, v in target.items()}
    cls, mask = objects(donor, [9])[0]
    out = paste(target, donor, mask, cls, np.random.default_rng(4))
    (rec,) = out["pasted"]
    ty, tx, bh, bw = rec["box"]
    pasted = np.zeros(target_hw, bool)
    pasted[ty:ty + bh, tx:tx + bw] = mask[3:3 + bh, 4:4 + bw]
    assert pasted.sum() == rec["pixels"] == 19
    assert (out["label"][pasted] == 9).all()
    np.testing.assert_array_equal(out["image"][pasted], donor["image"][3:7, 4:9][mask[3:7, 4:9]])
    for key in ("teacher_cls", "teacher_prob", "teacher_region"):
        np.testing.assert_array_equal(out[key][pasted], donor[key][3:7, 4:9][mask[3:7, 4:9]])
    assert (out["instances"][pasted] == 4).all()  # a fresh id above the target's largest (3)
    for key, arr in before.items():
        np.testing.assert_array_equal(out[key][~pasted], arr[~pasted])  # outside the mask: untouched
        np.testing.assert_array_equal(target[key], arr)  # the target itself is not modified


def test_transform_is_reproducible_and_off_when_prob_zero() -> None:
    donor = _donor()
    seen = []

    def inner(item, rng):
        seen.append(item)
        return item

    cp = CopyPasteTransform(inner, lambda i: donor, [0], CopyPasteConfig(classes=(9,), prob=1.0, count=2))
    a = cp(_item(0), np.random.default_rng(7))
    b = cp(_item(0), np.random.default_rng(7))
    assert len(a["pasted"]) == 2 and a["pasted"] == b["pasted"]
    np.testing.assert_array_equal(a["label"], b["label"])
    off = CopyPasteTransform(inner, lambda i: donor, [0], CopyPasteConfig(classes=(9,), prob=0.0, count=2))
    plain = _item(0)
    out = off(plain, np.random.default_rng(7))
    assert "pasted" not in out and all(np.array_equal(out[k], plain[k]) for k in plain)
