"""The mask lab driven from Python: boxes set on its widget model give the teacher's masks
(equal to the batch teacher's), IoUs with known answers, overlays that change, one encode per
sample however many edits, and an export that round-trips into the comparison and distillation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from goose_lib.teacher.config import TeacherConfig
from goose_lib.teacher.prompt import Teacher
from goose_lib.viz.overlay import from_png, overlay


class StubTeacher:
    """A teacher whose every box mask is the constant logit ``value`` (known answers)."""

    def __init__(self, value: float) -> None:
        self.cfg, self.image_size, self.value = TeacherConfig(), 32, value
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.calls = {"encode": 0, "decode": 0, "images": 0}

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.calls["encode"] += 1
        return [x]

    def decode(self, emb: list[torch.Tensor], boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls["decode"] += 1
        n = boxes.shape[1]
        return torch.full((1, n, 8, 8), self.value), torch.full((1, n), 0.75)


@pytest.fixture(scope="module")
def dataset(tiny_root):
    from goose_lib.data.dataset import GooseDataset

    return GooseDataset(tiny_root, "val")


def _largest_object(label: np.ndarray) -> tuple[int, np.ndarray]:
    """(class, oracle box) of the largest boxed object in a label (a class other than void)."""
    from goose_lib.teacher.boxes import boxes_from_labels

    b = boxes_from_labels(label)
    j = int(np.argmax(b.areas))
    return int(b.classes[j]), b.xyxy[j]


def _lab(dataset, teacher, **kw):
    from goose_lib.viz.mask_lab import MaskLab

    kw.setdefault("max_side", 4000)  # no downscaling: panels are comparable pixel by pixel
    kw.setdefault("editor_side", 4000)
    return MaskLab(dataset, teacher, **kw)


def test_masks_equal_the_batch_teacher_and_encode_once_per_sample(dataset, tracker) -> None:
    from goose_lib.teacher.boxes import make_boxset

    teacher = Teacher(tracker)
    item = dataset[0]
    c, box = _largest_object(item["label"])
    lab = _lab(dataset, teacher, klass=c, oracle=False)
    assert teacher.calls["encode"] == 0 and len(lab.result.maps.boxes) == 0  # no box yet: nothing encoded
    boxes = np.array([box, [5, 6, 120, 90]], np.float32)
    lab.set_boxes(boxes, [c, c])
    ref = Teacher(tracker).predict([item["image"]], [make_boxset(boxes, [c, c], ["component"] * 2, *item["label"].shape)])[0]
    for name in ("teacher_cls", "teacher_region"):
        np.testing.assert_array_equal(getattr(lab.result.maps, name), getattr(ref, name))
    assert np.abs(lab.result.maps.teacher_prob.astype(int) - ref.teacher_prob).max() <= 1
    np.testing.assert_allclose(lab.result.maps.box_scores, ref.box_scores, atol=1e-5)
    assert teacher.calls == {"encode": 1, "decode": 1, "images": 0}
    # move the second box: one decode of one box; delete it: no decode; the class of a box: none
    lab.set_boxes(np.array([box, [10, 6, 120, 90]]), [c, c])
    assert (teacher.calls["decode"], lab.result.decoded) == (2, 1)
    lab.set_boxes(np.array([box]), [c])
    assert (teacher.calls["decode"], lab.result.decoded, len(lab.ious)) == (2, 0, 1)
    other = next(k for k in lab._names if k != c)
    lab.set_boxes(np.array([box]), [other])
    assert teacher.calls["decode"] == 2 and lab.ious["class_id"].tolist() == [other]
    assert teacher.calls["encode"] == 1  # four edits, one encode
    lab.index.value = 1
    lab.set_boxes(np.array([[0, 0, 50, 50]]), [c])
    lab.set_boxes(np.array([[0, 0, 60, 50]]), [c])
    assert teacher.calls["encode"] == 2  # a new sample: encoded once more
    lab.index.value = 0  # back: the embedding of sample 0 was dropped, so it is encoded again
    lab.set_boxes(np.array([box]), [c])
    assert teacher.calls["encode"] == 3


def test_widget_model_boxes_are_in_the_displayed_frame(dataset) -> None:
    """``boxes.bboxes`` (what the browser edits) is in the downscaled picture's pixels."""
    lab = _lab(dataset, StubTeacher(10.0), oracle=False, editor_side=160)  # 320x240 shown at 160x120
    c = int(lab.klass.value)
    lab.boxes.bboxes = [{"x": 10, "y": 20, "width": 30, "height": 40, "label": lab._names[c]}]
    np.testing.assert_allclose(lab.result.maps.boxes.xyxy, [[20, 40, 80, 120]])
    assert lab.ious["mask_pixels"].tolist() == [60 * 80]  # logit +10: the whole box
    lab.boxes.bboxes = [{"x": 40, "y": 20, "width": -30, "height": 40, "label": "no such class"}]
    np.testing.assert_allclose(lab.result.maps.boxes.xyxy, [[20, 40, 80, 120]])  # normalised
    assert lab.ious["class_id"].tolist() == [c]  # an unknown label takes the chosen class


