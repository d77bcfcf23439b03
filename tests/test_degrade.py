"""Training-label degradation: each kind does what it says, by the set amount, and nothing else."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from goose_lib.data.degrade import LabelNoise, bleed, degrade, disk, simplify
from goose_lib.data.world import boundary_distance
from goose_lib.ontology import Ontology

ONT = Ontology.load()
GRASS, SOIL, POLE, CAR, ROCK = (ONT.index(n) for n in ("low_grass", "soil", "pole", "car", "rock"))
OFF = LabelNoise(small_area=0, drop_small_prob=0, thin_miss_prob=0, simplify_px=0, bleed_px=0, thicken_px=0)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Grass with a soil patch, a 3-px pole (instance 1), a car (2) and a 4x4 rock (3)."""
    label = np.full((120, 160), GRASS, np.uint8)
    inst = np.zeros((120, 160), np.uint16)
    label[60:, 80:] = SOIL
    label[10:100, 40:43], inst[10:100, 40:43] = POLE, 1
    label[70:95, 100:140], inst[70:95, 100:140] = CAR, 2
    label[20:24, 120:124], inst[20:24, 120:124] = ROCK, 3
    return label, inst


def _run(noise: LabelNoise, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    label, inst = _scene()
    return degrade(label, inst, noise, np.random.default_rng(seed), ONT)


def test_all_strengths_zero_and_disabled_leave_labels_exact() -> None:
    label, inst = _scene()
    for noise in (OFF, LabelNoise(enabled=False)):
        out, out_inst = _run(noise)
        assert np.array_equal(out, label) and np.array_equal(out_inst, inst)


def test_thin_structures_thickened_by_the_set_radius() -> None:
    out, out_inst = _run(replace(OFF, thicken_px=2))
    cols = np.nonzero((out == POLE).any(0))[0]
    assert (cols.min(), cols.max()) == (38, 44)  # 40..42 grown by 2 each side
    rows = np.nonzero((out == POLE).any(1))[0]
    assert (rows.min(), rows.max()) == (8, 101)
    assert set(np.unique(out_inst[out == POLE])) == {1}


def test_thin_structures_missed_with_probability_one() -> None:
    out, out_inst = _run(replace(OFF, thin_miss_prob=1.0))
    assert not (out == POLE).any() and not (out_inst == 1).any()
    assert (out[10:100, 40:43] == GRASS).all()  # filled with what surrounds it


def test_small_instances_dropped_large_kept() -> None:
    out, out_inst = _run(replace(OFF, small_area=50, drop_small_prob=1.0))
    assert not (out == ROCK).any() and not (out_inst == 3).any()  # 16 px < 50
    assert (out == CAR).sum() == 25 * 40 and (out == POLE).sum() == 90 * 3  # big and thin ones stay


def test_bleeding_changes_only_pixels_within_the_radius_of_a_boundary() -> None:
    label, _ = _scene()
    out, _ = _run(replace(OFF, bleed_px=3))
    changed = out != label
    assert changed.sum() > 100
    # a pixel grown by <= 3 px lies <= 3 px from the winning side, i.e. < 3 px from the first pixel
    # of its own side (the boundary pixels of both sides are at distance 0); and the radius is reached
    dist = boundary_distance(label)[changed]
    assert 2.0 <= dist.max() < 3.0


def test_simplification_loses_detail_below_the_cell_only_near_boundaries() -> None:
    label = np.full((96, 96), GRASS, np.uint8)
    label[30:70, 30:70] = SOIL
    label[10:12, 10:12] = SOIL  # 2x2 detail, far below an 8-px cell
    out = simplify(label, 8)
    assert (out[10:12, 10:12] == GRASS).all()
    changed = out != label
    assert boundary_distance(label)[changed].max() <= 8
    assert (out[38:62, 38:62] == SOIL).all()


def test_bleed_is_a_pure_function_of_the_rng() -> None:
    label, _ = _scene()
    a = bleed(label, 2, np.random.default_rng(5))
    assert np.array_equal(a, bleed(label, 2, np.random.default_rng(5)))


def test_lengths_scale_with_px() -> None:
    label, inst = _scene()
    out, _ = degrade(label, inst, replace(OFF, thicken_px=1), np.random.default_rng(0), ONT, px=2.0)
    cols = np.nonzero((out == POLE).any(0))[0]
    assert (cols.min(), cols.max()) == (38, 44)


def test_disk_and_validation() -> None:
    assert disk(1).sum() == 5 and disk(0).sum() == 1
    with pytest.raises(ValueError, match="thin_miss_prob"):
        LabelNoise(thin_miss_prob=1.5)
