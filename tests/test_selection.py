"""Teacher-vs-student comparison (known answers on hand-made teacher outputs) and the selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from goose_lib.teacher.boxes import boxes_from_labels
from goose_lib.teacher.cache import item_path, write_item
from goose_lib.teacher.prompt import TeacherMaps
from goose_lib.teacher.selection import (
    SelectionRule,
    compare,
    load_selection,
    mean_iou,
    save_selection,
    select_classes,
)


@pytest.fixture()
def perfect_cache(tiny_root, tmp_path):
    """A cache whose teacher reproduces the ground truth inside every box."""
    from goose_lib.data.decode import load_sample
    from goose_lib.data.layout import index_split

    samples = index_split(tiny_root, "val")
    folder = tmp_path / "cache"
    labels = {}
    for s in samples:
        it = load_sample(s)
        bs = boxes_from_labels(it["label"], it["instances"])
        inside = np.zeros(it["label"].shape, bool)
        for c in np.unique(bs.classes):
            inside |= bs.region(int(c))
        cls = np.where(inside & np.isin(it["label"], bs.classes), it["label"], 255).astype(np.uint8)
        maps = TeacherMaps(cls, (cls != 255).astype(np.uint8) * 255, cls.copy(), bs, np.ones(len(bs), np.float32))
        write_item(item_path(folder, s.key), maps, "h", "sig")
        labels[s.key] = it["label"]
    return samples, folder, labels


def _most_boxed_class(samples, labels) -> int:
    counts = np.zeros(64, int)
    for s in samples:
        counts += np.bincount(labels[s.key].ravel(), minlength=256)[:64]
    counts[0] = 0
    return int(counts.argmax())


def test_known_answers_and_selection(perfect_cache, tmp_path) -> None:
    samples, folder, labels = perfect_cache
    x = _most_boxed_class(samples, labels)
    images = {}
    from goose_lib.data.decode import load_sample

    for s in samples:
        images[load_sample(s)["image"].tobytes()] = s.key

    def student(im):  # the ground truth with class x erased (-> class 0)
        lab = labels[images[im.tobytes()]]
        return np.where(lab == x, 0, lab).astype(np.uint8)

    table, scores = compare(samples, folder, student, progress=False)
    assert (table["teacher_iou"] == 1.0).all()
    assert table.loc[x, "student_iou"] == 0.0
    others = table.drop(index=x)
    assert (others["student_iou"] == 1.0).all()
    assert (table["support_images"] >= 1).all() and (table["support_pixels"] > 0).all()
    assert np.isnan(scores.class_iou[x]) or scores.class_iou[x] == 0.0
    box = {"criterion": "box"}
    assert select_classes(table, SelectionRule(margin=0.5, min_pixels=1, **box)) == [x]
    assert select_classes(table, SelectionRule(margin=0.0, min_pixels=1, **box)) == [x]  # ties are not wins
    assert select_classes(table, SelectionRule(min_pixels=10**9, **box)) == []  # not enough support
    assert select_classes(table, SelectionRule(margin=0.5, exclude=(x,), **box)) == []
    # what distillation would change: only x's targets change the student's map (the others agree)
    assert table.loc[x, "distill_gain"] > 0 and (table.drop(index=x)["distill_gain"] == 0).all()
    assert select_classes(table, SelectionRule(margin=0.0, min_pixels=1)) == [x]
    assert mean_iou(table, "teacher_iou") == 1.0


def test_student_of_one_class_scores_the_box_fill_iou(perfect_cache) -> None:
    samples, folder, labels = perfect_cache
    x = _most_boxed_class(samples, labels)
    table, _ = compare(samples, folder, lambda im: np.full(im.shape[:2], x, np.uint8), progress=False)
    assert table.loc[x, "student_iou"] == pytest.approx(table.loc[x, "box_iou"])
    assert 0 < table.loc[x, "box_iou"] < 1


def test_selection_files_and_empty_selection(perfect_cache, tmp_path) -> None:
    samples, folder, _ = perfect_cache
    table, _ = compare(samples, folder, lambda im: np.zeros(im.shape[:2], np.uint8), progress=False)
    rule = SelectionRule(min_pixels=10**9)
    chosen = select_classes(table, rule)
    assert chosen == []
    csv_path, json_path = save_selection(tmp_path / "out", table, chosen, rule, checkpoint="", teacher_checkpoint="t",
                                         teacher_cache=str(folder))
    assert load_selection(json_path) == []
    back = pd.read_csv(csv_path, index_col=0)
    assert list(back.index) == list(table.index) and not back["selected"].any()
    ok = select_classes(table, SelectionRule(min_pixels=1, max_classes=2))
    _, json2 = save_selection(tmp_path / "o2", table, ok, SelectionRule(), checkpoint="s", teacher_checkpoint="t",
                              teacher_cache="c")
    assert load_selection(json2) == ok and len(ok) == 2


def test_bad_selection_file_names_it(tmp_path) -> None:
    p = tmp_path / "selection.json"
    p.write_text('{"classes": ["sky"]}')
    with pytest.raises(ValueError, match=str(p)):
        load_selection(p)


def test_missing_teacher_item_is_named(tiny_root, tmp_path) -> None:
    from goose_lib.data.layout import index_split

    samples = index_split(tiny_root, "val")
    with pytest.raises(FileNotFoundError, match="no teacher output"):
        compare(samples, tmp_path, lambda im: np.zeros(im.shape[:2], np.uint8), progress=False)
