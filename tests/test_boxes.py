"""Oracle / prediction boxes: known answers, instances vs components, margins, clipping, faults."""

from __future__ import annotations

import numpy as np
import pytest

from goose_lib.teacher.boxes import (
    BoxParams,
    BoxSet,
    box_pixels,
    boxes_from_labels,
    boxes_from_prediction,
    clip_boxes,
    make_boxset,
)


def _label() -> np.ndarray:
    lab = np.full((40, 60), 50, np.uint8)  # background class 50 (one big component)
    lab[5:10, 3:13] = 5  # component A of class 5: rows 5..9, cols 3..12
    lab[20:30, 40:45] = 5  # component B of class 5
    lab[0:2, 58:60] = 7  # 4 pixels of class 7 (below min_area 16)
    lab[35:40, 0:4] = 255  # ignored
    return lab


def _as_set(bs: BoxSet) -> set[tuple]:
    return {(int(c), s, *map(float, b)) for c, s, b in zip(bs.classes, bs.sources, bs.xyxy)}


def test_components_known_boxes_and_min_area() -> None:
    bs = boxes_from_labels(_label())
    got = _as_set(bs)
    assert (5, "component", 3.0, 5.0, 13.0, 10.0) in got
    assert (5, "component", 40.0, 20.0, 45.0, 30.0) in got
    assert not any(c == 7 for c, *_ in got)  # 4 px < min_area
    assert (50, "component", 0.0, 0.0, 60.0, 40.0) in got
    assert len(bs) == 3 and not any(c == 255 for c, *_ in got)
    assert sorted(bs.areas.tolist()) == sorted([50, 50, 40 * 60 - 100 - 4 - 20])
    small = boxes_from_labels(_label(), params=BoxParams(min_area=4))
    assert (7, "component", 58.0, 0.0, 60.0, 2.0) in _as_set(small)


