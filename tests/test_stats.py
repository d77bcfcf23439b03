"""Split statistics against hand-computed answers and a scipy reference; cache, shards, workers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from goose_lib.config import DataConfig
from goose_lib.data import stats as stats_mod
from goose_lib.data.decode import DataError
from goose_lib.data.layout import index_split
from goose_lib.data.stats import SplitStats, compute_stats, merge_stats, region_boxes

LABEL_A = np.array([[53, 53, 53, 53, 53, 53],
                    [53, 53, 12, 12, 53, 53],
                    [50, 50, 12, 12, 50, 50],
                    [50, 50, 50, 50, 45, 50]], np.uint8)
INST_A = np.array([[0, 0, 0, 0, 0, 0],
                   [0, 0, 1, 1, 0, 0],
                   [0, 0, 1, 1, 0, 0],
                   [0, 0, 0, 0, 2, 0]], np.uint16)
LABEL_B = np.array([[0, 0, 53],
                    [31, 0, 53]], np.uint8)
# (class, x0, y0, x1, y1, pixels, is_instance), x1/y1 exclusive
BOXES_A = {(53, 0, 0, 6, 2, 10, 0), (50, 0, 2, 4, 4, 6, 0), (50, 4, 2, 6, 4, 3, 0),
           (12, 2, 1, 4, 3, 4, 1), (45, 4, 3, 5, 4, 1, 1)}
BOXES_B = {(0, 0, 0, 2, 2, 3, 0), (53, 2, 0, 3, 2, 2, 0), (31, 0, 1, 1, 2, 1, 0)}


def _hand_root(root: Path) -> Path:
    """Two samples: A with an instance map, B (another scenario) without."""
    for scen, stem, label, inst in (("s1", "s1__0000_1", LABEL_A, INST_A), ("s2", "s2_0000_2", LABEL_B, None)):
        (root / "images" / "train" / scen).mkdir(parents=True)
        (root / "labels" / "train" / scen).mkdir(parents=True)
        Image.fromarray(np.zeros(label.shape + (3,), np.uint8)).save(
            root / "images" / "train" / scen / f"{stem}_windshield_vis.png")
        Image.fromarray(label).save(root / "labels" / "train" / scen / f"{stem}_labelids.png")
        if inst is not None:
            Image.fromarray(inst).save(root / "labels" / "train" / scen / f"{stem}_instanceids.png")
    return root


def _reference(label: np.ndarray, inst: np.ndarray | None) -> set[tuple[int, ...]]:
    inst = np.zeros(label.shape, np.int64) if inst is None else inst
    boxes = set()
    for c in np.unique(label):
        comp, _ = ndimage.label((label == c) & (inst == 0))
        for j, sl in enumerate(ndimage.find_objects(comp)):
            boxes.add((int(c), sl[1].start, sl[0].start, sl[1].stop, sl[0].stop, int((comp[sl] == j + 1).sum()), 0))
    for iid in np.unique(inst[inst > 0]):
        ys, xs = np.nonzero(inst == iid)
        cls = int(np.bincount(label[inst == iid]).argmax())
        boxes.add((cls, int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, len(ys), 1))
    return boxes


def _as_set(boxes: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in boxes}


def test_region_boxes_hand_case() -> None:
    pixels, boxes = region_boxes(LABEL_A, INST_A)
    assert _as_set(boxes) == BOXES_A and len(boxes) == 5
    assert pixels[53] == 10 and pixels[50] == 9 and pixels[12] == 4 and pixels[45] == 1 and pixels.sum() == 24
    assert _as_set(region_boxes(LABEL_B)[1]) == BOXES_B


def test_region_boxes_instance_spanning_two_classes_takes_the_majority() -> None:
    label = np.array([[1, 1, 2], [0, 0, 0]], np.uint8)
    inst = np.array([[7, 7, 7], [0, 0, 0]], np.uint16)
    assert _as_set(region_boxes(label, inst)[1]) == {(1, 0, 0, 3, 1, 3, 1), (0, 0, 1, 3, 2, 3, 0)}


def test_region_boxes_ignores_instance_ids_on_classes_without_instances() -> None:
    label = np.array([[1, 1, 0, 2, 2], [1, 1, 0, 2, 2]], np.uint8)
    inst = np.array([[3, 3, 0, 4, 0], [3, 3, 0, 4, 0]], np.uint16)  # id 4 on half of class 2
    boxes = _as_set(region_boxes(label, inst, instance_classes={1})[1])
    assert boxes == {(1, 0, 0, 2, 2, 4, 1), (0, 2, 0, 3, 2, 2, 0), (2, 3, 0, 5, 2, 4, 0)}
    assert (2, 3, 0, 4, 2, 2, 1) in _as_set(region_boxes(label, inst)[1])  # without the table: id 4 counts
    # the reference on the same maps with class 2's ids zeroed agrees
    assert boxes == _reference(label, np.where(label == 1, inst, 0))


def test_compute_stats_reads_has_instance_from_the_mapping_csv(tmp_path: Path) -> None:
    import csv

    from goose_lib.ontology import MAPPING_CSV, packaged_mapping_rows

    root = _hand_root(tmp_path / "root")
    rows = [r | {"has_instance": "0"} if r["class_name"] == "pole" else r for r in packaged_mapping_rows()]
    with open(root / MAPPING_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    st = compute_stats(root, "train", workers=1, progress=False, use_cache=False)
    got = _as_set(st.boxes)
    assert (45, 4, 3, 5, 4, 1, 0) in got and (45, 4, 3, 5, 4, 1, 1) not in got  # pole (45): a component now
    assert (12, 2, 1, 4, 3, 4, 1) in got  # car keeps its instance


def test_region_boxes_matches_scipy_reference() -> None:
    rng = np.random.default_rng(0)
    for t in range(150):
        h, w = (int(v) for v in rng.integers(1, 16, 2))
        label = rng.integers(0, 3, (h, w)).astype(np.uint8)
        inst = (rng.integers(0, 4, (h, w)) * (rng.random((h, w)) < 0.4)).astype(np.uint16) if t % 3 else None
        pixels, boxes = region_boxes(label, inst)
        assert _as_set(boxes) == _reference(label, inst) and len(boxes) == len(_reference(label, inst))
        assert np.array_equal(pixels[:3], np.bincount(label.ravel(), minlength=3))


def test_compute_stats_hand_root(tmp_path: Path) -> None:
    root = _hand_root(tmp_path / "root")
    st = compute_stats(root, "train", workers=1, progress=False)
    assert st.split == "train" and st.samples == 2 and st.num_classes == 64
    expect_pixels = np.zeros(64, np.int64)
    expect_pixels[[53, 50, 12, 45, 0, 31]] = [12, 9, 4, 1, 3, 1]
    assert np.array_equal(st.pixel_counts, expect_pixels)
    assert st.image_counts.tolist() == [int(c > 0) + int(i == 53) for i, c in enumerate(expect_pixels)]
    expect_inst = np.zeros(64, np.int64)
    expect_inst[[53, 50, 12, 45, 0, 31]] = [2, 2, 1, 1, 1, 1]
    assert np.array_equal(st.instance_counts, expect_inst)
    assert _as_set(st.boxes) == BOXES_A | BOXES_B and len(st.boxes) == 8
    assert st.image_sizes == {"6x4": 1, "3x2": 1}
    assert st.pixel_share[53] == pytest.approx(12 / 30) and st.image_share[53] == 1.0
    assert st.box_sizes(50).tolist() in ([[4, 2], [2, 2]], [[2, 2], [4, 2]])
    d = json.loads(json.dumps(st.to_dict()))
    assert d["pixel_counts"] == expect_pixels.tolist() and d["samples"] == 2 and d["box_count"] == 8
    assert d["box_median_width"][50] == 3.0 and d["box_median_height"][12] == 2.0 and d["box_median_width"][1] is None


def test_stats_cache_hit_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _hand_root(tmp_path / "root")
    first = compute_stats(root, "train", workers=1, progress=False)

    def boom(*a: object) -> None:
        raise AssertionError("recomputed although nothing changed")

    with monkeypatch.context() as m:
        m.setattr(stats_mod, "_chunk_stats", boom)
        cached = compute_stats(root, "train", workers=1, progress=False)
    assert np.array_equal(cached.pixel_counts, first.pixel_counts) and _as_set(cached.boxes) == _as_set(first.boxes)
    # a label file changes (size and mtime) -> recomputed
    path = root / "labels" / "train" / "s2" / "s2_0000_2_labelids.png"
    before = path.stat()
    Image.fromarray(np.full((2, 3), 31, np.uint8)).save(path)
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):  # coarse-mtime filesystems
        os.utime(path, ns=(before.st_mtime_ns + 10**9, before.st_mtime_ns + 10**9))
    changed = compute_stats(root, "train", workers=1, progress=False)
    assert changed.pixel_counts[31] == 6 and changed.pixel_counts[0] == 0


def test_shards_merge_to_the_full_split(tiny_root: Path) -> None:
    full = compute_stats(tiny_root, "train", workers=1, progress=False, use_cache=False)
    parts = [compute_stats(tiny_root, "train", workers=1, progress=False, shard=(i, 3)) for i in range(3)]
    assert [p.samples for p in parts] == [3, 3, 2]
    merged = merge_stats(parts)
    assert merged.samples == full.samples == 8
    for name in ("pixel_counts", "image_counts", "instance_counts"):
        assert np.array_equal(getattr(merged, name), getattr(full, name)), name
    assert sorted(map(tuple, merged.boxes.tolist())) == sorted(map(tuple, full.boxes.tolist()))
    assert merged.image_sizes == full.image_sizes
    with pytest.raises(ValueError, match="shard"):
        compute_stats(tiny_root, "train", shard=(3, 3), progress=False)
    with pytest.raises(ValueError, match="disagree"):
        merge_stats([full, compute_stats(tiny_root, "val", workers=1, progress=False)])


def test_stats_match_decoded_labels(tiny_root: Path) -> None:
    from goose_lib.data.decode import load_sample

    st = compute_stats(tiny_root, "val", workers=1, progress=False)
    expect = np.zeros(64, np.int64)
    ref_boxes: list[tuple[int, ...]] = []
    for s in index_split(tiny_root, "val"):
        item = load_sample(s)
        expect += np.bincount(item["label"].ravel(), minlength=64)
        ref_boxes += sorted(_reference(item["label"], item["instances"]))
    assert np.array_equal(st.pixel_counts, expect)
    assert sorted(map(tuple, st.boxes.tolist())) == sorted(ref_boxes)


@pytest.mark.slow
def test_parallel_equals_serial(tiny_root: Path) -> None:
    a = compute_stats(tiny_root, "train", workers=1, progress=False, use_cache=False)
    b = compute_stats(tiny_root, "train", workers=2, progress=False, use_cache=False)
    assert np.array_equal(a.pixel_counts, b.pixel_counts) and np.array_equal(a.instance_counts, b.instance_counts)
    assert sorted(map(tuple, a.boxes.tolist())) == sorted(map(tuple, b.boxes.tolist()))


def test_unlabelled_split_and_bad_files(tiny_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no labels"):
        compute_stats(tiny_root, "test", progress=False)
    root = Path(shutil.copytree(tiny_root, tmp_path / "root"))
    samples = index_split(root, "val", use_cache=False)
    samples[1].labelids.write_bytes(b"broken")
    with pytest.raises(DataError) as err:
        compute_stats(root, "val", workers=1, progress=False)
    assert str(err.value).startswith(f"{samples[1].labelids}: cannot decode label")
    with pytest.warns(UserWarning, match="skipped 1 bad sample"):
        st = compute_stats(root, "val", workers=1, progress=False, config=DataConfig(skip_bad=True))
    assert st.samples == 3 and len(st.skipped) == 1 and st.skipped[0].startswith(str(samples[1].labelids))
    lab = np.asarray(Image.open(samples[0].labelids)).copy()
    lab[0, 0] = 77
    Image.fromarray(lab).save(samples[0].labelids)
    Image.fromarray(lab[1:] % 64).save(samples[2].labelids)
    with pytest.warns(UserWarning, match="skipped 3 bad sample"):
        st = compute_stats(root, "val", workers=1, progress=False, config=DataConfig(skip_bad=True))
    msgs = sorted(st.skipped)
    assert any(m.startswith(f"{samples[0].labelids}: label ids [77] outside") for m in msgs)
    assert any(m.startswith(f"{samples[2].labelids}: size") for m in msgs)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    root = _hand_root(tmp_path / "root")
    st = compute_stats(root, "train", workers=1, progress=False)
    back = SplitStats.load(st.save(tmp_path / "s.npz"))
    assert back.to_dict() == st.to_dict() and np.array_equal(back.boxes, st.boxes)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.npz: not a statistics file"):
        SplitStats.load(tmp_path / "bad.npz")
