"""Decoding, validation of bad input (each case names its file), the torch Dataset, check_root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from goose_lib.config import DataConfig
from goose_lib.data.dataset import GooseDataset
from goose_lib.data.decode import (
    DataError,
    check_root,
    load_sample,
    read_image,
    read_instances,
    read_label,
)
from goose_lib.data.layout import LayoutError, index_split
from goose_lib.ontology import MAPPING_CSV, OntologyError


def _first(root: Path, split: str = "train"):
    return index_split(root, split, use_cache=False)[0]


def test_load_sample_formats(tiny_root: Path) -> None:
    samples = index_split(tiny_root, "train")
    assert len(samples) == 8
    for s in samples[:3]:
        item = load_sample(s)
        img, lab, inst = item["image"], item["label"], item["instances"]
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert lab.dtype == np.uint8 and lab.shape == img.shape[:2] and lab.max() < 64
        assert inst.dtype == np.int32 and inst.shape == img.shape[:2]
        assert item["sample"] is s
        # every instance id belongs to pixels of one class (synthetic objects are single-class)
        for iid in np.unique(inst[inst > 0]):
            assert len(np.unique(lab[inst == iid])) == 1
    test = load_sample(index_split(tiny_root, "test")[0])
    assert test["label"] is None and test["instances"] is None and test["image"].ndim == 3


def test_readers_accept_8_and_16_bit_instance_maps(tmp_path: Path) -> None:
    ids = np.array([[0, 1], [300, 65535]], np.uint16)
    Image.fromarray(ids).save(tmp_path / "i16.png")
    Image.fromarray(np.array([[0, 7], [7, 255]], np.uint8)).save(tmp_path / "i8.png")
    a, b = read_instances(tmp_path / "i16.png"), read_instances(tmp_path / "i8.png")
    assert a.dtype == b.dtype == np.int32
    assert a.tolist() == [[0, 1], [300, 65535]] and b.tolist() == [[0, 7], [7, 255]]
    Image.fromarray(np.full((2, 3), 9, np.uint8)).convert("RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png").shape == (2, 3, 3)
    Image.fromarray(np.full((2, 3), 9, np.uint8)).save(tmp_path / "gray.png")
    assert read_image(tmp_path / "gray.png").tolist() == [[[9, 9, 9]] * 3] * 2


def test_corrupt_png(tmp_path: Path) -> None:
    path = tmp_path / "x_labelids.png"
    path.write_bytes(b"this is not a png at all")
    with pytest.raises(DataError) as err:
        read_label(path)
    assert str(err.value).startswith(f"{path}: cannot decode label") and "corrupt" in str(err.value)


def test_truncated_png(root: Path) -> None:
    s = _first(root)
    data = s.image.read_bytes()
    s.image.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        load_sample(s)
    assert str(err.value).startswith(f"{s.image}: cannot decode image")


def test_label_ids_outside_the_class_table(root: Path) -> None:
    s = _first(root)
    lab = np.asarray(Image.open(s.labelids)).copy()
    lab[0, :3] = [64, 70, 200]
    Image.fromarray(lab).save(s.labelids)
    with pytest.raises(DataError) as err:
        load_sample(s)
    msg = str(err.value)
    assert msg.startswith(f"{s.labelids}: label ids [64, 70, 200] outside the class table 0..63")
    assert load_sample(s, num_classes=201)["label"][0, 2] == 200


def test_color_png_is_never_decoded_as_ids(root: Path) -> None:
    s = _first(root)
    with pytest.raises(DataError, match="mode 'RGB'.*_color.png"):
        read_label(s.color)


def test_size_mismatch(root: Path) -> None:
    s = _first(root)
    lab = np.asarray(Image.open(s.labelids))
    Image.fromarray(lab[:-2]).save(s.labelids)
    with pytest.raises(DataError) as err:
        load_sample(s)
    h, w = lab.shape
    assert str(err.value).startswith(f"{s.labelids}: size {w}x{h - 2} differs from its image {s.image} ({w}x{h})")


def test_image_without_label(root: Path) -> None:
    s = _first(root)
    s.labelids.unlink()
    with pytest.raises(DataError) as err:
        load_sample(s)
    assert str(err.value).startswith(f"{s.image}: image has no label file (expected {s.labelids})")


def test_mapping_csv_with_missing_columns(root: Path) -> None:
    csv = root / MAPPING_CSV
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(",".join(line.split(",")[:2]) for line in lines) + "\n")
    with pytest.raises(OntologyError) as err:
        GooseDataset(root, "train")
    assert str(err.value).startswith(f"{csv}: missing column(s) ['has_instance', 'hex']")


def test_empty_or_non_goose_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="not a GOOSE root"):
        GooseDataset(tmp_path / "empty", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GooseDataset(tmp_path / "missing", "train")


def test_dataset_items_transform_and_loader(tiny_root: Path) -> None:
    ds = GooseDataset(tiny_root, "train", config=DataConfig(limit=5))
    assert isinstance(ds, torch.utils.data.Dataset)
    assert len(ds) == 5 and ds.split == "train" and ds.ontology.num_classes == 64
    assert ds[-1]["sample"].key == ds.samples[4].key
    with pytest.raises(IndexError):
        ds[5]
    ds_t = GooseDataset(tiny_root, "val", transform=lambda it: it["label"].shape)
    assert ds_t[0] == load_sample(ds_t.samples[0])["image"].shape[:2]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=lambda b: [x["sample"].key for x in b])
    assert [k for batch in loader for k in batch] == [s.key for s in ds.samples]
    left = GooseDataset(tiny_root, "train", config=DataConfig(cameras=("camera_left",)))
    assert {s.camera for s in left.samples} == {"camera_left"} and 0 < len(left) < 8


def test_embedded_root_sentinel(goose_home: Path) -> None:
    ds = GooseDataset("embedded-basic", "val", config=DataConfig(limit=2))
    assert ds.root == goose_home / "embedded-goose-v1" and len(ds) == 2


def test_skip_bad_warns_counts_and_never_returns_bad_data(root: Path) -> None:
    samples = index_split(root, "train", use_cache=False)
    samples[0].labelids.unlink()  # missing label: dropped when the dataset is built
    samples[1].image.write_bytes(b"\x89PNG garbage")  # undecodable: replaced by the next good one
    with pytest.raises(DataError):
        GooseDataset(root, "train")[0]
    with pytest.warns(UserWarning, match="skipped 1 sample"):
        ds = GooseDataset(root, "train", config=DataConfig(skip_bad=True))
    assert len(ds) == 7 and ds.skipped[0][0] == samples[0].key
    with pytest.warns(UserWarning, match="skipping bad sample"):
        item = ds[0]
    assert item["sample"].key == samples[2].key
    assert [k for k, _ in ds.skipped] == [samples[0].key, samples[1].key]
    assert ds.skipped[1][1].startswith(str(samples[1].image))


def test_check_root_names_every_problem_file(root: Path) -> None:
    n, problems = check_root(root, progress=False)
    assert (n, problems) == (15, [])
    tr = index_split(root, "train", use_cache=False)
    va = index_split(root, "val", cameras=("camera_left",), use_cache=False)  # no nir twin
    tr[0].image.write_bytes(b"junk")                                 # corrupt image
    lab = np.asarray(Image.open(tr[1].labelids)).copy()
    lab[0, 0] = 99
    Image.fromarray(lab).save(tr[1].labelids)                        # id out of range
    Image.fromarray(lab[:, :-1] % 64).save(tr[2].labelids)           # size mismatch (and no bad id)
    tr[3].labelids.unlink()                                          # image without label
    va[0].image.unlink()                                             # label without image
    n, problems = check_root(root, progress=False, workers=2)
    assert n == 14
    starts = sorted(p.split(": ")[0] for p in problems)
    assert starts == sorted(map(str, [tr[0].image, tr[1].labelids, tr[2].labelids, tr[3].image, va[0].labelids]))
    n, only_val = check_root(root, ["val"], progress=False)
    assert n == 3 and len(only_val) == 1 and "label without an image" in only_val[0]


def test_check_root_reports_instance_anomalies(root: Path) -> None:
    from goose_lib.ontology import Ontology

    ont = Ontology.load(root)
    s = _first(root)
    label = read_label(s.labelids)
    inst = read_instances(s.instanceids)
    sky, car = ont.index("sky"), ont.index("car")
    assert sky not in ont.instance_classes and car in ont.instance_classes
    assert (label == sky).any()
    inst[label == sky] = 7  # ids on a class without instances
    label[:2, :2], inst[:2, :2] = car, 60000  # id 60000 (unused): a few car pixels ...
    label[2:4, :2], inst[2:4, :2] = ont.index("truck"), 60000  # ... and a few truck pixels
    Image.fromarray(inst.astype(np.uint16)).save(s.instanceids)
    Image.fromarray(label).save(s.labelids)
    _, problems = check_root(root, ["train"], progress=False)
    mine = [p for p in problems if p.startswith(str(s.instanceids))]
    assert len(mine) == 2, problems
    assert "instance ids on classes without instances" in mine[0] and f"sky ({sky})" in mine[0]
    assert "1 instance id(s) span several classes" in mine[1] and "id 60000: car/truck" in mine[1]
    assert len(problems) == 2  # the untouched synthetic samples are clean