def test_boxes_match_reference_bbox_of_each_component() -> None:
    rng = np.random.default_rng(0)
    lab = (rng.random((50, 70)) < 0.03).astype(np.uint8) * 9  # scattered class-9 pixels
    lab[10:20, 10:20] = 9
    from scipy import ndimage

    comp, n = ndimage.label(lab == 9, structure=np.ones((3, 3)))
    ref = set()
    for i in range(1, n + 1):
        ys, xs = np.nonzero(comp == i)
        if len(ys) >= 3:
            ref.add((9, "component", float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    got = _as_set(boxes_from_labels(lab, params=BoxParams(min_area=3), classes=[9]))
    assert got == ref and len(ref) > 1


def test_instances_then_uninstanced_rest() -> None:
    lab = np.zeros((30, 40), np.uint8)
    inst = np.zeros((30, 40), np.int32)
    lab[2:8, 2:10] = 12
    inst[2:8, 2:10] = 3
    lab[10:20, 5:9] = 12
    inst[10:20, 5:9] = 4
    lab[10:20, 25:35] = 12  # class 12 without instance id -> component
    lab[22:28, 30:36] = 28  # another class, no instances at all
    inst[0, 0] = 9  # an id on class-0 pixels: class 0 is skipped by default
    bs = boxes_from_labels(lab, inst)
    assert _as_set(bs) == {(12, "instance", 2.0, 2.0, 10.0, 8.0), (12, "instance", 5.0, 10.0, 9.0, 20.0),
                           (12, "component", 25.0, 10.0, 35.0, 20.0), (28, "component", 30.0, 22.0, 36.0, 28.0)}
    comps = boxes_from_labels(lab, inst, params=BoxParams(use_instances=False))
    assert set(comps.sources) == {"component"}


def test_split_instance_gets_one_box() -> None:
    lab = np.zeros((20, 30), np.uint8)
    inst = np.zeros((20, 30), np.int32)
    lab[2:6, 2:6] = 12
    lab[10:14, 20:26] = 12
    inst[lab == 12] = 1  # one occluded car in two pieces
    bs = boxes_from_labels(lab, inst)
    assert _as_set(bs) == {(12, "instance", 2.0, 2.0, 26.0, 14.0)}
    assert bs.areas.tolist() == [16 + 24]


def test_margin_widens_and_clips_to_image() -> None:
    lab = np.zeros((20, 20), np.uint8)
    lab[0:10, 5:15] = 3
    bs = boxes_from_labels(lab, params=BoxParams(margin=0.1, margin_px=2))
    # width 10, height 10 -> 1 + 2 = 3 px each side, then clipped at the top edge
    assert _as_set(bs) == {(3, "component", 2.0, 0.0, 18.0, 13.0)}


def test_clip_drops_degenerate_and_outside_boxes() -> None:
    xyxy = np.array([[-5, -5, 10, 10],  # partly outside -> clipped
                     [5, 5, 5, 9],  # zero width
                     [50, 50, 60, 60],  # entirely outside
                     [3, 8, 2, 9],  # inverted
                     [0, 0, np.nan, 4],  # NaN
                     [10, 10, 25, 25]], np.float32)  # clipped to the 20x30 image
    out, keep = clip_boxes(xyxy, height=20, width=30)
    assert keep.tolist() == [True, False, False, False, False, True]
    np.testing.assert_array_equal(out[0], [0, 0, 10, 10])
    np.testing.assert_array_equal(out[5], [10, 10, 25, 20])
    bs = make_boxset(xyxy, [1, 2, 3, 4, 5, 6], ["prediction"] * 6, 20, 30)
    assert len(bs) == 2 and bs.classes.tolist() == [1, 6]
    with pytest.raises(ValueError, match="unknown source"):
        make_boxset(xyxy[:1], [1], ["guess"], 20, 30)


def test_no_boxes_of_a_class_and_empty_image() -> None:
    lab = np.zeros((16, 16), np.uint8)  # only class 0 (skipped)
    bs = boxes_from_labels(lab)
    assert len(bs) == 0 and bs.xyxy.shape == (0, 4)
    assert not bs.region(5).any() and bs.region(5).shape == (16, 16)
    assert len(boxes_from_labels(_label(), classes=[33])) == 0
    assert len(boxes_from_prediction(np.full((8, 8), 255, np.uint8))) == 0


def test_prediction_boxes_and_max_boxes_and_masks() -> None:
    pred = np.zeros((30, 30), np.uint8)
    pred[0:10, 0:10] = 4
    pred[20:25, 20:30] = 4
    pred[12:16, 12:16] = 6
    bs = boxes_from_prediction(pred, params=BoxParams(max_boxes=2), return_masks=True)
    assert set(bs.sources) == {"prediction"}
    assert sorted(bs.areas.tolist()) == [50, 100]  # the two largest objects kept
    for m, a in zip(bs.masks, bs.areas):
        assert m.shape == (30, 30) and m.sum() == a


def test_region_and_box_pixels() -> None:
    bs = make_boxset(np.array([[1.5, 2.0, 4.2, 5.0]]), [8], ["component"], 10, 10)
    np.testing.assert_array_equal(box_pixels(bs.xyxy, 10, 10), [[1, 2, 5, 5]])
    r = bs.region(8)
    assert r.sum() == 4 * 3 and r[2:5, 1:5].all()


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="label: expected an HxW map"):
        boxes_from_labels(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="instances: shape"):
        boxes_from_labels(np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.int32))
    with pytest.raises(ValueError, match="min_area"):
        BoxParams(min_area=0)


def test_instance_ids_count_only_on_has_instance_classes() -> None:
    lab = np.full((20, 30), 50, np.uint8)  # a stuff class
    inst = np.zeros((20, 30), np.int32)
    lab[2:6, 2:6] = 12
    lab[10:14, 20:26] = 12
    inst[lab == 12] = 1  # a thing (12) in two pieces: one instance box
    inst[15:20, 0:30] = 5  # an id painted over part of the stuff class 50
    bs = boxes_from_labels(lab, inst, instance_classes={12})
    assert (12, "instance", 2.0, 2.0, 26.0, 14.0) in _as_set(bs)
    assert [s for c, s in zip(bs.classes, bs.sources) if c == 50] == ["component"]  # the id on 50 is ignored
    assert (50, "component", 0.0, 0.0, 30.0, 20.0) in _as_set(bs)
    # the same maps without the class table: every class's ids count (50 splits into id 5 + the rest)
    legacy = boxes_from_labels(lab, inst)
    assert (50, "instance", 0.0, 15.0, 30.0, 20.0) in _as_set(legacy)
    # a has_instance class without its ids set falls back to components
    only50 = boxes_from_labels(lab, inst, instance_classes={50})
    assert sorted(s for c, s in zip(only50.classes, only50.sources) if c == 12) == ["component", "component"]