@pytest.mark.parametrize("logit", [10.0, -10.0])
def test_ious_against_known_answers(dataset, logit: float) -> None:
    item = dict(dataset[0])
    c, box = _largest_object(item["label"])
    x1, y1, x2, y2 = (int(v) for v in box)
    label = item["label"].copy()
    label[y1:y1 + 3, x1:x2] = 255  # unlabelled rows inside the box: left out of the label IoU
    item["label"] = label
    wrong = np.where(label == c, (c + 1) % 64, c).astype(np.uint8)  # the student is wrong everywhere
    lab = _lab([item], StubTeacher(logit), ontology=dataset.ontology, klass=c, oracle=False,
               predict=lambda image: wrong)
    lab.set_boxes(np.array([box]), [c])
    inside = label[y1:y2, x1:x2]
    gt = int(((inside == c) & (inside != 255)).sum())
    valid = int((inside != 255).sum())
    row = lab.ious.iloc[0]
    if logit > 0:  # the mask fills the box: IoU = class pixels / box pixels
        assert row["iou_label"] == pytest.approx(gt / valid)
        assert row["iou_student"] == pytest.approx(int((wrong[y1:y2, x1:x2] == c).sum()) / inside.size)
        assert row["mask_pixels"] == inside.size
    else:  # an empty mask: IoU 0 against a non-empty class region
        assert row["iou_label"] == 0.0 and row["iou_student"] == 0.0 and row["mask_pixels"] == 0
    assert row["score"] == pytest.approx(0.75)


def test_overlays_update_with_the_boxes(dataset) -> None:
    item = dataset[0]
    image, label = item["image"], item["label"]
    c, box = _largest_object(label)
    lab = _lab(dataset, StubTeacher(10.0), klass=c, oracle=False, predict=lambda im: label)
    blank = from_png(lab.image.value)
    h, w = label.shape
    assert blank.shape == (h, 3 * w + 8, 3)
    np.testing.assert_array_equal(blank[:, :w], image)  # no box: the teacher panel is the image
    x1, y1, x2, y2 = (int(v) for v in box)
    lab.set_boxes(np.array([box]), [c])
    pic = from_png(lab.image.value)
    expect = overlay(image, np.full(label.shape, c, np.uint8), lab.ontology, alpha=0.5)
    np.testing.assert_array_equal(pic[y1 + 1:y2 - 1, x1 + 1:x2 - 1], expect[y1 + 1:y2 - 1, x1 + 1:x2 - 1])
    outside = np.ones(label.shape, bool)
    outside[max(0, y1 - 1):y2 + 1, max(0, x1 - 1):x2 + 1] = False
    np.testing.assert_array_equal(pic[:, :w][outside], image[outside])
    # the label and student panels colour the box's class only
    lab_panel = pic[:, w + 4:2 * w + 4]
    np.testing.assert_array_equal(lab_panel[outside & (label != c)], image[outside & (label != c)])
    inner = np.zeros(label.shape, bool)
    inner[y1 + 1:y2 - 1, x1 + 1:x2 - 1] = True
    np.testing.assert_array_equal(lab_panel[inner & (label == c)], expect[inner & (label == c)])
    np.testing.assert_array_equal(lab_panel[inner & (label != c)], image[inner & (label != c)])
    lab.alpha.value = 0.0
    np.testing.assert_array_equal(from_png(lab.image.value)[:, :w][outside], image[outside])
    assert "iou_label" in lab.table.value and lab.ontology.names[c] in lab.table.value
    lab.set_boxes(np.zeros((0, 4)), [])  # clearing removes the masks
    assert lab.ious.empty and (lab.result.maps.teacher_cls == 255).all()


