"""The embedded world: determinism, each premise switch changes what it says and nothing else,
exact labels kept aside, names resolved by the data layer."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from goose_lib.data.degrade import LabelNoise
from goose_lib.data.embedded import resolve_data_root
from goose_lib.data.layout import index_split
from goose_lib.data.world import (
    EXACT_LABELS,
    WORLD_SPECS,
    WorldParams,
    exact_train_label,
    label_noise_rate,
    write_world,
)

SMALL = WorldParams(n_train=3, n_val=3, n_test=1, scale=1.0)


def _files(root: Path, sub: str) -> dict[str, str]:
    base = root / sub
    return {p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*.png"))}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("worlds")
    variants = {"on": SMALL, "again": SMALL, "no_shift": replace(SMALL, domain_shift=False),
                "exact": replace(SMALL, label_noise=LabelNoise(enabled=False)), "seed1": replace(SMALL, seed=1)}
    return {k: write_world(base / k, v) for k, v in variants.items()}


def _img(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.float32)


def test_deterministic_in_seed(worlds: dict[str, Path]) -> None:
    for sub in ("images", "labels", EXACT_LABELS):
        assert _files(worlds["on"], sub) == _files(worlds["again"], sub)
    assert _files(worlds["on"], "images") != _files(worlds["seed1"], "images")


def test_gooselayout_and_exact_labels_kept_aside(worlds: dict[str, Path]) -> None:
    root = worlds["on"]
    train = index_split(root, "train")
    assert len(train) == 3 and len(index_split(root, "val")) == 3 and len(index_split(root, "test")) == 1
    assert all(s.labelids is not None and EXACT_LABELS not in str(s.labelids) for s in train)
    assert sorted(p.name for p in (root / EXACT_LABELS).iterdir()) == ["train"]  # val/test: no twin
    for s in train:
        exact = exact_train_label(root, s.labelids)
        assert exact.is_file() and exact != Path(s.labelids)


def test_label_noise_only_on_train_labels(worlds: dict[str, Path]) -> None:
    on, exact = worlds["on"], worlds["exact"]
    assert _files(on, "images") == _files(exact, "images")  # noise never touches pixels
    assert {k: v for k, v in _files(on, "labels").items() if k.startswith("val/")} == \
        {k: v for k, v in _files(exact, "labels").items() if k.startswith("val/")}
    rates = []
    for s in index_split(on, "train"):
        coarse = np.asarray(Image.open(s.labelids))
        kept_aside = np.asarray(Image.open(exact_train_label(on, s.labelids)))
        truth = np.asarray(Image.open(Path(str(s.labelids).replace(str(on), str(exact)))))
        assert np.array_equal(kept_aside, truth)  # the aside copy is the exact map
        rates.append(label_noise_rate(truth, coarse))
    assert 0.005 < np.mean(rates) < 0.25, rates
    for s in index_split(exact, "train"):
        assert np.array_equal(np.asarray(Image.open(s.labelids)),
                              np.asarray(Image.open(exact_train_label(exact, s.labelids))))


def _stats(paths_: list[Path]) -> tuple[float, float]:
    """(mean brightness, mean saturation = max - min over channels)."""
    ims = [_img(p) for p in paths_]
    return (float(np.mean([im.mean() for im in ims])),
            float(np.mean([(im.max(-1) - im.min(-1)).mean() for im in ims])))


def test_domain_shift_changes_val_and_test_pixels_only(worlds: dict[str, Path]) -> None:
    on, off = worlds["on"], worlds["no_shift"]
    train_on, train_off = _files(on, "images/train"), _files(off, "images/train")
    assert train_on == train_off
    assert _files(on, "labels") == _files(off, "labels")
    val_on = [Path(s.image) for s in index_split(on, "val")]
    val_off = [Path(s.image) for s in index_split(off, "val")]
    assert all(not np.array_equal(_img(a), _img(b)) for a, b in zip(val_on, val_off))
    # saturation is lower under every val condition (dusk, overcast, snow) than in daylight
    sat_on = [(_img(p).max(-1) - _img(p).min(-1)).mean() for p in val_on]
    sat_off = [(_img(p).max(-1) - _img(p).min(-1)).mean() for p in val_off]
    assert all(a < 0.85 * b for a, b in zip(sat_on, sat_off)), (sat_on, sat_off)
    # and the shifted val split's statistics differ from the train split's
    tr = _stats([Path(s.image) for s in index_split(on, "train")])
    assert _stats(val_on)[1] < 0.8 * tr[1]


def test_scale_premise_sets_the_image_size(tmp_path: Path) -> None:
    root = write_world(tmp_path / "w", replace(SMALL, n_train=1, n_val=1, n_test=0, scale=2.0))
    sizes = {Image.open(s.image).size for s in index_split(root, "train") + index_split(root, "val")}
    assert sizes == {(640, 480)}


def test_named_worlds_resolve_through_the_data_layer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from goose_lib.data import world

    monkeypatch.setenv("GOOSE_SAM3_HOME", str(tmp_path))
    monkeypatch.setitem(world.WORLD_SPECS, "embedded", SMALL)
    root = resolve_data_root("embedded")
    assert root.parent == tmp_path and root.name == f"world-v1-{SMALL.key()}" and (root / "world.json").is_file()
    assert resolve_data_root("embedded") == root  # written once
    with pytest.raises(FileNotFoundError, match="embedded-nope: data root does not exist .embedded datasets: "):
        resolve_data_root("embedded-nope")
    keys = {p.key() for p in WORLD_SPECS.values()}
    assert len(keys) == len(WORLD_SPECS)  # every named variant is its own folder


def test_basic_world_keeps_its_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from goose_lib.data import synthetic

    monkeypatch.setenv("GOOSE_SAM3_HOME", str(tmp_path))
    monkeypatch.setattr(synthetic, "EMBEDDED_COUNTS", {"n_train": 2, "n_val": 1, "n_test": 1})
    root = resolve_data_root("embedded-basic")
    assert root == tmp_path / synthetic.EMBEDDED_NAME
    assert {Image.open(s.image).size for s in index_split(root, "train")} <= {(320, 240), (352, 264), (320, 180)}
