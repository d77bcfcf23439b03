"""The oracle teacher (issue 20, deliverable 5): a teacher cache written from the exact training
labels in SAM3's boxes. Known answers on a hand-made map, then on a small embedded world: the
cache's teacher_cls equals the exact label wherever it says something (and so differs from the
noisy training label there), it is keyed apart from SAM3 caches, training reads it as its
``teacher_cache``, and a root without ``labels_exact`` is an error naming that folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from goose_lib.teacher.boxes import BoxSet, boxes_from_labels
from goose_lib.teacher.config import BoxParams, TeacherConfig

NONE = 255


# --- a hand-made map -----------------------------------------------------------------------------

def _maps() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(coarse label, coarse instances, exact label, exact instances), 8x10.

    Class 5 (an instance class): coarse instance 1 covers columns 1-3, instance 2 columns 4-6
    (rows 1-4); exactly, instance 1 is only columns 1-2 and column 3 belongs to instance 2.
    Class 7 (stuff): coarse rows 6-7 over the whole width, exactly only columns 0-7 (8-9 are void)."""
    coarse, exact = np.zeros((8, 10), np.uint8), np.zeros((8, 10), np.uint8)
    coarse_inst, exact_inst = np.zeros((8, 10), np.int32), np.zeros((8, 10), np.int32)
    coarse[1:5, 1:7] = exact[1:5, 1:7] = 5
    coarse_inst[1:5, 1:4], coarse_inst[1:5, 4:7] = 1, 2
    exact_inst[1:5, 1:3], exact_inst[1:5, 3:7] = 1, 2
    coarse[6:8, :] = 7
    exact[6:8, :8] = 7
    return coarse, coarse_inst, exact, exact_inst


BP = BoxParams(min_area=1)


def _boxes(coarse: np.ndarray, coarse_inst: np.ndarray) -> BoxSet:
    return boxes_from_labels(coarse, coarse_inst, params=BP, instance_classes={5})


@pytest.mark.parametrize("overlap", ["smallest_box", "max_prob"])
def test_oracle_maps_known_answer(overlap: str) -> None:
    from goose_lib.teacher.oracle import box_instance_ids, oracle_maps

    coarse, coarse_inst, exact, exact_inst = _maps()
    boxes = _boxes(coarse, coarse_inst)
    assert boxes.sources == ("instance", "instance", "component")
    ids = box_instance_ids(coarse, coarse_inst, boxes, box_params=BP, instance_classes={5})
    assert ids.tolist() == [1, 2, 0]
    maps = oracle_maps(exact, exact_inst, boxes, ids, TeacherConfig(overlap=overlap))
    want_cls = np.full((8, 10), NONE, np.uint8)
    want_cls[1:5, 1:3] = 5  # instance 1's exact pixels; column 3 is instance 2's, outside its box
    want_cls[1:5, 4:7] = 5
    want_cls[6:8, :8] = 7  # columns 8-9 are void exactly: the box says nothing there
    want_region = np.full((8, 10), NONE, np.uint8)
    want_region[1:5, 1:7], want_region[6:8, :] = 5, 7
    np.testing.assert_array_equal(maps.teacher_cls, want_cls)
    np.testing.assert_array_equal(maps.teacher_region, want_region)
    np.testing.assert_array_equal(maps.teacher_prob, np.where(want_cls != NONE, 255, 0))
    assert maps.box_scores.tolist() == [1.0, 1.0, 1.0] and maps.boxes is boxes
    # without exact instance ids the instance boxes take the class pixels inside them
    no_ids = oracle_maps(exact, None, boxes, ids, TeacherConfig(overlap=overlap))
    assert (no_ids.teacher_cls[1:5, 1:7] == 5).all()