def test_oracle_boxes_of_the_chosen_class(dataset) -> None:
    from goose_lib.teacher.boxes import boxes_from_labels

    item = dataset[0]
    c, _ = _largest_object(item["label"])
    lab = _lab(dataset, StubTeacher(10.0), klass=c)  # oracle boxes on open
    ref = boxes_from_labels(item["label"], item["instances"], classes=[c])
    np.testing.assert_allclose(lab.result.maps.boxes.xyxy, ref.xyxy, atol=1e-4)
    other = next(k for k in np.unique(item["label"]) if k not in (0, c, 255))
    lab.klass.value = int(other)
    lab.load_oracle()  # adds the other class's boxes, keeps the first class's
    assert set(lab.ious["class_id"]) == {c, int(other)}


def test_export_round_trips_into_comparison_and_distillation(dataset, tmp_path) -> None:
    from goose_lib.teacher.cache import item_path, read_item, write_item
    from goose_lib.teacher.curated import CuratedError, curated_cache, curated_keys, read_curated_item
    from goose_lib.teacher.selection import compare
    from goose_lib.train.distill import TeacherTargets

    item = dataset[0]
    c, box = _largest_object(item["label"])
    lab = _lab(dataset, StubTeacher(10.0), klass=c, oracle=False, teacher_fingerprint="fp123")
    with pytest.raises(ValueError, match="nothing accepted"):
        lab.export(tmp_path / "x")
    lab.set_boxes(np.array([box]), [c])
    lab.accept()
    key = lab.key()
    out = lab.export(tmp_path / "export")
    manifest = json.loads((out / "mask_lab.json").read_text())
    assert manifest["teacher"]["fingerprint"] == "fp123" and curated_keys(out) == [key]
    entry = manifest["samples"][0]
    assert entry["boxes"][0]["class_id"] == c and (out / entry["boxes"][0]["mask"]).is_file()
    assert (out / f"{key}_labelids.png").is_file()  # submission-style: one PNG per map and sample
    got = read_curated_item(out, key)
    for name in ("teacher_cls", "teacher_prob", "teacher_region"):
        np.testing.assert_array_equal(got[name], getattr(lab.result.maps, name))
    np.testing.assert_allclose(got["boxes"].xyxy, lab.result.maps.boxes.xyxy)
    folder = curated_cache(out, tmp_path / "cache")
    cached = read_item(item_path(folder, key))
    np.testing.assert_array_equal(cached["teacher_cls"], got["teacher_cls"])
    assert curated_cache(out, tmp_path / "cache") == folder  # unchanged export: same folder
    # the comparison takes it as it is: a mask filling its box scores the box-fill IoU
    table, _ = compare([dataset.samples[0]], folder, lambda im: item["label"], progress=False)
    assert table.loc[c, "teacher_iou"] == pytest.approx(table.loc[c, "box_iou"])
    assert table.loc[c, "student_iou"] == pytest.approx(1.0)
    targets = TeacherTargets(folder, expected_fingerprint="fp123")(item)
    np.testing.assert_array_equal(targets["teacher_cls"], got["teacher_cls"])
    # over a base cache: the curated sample replaces the base's item, the others stay
    from goose_lib.io import atomic_write_json
    from goose_lib.teacher.prompt import TeacherMaps

    base = tmp_path / "base"
    atomic_write_json(base / "manifest.json", {"key": {"checkpoint_fingerprint": "fp123"}, "key_hash": "b"})
    h, w = item["label"].shape
    for s in dataset.samples[:2]:
        maps = TeacherMaps(np.full((h, w), 7, np.uint8), np.zeros((h, w), np.uint8), np.full((h, w), 7, np.uint8),
                           lab.result.maps.boxes, np.zeros(1, np.float32))
        write_item(item_path(base, s.key), maps, "b", "")
    merged = curated_cache(out, tmp_path / "cache", base=base)
    assert merged != folder
    np.testing.assert_array_equal(read_item(item_path(merged, key))["teacher_cls"], got["teacher_cls"])
    other = read_item(item_path(merged, dataset.samples[1].key))
    assert (other["teacher_cls"] == 7).all() and other["key_hash"] == "b"
    with pytest.raises(CuratedError, match="mask_lab.json"):
        read_curated_item(tmp_path, key)
    (out / f"{key}_prob.png").unlink()
    with pytest.raises(CuratedError, match="_prob.png: missing"):
        read_curated_item(out, key)


