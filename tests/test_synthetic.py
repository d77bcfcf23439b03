"""The embedded synthetic dataset: layout, determinism, scene content, learnability, atomic creation."""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from goose_lib.data import synthetic
from goose_lib.data.decode import load_sample, read_label
from goose_lib.data.layout import index_split
from goose_lib.data.synthetic import EMBEDDED_NAME, ensure_embedded_dataset, write_synthetic
from goose_lib.ontology import MAPPING_CSV, Ontology


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_of_the_tiny_root(tiny_root: Path) -> None:
    with open(tiny_root / MAPPING_CSV, newline="") as f:
        assert csv.DictReader(f).fieldnames == ["class_name", "label_key", "has_instance", "hex"]
    assert sorted(p.name for p in (tiny_root / "images").iterdir()) == ["test", "train", "val"]
    assert sorted(p.name for p in (tiny_root / "labels").iterdir()) == ["train", "val"]
    train = index_split(tiny_root, "train")
    assert len(train) == 8 and len(index_split(tiny_root, "val")) == 4 and len(index_split(tiny_root, "test")) == 3
    cams = {s.camera for s in train}
    assert cams == {"windshield_vis", "camera_left"}
    assert any("__" in s.stem for s in train)  # MuCAR-3 style
    assert any(s.stem.startswith("alice_scenario") and s.camera == "camera_left" for s in train)  # GOOSE-Ex
    assert len(index_split(tiny_root, "train", cameras=("windshield_nir",))) > 0
    sizes = {s.camera: Image.open(s.image).size for s in train}
    assert sizes["camera_left"] == (320, 180)
    assert {Image.open(s.image).size for s in train if s.camera == "windshield_vis"} == {(320, 240), (352, 264)}
    for s in train:
        assert Image.open(s.labelids).mode == "L"
        assert Image.open(s.instanceids).mode.startswith("I")  # 16-bit
        assert Image.open(s.color).mode == "RGB"


def test_color_png_is_the_palette_of_the_label(tiny_root: Path) -> None:
    ont = Ontology.load(tiny_root)
    s = index_split(tiny_root, "val")[0]
    assert np.array_equal(np.asarray(Image.open(s.color)), ont.palette[load_sample(s)["label"]])


def test_deterministic_by_seed(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "a", seed=3, n_train=3, n_val=1, n_test=1)
    b = write_synthetic(tmp_path / "b", seed=3, n_train=3, n_val=1, n_test=1)
    c = write_synthetic(tmp_path / "c", seed=4, n_train=3, n_val=1, n_test=1)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert da == db
    assert da.keys() == dc.keys()
    assert sum(da[k] != dc[k] for k in da) >= len(da) - 2  # everything but the CSV changes


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        write_synthetic(tmp_path / "x", n_train=1, n_val=0, n_test=0)


def test_scene_content(tiny_root: Path) -> None:
    ont = Ontology.load(tiny_root)
    sky, ego = ont.index("sky"), ont.index("ego_vehicle")
    pixels = np.zeros(64, np.int64)
    for s in index_split(tiny_root, "train") + index_split(tiny_root, "val"):
        item = load_sample(s)
        lab, inst = item["label"], item["instances"]
        h = lab.shape[0]
        top, bottom = lab[: h // 10], lab[-h // 20:]
        assert (top == sky).mean() > 0.5  # sky on top
        if s.camera == "windshield_vis":
            assert (bottom == ego).mean() > 0.9  # the bonnet at the bottom
        else:
            assert ego not in lab and sky not in bottom
        ids = np.unique(inst[inst > 0])
        for iid in ids:  # one class per instance, instances only on thing classes
            classes = np.unique(lab[inst == iid])
            assert len(classes) == 1 and ont.classes[int(classes[0])].has_instance
        assert not (inst[~np.isin(lab, [c.id for c in ont.classes if c.has_instance])]).any()
        pixels += np.bincount(lab.ravel(), minlength=64)
    share = pixels / pixels.sum()
    assert share[sky] > 0.2 and (share > 0).sum() >= 20
    assert 0 < share[0] < 0.01  # a few void pixels


def test_rare_small_classes_and_imbalance(goose_home: Path) -> None:
    root = ensure_embedded_dataset()
    assert root == goose_home / EMBEDDED_NAME
    assert [len(index_split(root, sp)) for sp in ("train", "val", "test")] == [64, 16, 8]
    pixels = np.zeros(64, np.int64)
    images = np.zeros(64, np.int64)
    for s in index_split(root, "train"):
        counts = np.bincount(read_label(s.labelids).ravel(), minlength=64)
        pixels += counts
        images += counts > 0
    ont = Ontology.load(root)
    for name in ("traffic_cone", "animal", "bicycle"):
        c = ont.index(name)
        assert 0 < images[c] <= 16, name  # present, but in few images
        assert pixels[c] / pixels.sum() < 0.005, name
    assert pixels[ont.index("sky")] > 100 * pixels[ont.index("traffic_cone")]


def test_learnable_from_local_colour_and_texture(tiny_root: Path) -> None:
    """Nearest class-mean of local colour mean/std already labels most val pixels correctly."""
    def feats(img: np.ndarray) -> np.ndarray:
        f = img.astype(np.float32)
        mean = ndimage.uniform_filter(f, (5, 5, 1))
        std = np.sqrt(np.maximum(ndimage.uniform_filter(f * f, (5, 5, 1)) - mean * mean, 0))
        return np.concatenate([mean, std], 2).reshape(-1, 6)

    sums, counts = np.zeros((64, 6)), np.zeros(64)
    for s in index_split(tiny_root, "train"):
        item = load_sample(s)
        np.add.at(sums, item["label"].ravel(), feats(item["image"]))
        counts += np.bincount(item["label"].ravel(), minlength=64)
    present = np.flatnonzero(counts)
    means = sums[present] / counts[present, None]
    correct = total = 0
    majority = 0
    for s in index_split(tiny_root, "val"):
        item = load_sample(s)
        f = feats(item["image"])
        pred = present[((f[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
        lab = item["label"].ravel()
        correct += int((pred == lab).sum())
        majority += int((lab == np.bincount(lab).argmax()).sum())
        total += lab.size
    assert correct / total > 0.5 and correct > 1.4 * majority


def test_ensure_embedded_dataset_once_and_race_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOSE_SAM3_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(synthetic, "EMBEDDED_COUNTS", {"n_train": 4, "n_val": 2, "n_test": 1})
    with ThreadPoolExecutor(2) as pool:  # two writers race; both must get the finished folder
        results = [f.result() for f in [pool.submit(ensure_embedded_dataset) for _ in range(2)]]
    target = tmp_path / "home" / EMBEDDED_NAME
    assert results == [target, target]
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == [EMBEDDED_NAME]  # no temp leftovers
    assert len(index_split(target, "train", use_cache=False)) == 4
    assert len(index_split(target, "val", use_cache=False)) == 2
    assert len(index_split(target, "test", use_cache=False)) == 1
    mtime = target.stat().st_mtime_ns
    assert ensure_embedded_dataset() == target and target.stat().st_mtime_ns == mtime  # not rewritten


def test_ensure_embedded_dataset_rejects_a_foreign_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOSE_SAM3_HOME", str(tmp_path))
    (tmp_path / EMBEDDED_NAME).mkdir()
    with pytest.raises(FileExistsError, match="not a complete embedded dataset"):
        ensure_embedded_dataset()