def test_instance_boxes_must_be_those_of_the_label() -> None:
    from goose_lib.teacher.oracle import box_instance_ids

    coarse, coarse_inst, _, _ = _maps()
    boxes = _boxes(coarse, coarse_inst)
    with pytest.raises(ValueError, match="not made from this label"):
        box_instance_ids(coarse, coarse_inst, boxes, box_params=BoxParams(min_area=1, margin_px=1),
                         instance_classes={5})
    with pytest.raises(ValueError, match="need the label"):
        box_instance_ids(None, None, boxes)


# --- a small embedded world --------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 training images with noisy labels (exact twins under labels_exact/train), 1 val image."""
    from goose_lib.data.world import WorldParams, write_world

    return write_world(tmp_path_factory.mktemp("oracle_world") / "root",
                       WorldParams(n_train=3, n_val=1, n_test=0, scale=1.0))


@pytest.fixture(scope="module")
def oracle_cache(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from goose_lib.teacher.cache import cache_split
    from goose_lib.teacher.oracle import ORACLE

    rep = cache_split(ORACLE, str(world), "train", tmp_path_factory.mktemp("oracle_cache"), teacher_kind="oracle",
                      progress=False)
    assert (rep.total, rep.computed, rep.reused) == (3, 3, 0)
    return rep.folder


def test_oracle_cache_is_the_exact_label_inside_the_sam3_teachers_boxes(world: Path, oracle_cache: Path) -> None:
    from goose_lib.data.decode import load_sample, read_instances, read_label
    from goose_lib.data.embedded import load_ontology
    from goose_lib.data.layout import index_split
    from goose_lib.data.world import exact_train_label
    from goose_lib.teacher.cache import item_path, read_item

    inst_classes = load_ontology(world).instance_classes
    key_hash = json.loads((oracle_cache / "manifest.json").read_text())["key_hash"]
    noisy_told = instance_boxes = 0
    for s in index_split(world, "train"):
        item = load_sample(s)
        exact = read_label(exact_train_label(world, s.labelids), 64)
        exact_inst = read_instances(exact_train_label(world, s.instanceids))
        t = read_item(item_path(oracle_cache, s.key))
        boxes = boxes_from_labels(item["label"], item["instances"], instance_classes=inst_classes)
        np.testing.assert_array_equal(t["boxes"].xyxy, boxes.xyxy)  # SAM3's boxes, from the coarse labels
        np.testing.assert_array_equal(t["boxes"].classes, boxes.classes)
        assert t["boxes"].sources == boxes.sources and t["key_hash"] == key_hash
        instance_boxes += boxes.sources.count("instance")
        told = t["teacher_cls"] != NONE
        assert told.any() and (t["teacher_region"][told] != NONE).all()
        np.testing.assert_array_equal(t["teacher_cls"][told], exact[told])  # the exact label, nothing else
        assert set(np.unique(t["teacher_prob"]).tolist()) <= {0, 255}
        assert (t["box_scores"] == 1.0).all()
        noisy = told & (item["label"] != exact)
        noisy_told += int(noisy.sum())
        assert (t["teacher_cls"][noisy] != item["label"][noisy]).all()
        # an instance box tells its instance's exact pixels (the id the coarse object had)
        made = boxes_from_labels(item["label"], item["instances"], instance_classes=inst_classes, return_masks=True)
        for source, c, mask, (x1, y1, x2, y2) in zip(made.sources, made.classes, made.masks,
                                                      made.xyxy.astype(int)):
            if source == "instance":
                i = int(item["instances"][mask].max())
                mine = (exact[y1:y2, x1:x2] == c) & (exact_inst[y1:y2, x1:x2] == i)
                assert (t["teacher_cls"][y1:y2, x1:x2][mine] == c).all()
    assert instance_boxes > 0
    assert noisy_told > 1000  # where label noise changed pixels, the oracle tells the exact class


def test_oracle_cache_has_its_own_key_and_resumes_on_its_exact_files(world: Path, oracle_cache: Path,
                                                                    tmp_path: Path) -> None:
    from goose_lib.data.layout import index_split
    from goose_lib.data.world import exact_train_label
    from goose_lib.teacher.cache import cache_key, cache_split, key_dir, open_cache
    from goose_lib.teacher.oracle import ORACLE

    key = open_cache(oracle_cache)["key"]
    assert key["teacher_kind"] == "oracle" and key["checkpoint_fingerprint"] == ORACLE
    sam3 = cache_key("f" * 64, instance_classes=key["instance_classes"])
    assert "teacher_kind" not in sam3 and key_dir("c", sam3) != key_dir("c", key)
    assert {k: v for k, v in key.items() if k not in ("teacher_kind", "checkpoint_fingerprint")} == \
        {k: v for k, v in sam3.items() if k != "checkpoint_fingerprint"}  # every other parameter as SAM3's
    again = cache_split(ORACLE, str(world), "train", oracle_cache.parent, teacher_kind="oracle", progress=False)
    assert again.folder == oracle_cache and (again.computed, again.reused) == (0, 3)
    # a changed exact label file (not the training label) is recomputed
    sample = index_split(world, "train")[1]
    copy = tmp_path / "c"
    shutil.copytree(oracle_cache.parent, copy)
    exact = exact_train_label(world, sample.labelids)
    st = exact.stat()
    os.utime(exact, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        rep = cache_split(ORACLE, str(world), "train", copy, teacher_kind="oracle", progress=False)
    finally:
        os.utime(exact, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (rep.computed, rep.reused) == (1, 2)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SAM3 at 112x112 input (the student's backbone)."""
    from goose_lib.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ck112") / "sam3", image_size=112)


def test_training_reads_the_oracle_cache_as_its_teacher(world: Path, oracle_cache: Path, small_ckpt: Path,
                                                        tmp_path: Path, monkeypatch) -> None:
    from goose_lib.models import checkpoint as ckpt
    from goose_lib.train import distill
    from goose_lib.train.config import TrainConfig
    from goose_lib.train.loop import train

    changed = []
    real_replace = distill.replace_labels

    def spy_replace(label, tcls, tprob, tregion, classes, **kw):
        out = real_replace(label, tcls, tprob, tregion, classes, **kw)
        changed.append(int((out != label).sum()))
        return out

    monkeypatch.setattr(distill, "replace_labels", spy_replace)
    cfg = TrainConfig(data_root=str(world), sam3_checkpoint=str(small_ckpt), decoder_channels=16, batch_size=2,
                      steps=2, train_limit=3, val_limit=1, val_interval=0, checkpoint_interval=2, log_interval=1,
                      warmup_steps=1, distill_mode="replace", distill_classes=tuple(range(1, 64)),
                      teacher_cache=str(oracle_cache))
    res = train(cfg, tmp_path / "run", progress=False)
    assert len(changed) == 2 and sum(changed) > 0  # the oracle's exact classes replaced noisy labels
    assert ckpt.load_run(res.checkpoint)["distill_active"] is True
    assert np.isfinite([r["loss"] for r in res.history if "loss" in r]).all()


# --- errors and parameters ---------------------------------------------------------------------

def test_a_root_without_exact_labels_is_an_error_naming_the_folder(tiny_root: Path, tmp_path: Path,
                                                                    capsys) -> None:
    from goose_lib.cli import main
    from goose_lib.teacher.cache import cache_split
    from goose_lib.teacher.oracle import ORACLE, ExactLabelsMissing

    missing = str(tiny_root.resolve() / "labels_exact")
    with pytest.raises(ExactLabelsMissing, match="labels_exact") as err:
        cache_split(ORACLE, str(tiny_root), "train", tmp_path / "c", teacher_kind="oracle", progress=False)
    assert missing in str(err.value)
    assert not (tmp_path / "c").exists()  # nothing written
    assert main(["teacher", "--data-root", str(tiny_root), "--teacher", "oracle", "--cache-dir",
                 str(tmp_path / "c"), "--no-progress"]) == 2
    assert missing in capsys.readouterr().err


def test_cli_teacher_oracle_writes_the_cache(world: Path, tmp_path: Path, capsys) -> None:
    from goose_lib.cli import main
    from goose_lib.teacher.cache import open_cache

    assert main(["teacher", "--data-root", str(world), "--teacher", "oracle", "--cache-dir", str(tmp_path / "c"),
                 "--limit", "2", "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["teacher"] == "oracle" and (summary["computed"], summary["total"]) == (2, 2)
    assert open_cache(summary["cache"])["key"]["teacher_kind"] == "oracle"
    rec = json.loads((Path(summary["cache"]) / "provenance.json").read_text())
    assert rec["params"]["teacher"] == "oracle"


def test_teacher_parameter() -> None:
    from goose_lib.config import ParameterError, validate
    from goose_lib.params import TeacherParams
    from goose_lib.teacher.config import AdaptConfig
    from goose_lib.teacher.pipeline import run_teacher

    assert TeacherParams().teacher == "sam3"
    oracle = validate(TeacherParams, {"teacher": "oracle", "sam3_checkpoint": "embedded-random"})
    assert oracle.adapt_config().steps == 0  # auto: no adaptation for the oracle
    with pytest.raises(ParameterError, match="teacher"):
        validate(TeacherParams, {"teacher": "perfect"})
    with pytest.raises(ParameterError, match="no decoder to adapt"):
        validate(TeacherParams, {"teacher": "oracle", "adapt_steps": 5})

    with pytest.raises(ValueError, match="no decoder to adapt"):
        run_teacher("embedded", "unused", cache_splits={}, adapt=AdaptConfig(steps=1), teacher_kind="oracle")


@pytest.mark.slow
def test_notebook_02_with_the_oracle_teacher(world: Path, small_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    import papermill as pm

    from goose_lib.paths import repo_root

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pm.execute_notebook(
        str(repo_root() / "notebooks" / "02_teacher_comparison.ipynb"), str(tmp_path / "executed.ipynb"),
        cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
        parameters={"teacher": "oracle", "data_root": str(world), "sam3_checkpoint": str(small_ckpt),
                    "cache_dir": str(tmp_path / "cache"), "compare_holdout": 0.0, "min_pixels": 1, "margin": -1.0,
                    "gallery_rows": 1, "gallery_classes": 2, "progress": False, "out_dir": "out"})
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["teacher_checkpoint"] == "oracle" and m["adapt_steps"] == 0
    assert m["teacher_cache"].startswith(str(tmp_path / "cache")) and m["selection_file"] == "out/selection.json"
    assert 0 < m["teacher_miou"] <= 1 and 0 < m["box_fill_miou"] <= 1 and m["selected_classes"]
    assert json.loads((Path(m["teacher_cache"]) / "manifest.json").read_text())["key"]["teacher_kind"] == "oracle"
    assert m["mask_lab_export"] is None and len(m["teacher_class_iou"]) == 64


def test_agreement_with_the_exact_labels_is_one_for_the_oracle_and_less_for_the_coarse_labels(
        world: Path, oracle_cache: Path) -> None:
    """Known answer of the distillation-premise measure: the oracle's masks are the exact labels
    (IoU 1 in its boxes), the coarse labels are not (thin structures thickened, some missed)."""
    from goose_lib.data.embedded import load_ontology
    from goose_lib.data.layout import index_split
    from goose_lib.teacher.agreement import THIN_CLASSES, exact_agreement, thin_summary

    names = load_ontology(world).names
    agree = exact_agreement(index_split(world, "train"), oracle_cache, world, range(64))
    assert len(agree) >= 5
    assert all(a["teacher"] == pytest.approx(1.0, abs=0.02) for a in agree.values()), agree
    assert min(a["coarse"] for a in agree.values()) < 0.9
    thin = thin_summary(agree, names)
    assert thin["thin_classes"] and set(thin["thin_classes"]) <= set(THIN_CLASSES)
    assert thin["thin_teacher_exact_iou"] > thin["thin_coarse_exact_iou"] + 0.1, thin