def test_bad_input_is_named(dataset) -> None:
    lab = _lab(dataset, StubTeacher(1.0), classes=[12, 17], oracle=False)
    with pytest.raises(ValueError, match=r"classes \[5\]"):
        lab.set_boxes(np.array([[0, 0, 5, 5]]), [5])
    with pytest.raises(ValueError, match="no boxes to accept"):
        lab.accept()
    with pytest.raises(ValueError, match="not among"):
        _lab(dataset, StubTeacher(1.0), classes=[12, 17], klass=3)


def test_explorer_and_error_browser_open_the_current_sample(dataset) -> None:
    from goose_lib.viz.widgets import DatasetExplorer, ErrorBrowser

    explorer = DatasetExplorer(dataset, max_side=64)
    explorer.index.value = 2
    c, _ = _largest_object(dataset[2]["label"])
    explorer.highlight.value = c
    lab = explorer.mask_lab(StubTeacher(10.0))
    assert lab.index.value == 2 and lab.key() == dataset.samples[2].key and lab.klass.value == c
    pred = np.zeros_like(dataset[1]["label"])
    items = [{"image": dataset[i]["image"], "label": dataset[i]["label"], "pred": pred, "key": f"k{i}"}
             for i in range(2)]
    browser = ErrorBrowser(items, dataset.ontology, max_side=64)
    browser.index.value = 1
    lab = browser.mask_lab(StubTeacher(10.0), klass=0, oracle=False)
    lab.set_boxes(np.array([[0, 0, 40, 40]]), [0])
    assert lab.key() == "k1" and lab.ious["iou_student"].tolist() == [1.0]  # pred 0 fills the box


def test_figure_is_a_static_snapshot(dataset) -> None:
    c, box = _largest_object(dataset[0]["label"])
    lab = _lab(dataset, StubTeacher(10.0), klass=c, oracle=False)
    lab.set_boxes(np.array([box]), [c])
    fig = lab.figure()
    assert len(fig.axes) == 3 and lab.key() in fig._suptitle.get_text()
    assert any("1.00" in t.get_text() or "/" in t.get_text() for t in fig.axes[0].texts)


def test_reports_leave_the_box_editor_out_of_the_offline_widget_state(dataset, tmp_path) -> None:
    """The static renderer cannot load anywidget offline: the report keeps the lab's standard
    widgets (its panels) and drops the editor model, its references and its view output."""
    import ipywidgets as W
    import nbformat

    from goose_lib.reports.html import STATE_MIME, VIEW_MIME, HtmlReporter, offline_widgets

    lab = _lab(dataset, StubTeacher(10.0), oracle=False)
    state = W.Widget.get_manager_state(drop_defaults=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {STATE_MIME: state}
    views = [{"output_type": "display_data", "metadata": {},
              "data": {"text/plain": name, VIEW_MIME: {"version_major": 2, "version_minor": 0, "model_id": w.model_id}}}
             for name, w in (("lab", lab.widget), ("editor", lab.boxes))]
    nb.cells.append(nbformat.v4.new_code_cell("lab", outputs=[nbformat.from_dict(v) for v in views]))
    editor = lab.boxes.model_id
    assert state["state"][editor]["model_module"] == "anywidget"
    out = offline_widgets(nb)
    kept = out.metadata["widgets"][STATE_MIME]["state"]
    assert editor not in kept and lab.widget.model_id in kept and lab.image.model_id in kept
    assert f"IPY_MODEL_{editor}" not in json.dumps(kept)
    assert all(m["model_module"].startswith("@jupyter-widgets/") for m in kept.values())
    outputs = out.cells[0].outputs
    assert VIEW_MIME in outputs[0]["data"] and VIEW_MIME not in outputs[1]["data"]
    assert outputs[1]["data"]["text/plain"] == "editor"
    assert editor in nb.metadata["widgets"][STATE_MIME]["state"]  # the input is left as it was
    html = HtmlReporter().render(nb, tmp_path / "report.html", tmp_path / "_static")
    assert "anywidget" not in html and lab.image.model_id in html
