"""Discovery of GOOSE files: stems, cameras, exclusion, unlabelled splits, the cached index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from goose_lib.data import layout
from goose_lib.data.layout import LayoutError, index_split, list_splits, split_image_name

MUCAR = "2022-07-07_campus_no_ptp"
MUCAR_STEM = f"{MUCAR}__0000_1657194296000000000"
GOOSE = "2022-07-22_touareg_flight"
GOOSE_STEM = f"{GOOSE}_0071_1658494234334310308"
EX = "alice_scenario01_sequence14"
EX_STEM = "alice_scenario01_sequence14_0000_1689000000000000000"


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the index never decodes files


def _fake_root(root: Path) -> Path:
    for split in ("train", "test"):
        _touch(root / "images" / split / MUCAR / f"{MUCAR_STEM}_windshield_vis.png")
        _touch(root / "images" / split / GOOSE / f"{GOOSE_STEM}_windshield_vis.png")
        _touch(root / "images" / split / GOOSE / f"{GOOSE_STEM}_windshield_nir.png")
        _touch(root / "images" / split / EX / f"{EX_STEM}_camera_left.png")
    for scen, stem in ((MUCAR, MUCAR_STEM), (GOOSE, GOOSE_STEM), (EX, EX_STEM)):
        _touch(root / "labels" / "train" / scen / f"{stem}_labelids.png")
        _touch(root / "labels" / "train" / scen / f"{stem}_color.png")
        if scen != EX:  # GOOSE-Ex sample without an instance map
            _touch(root / "labels" / "train" / scen / f"{stem}_instanceids.png")
    return root


def test_split_image_name_handles_underscored_cameras_and_stems() -> None:
    assert split_image_name(f"{MUCAR_STEM}_windshield_vis.png") == (MUCAR_STEM, "windshield_vis")
    assert split_image_name(f"{EX_STEM}_camera_left.png") == (EX_STEM, "camera_left")
    assert split_image_name("a__b_realsense.png") == ("a__b", "realsense")
    assert split_image_name("x_front.png") == ("x", "front")
    assert split_image_name("x_windshield_nir.png") == ("x", "windshield_nir")
    assert split_image_name("x_thermal.png") is None
    assert split_image_name("x_thermal.png", ["thermal"]) == ("x", "thermal")
    assert split_image_name("_front.png") is None  # empty stem
    assert split_image_name("x_front.jpg") is None


def test_index_pairs_images_with_labels(tmp_path: Path) -> None:
    root = _fake_root(tmp_path / "root")
    samples = index_split(root, "train", use_cache=False)
    assert [s.key for s in samples] == sorted(s.key for s in samples)
    by_stem = {s.stem: s for s in samples}
    assert set(by_stem) == {MUCAR_STEM, GOOSE_STEM, EX_STEM}  # nir ignored by default
    m = by_stem[MUCAR_STEM]
    assert m.scenario == MUCAR and m.camera == "windshield_vis" and m.split == "train"
    assert m.key == f"train/{MUCAR}/{MUCAR_STEM}_windshield_vis"
    assert m.image == root.resolve() / "images" / "train" / MUCAR / f"{MUCAR_STEM}_windshield_vis.png"
    assert m.labelids == root.resolve() / "labels" / "train" / MUCAR / f"{MUCAR_STEM}_labelids.png"
    assert m.instanceids is not None and m.color is not None
    ex = by_stem[EX_STEM]
    assert ex.camera == "camera_left" and ex.instanceids is None and ex.labelids is not None


def test_camera_filter_and_exclusion_and_limit(tmp_path: Path) -> None:
    root = _fake_root(tmp_path / "root")
    nir = index_split(root, "train", cameras=("windshield_nir",), use_cache=False)
    assert [(s.stem, s.camera) for s in nir] == [(GOOSE_STEM, "windshield_nir")]
    assert nir[0].labelids is not None and nir[0].labelids.name == f"{GOOSE_STEM}_labelids.png"
    both = index_split(root, "train", cameras=("windshield_vis", "windshield_nir"), use_cache=False)
    assert len(both) == 3
    left = index_split(root, "train", cameras=("camera_left",), use_cache=False)
    assert [s.stem for s in left] == [EX_STEM]
    kept = index_split(root, "train", exclude_scenarios=(GOOSE, "not_there"), use_cache=False)
    assert {s.scenario for s in kept} == {MUCAR, EX}
    assert len(index_split(root, "train", limit=2, use_cache=False)) == 2
    with pytest.raises(LayoutError, match="no images of cameras"):
        index_split(root, "train", cameras=("front",), use_cache=False)


def test_test_split_has_no_label_paths(tmp_path: Path) -> None:
    root = _fake_root(tmp_path / "root")
    samples = index_split(root, "test")
    assert len(samples) == 3
    assert all(s.labelids is None and s.instanceids is None and s.color is None for s in samples)
    assert list_splits(root) == ["test", "train"]


def test_unknown_suffix_warns_and_is_ignored(tmp_path: Path) -> None:
    root = _fake_root(tmp_path / "root")
    _touch(root / "images" / "train" / GOOSE / "strange_file.png")
    with pytest.warns(UserWarning, match="strange_file.png: no known camera suffix"):
        samples = index_split(root, "train", use_cache=False)
    assert len(samples) == 3


@pytest.mark.parametrize("make", ["missing", "file", "empty_dir", "other_dir"])
def test_non_goose_folders_raise_layout_error(tmp_path: Path, make: str) -> None:
    root = tmp_path / "root"
    if make == "file":
        root.write_text("x")
    elif make == "empty_dir":
        root.mkdir()
    elif make == "other_dir":
        _touch(root / "pictures" / "a.png")
    with pytest.raises(LayoutError) as err:
        index_split(root, "train")
    assert str(err.value).startswith(str(root.resolve()))


def test_missing_and_empty_split(tmp_path: Path) -> None:
    root = _fake_root(tmp_path / "root")
    with pytest.raises(LayoutError, match=r"no such split; splits here: \['test', 'train'\]") as err:
        index_split(root, "val")
    assert str(err.value).startswith(str(root.resolve() / "images" / "val"))
    (root / "images" / "val" / "scenario").mkdir(parents=True)
    with pytest.raises(LayoutError, match="no images"):
        index_split(root, "val")


def test_index_is_cached_and_invalidated_by_tree_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_root(tmp_path / "root")
    first = index_split(root, "train")
    cache_files = list((layout.paths.home() / "index-cache").glob("*.json"))
    assert cache_files, "index cache not written"

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("rescanned although the tree did not change")

    with monkeypatch.context() as m:
        m.setattr(layout, "_scan", boom)
        assert index_split(root, "train") == first  # served from the cache
        assert index_split(root, "train", limit=1) == first[:1]
    # a new image changes its scenario folder's mtime -> the index is rebuilt
    scen = root / "images" / "train" / EX
    before = scen.stat().st_mtime_ns
    _touch(scen / f"{EX_STEM[:-5]}99999_camera_left.png")
    if scen.stat().st_mtime_ns == before:  # coarse-mtime filesystems: make the change visible
        os.utime(scen, ns=(before + 10**9, before + 10**9))
    assert len(index_split(root, "train")) == 4
    # different options use a different cache entry
    assert len(index_split(root, "train", cameras=("windshield_nir",))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    root = _fake_root(tmp_path / "root")
    first = index_split(root, "train")
    for f in (layout.paths.home() / "index-cache").glob("*.json"):
        f.write_text("{ not json")
    assert index_split(root, "train") == first
