"""notebooks/02_teacher_comparison.ipynb: structure, parameters, the class picker driven from
Python, and a papermill run on tiny data whose recorded numbers are checked against its files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from goose_lib.config import ParameterError, validate
from goose_lib.params import TeacherParams
from goose_lib.paths import repo_root

NOTEBOOK = repo_root() / "notebooks" / "02_teacher_comparison.ipynb"




@pytest.mark.parametrize("bad, match", [
    ({"compare_split": "test"}, "no labels"),
    ({"adapt_steps": -2}, "adapt_steps"),
    ({"no_memory_level": "x"}, "no_memory_level"),
    ({"marign": 0.1}, "unknown"),
])
def test_params_reject_bad_values(bad: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        validate(TeacherParams, bad)


def test_params_map_onto_the_library_configs() -> None:
    p = TeacherParams(min_area=5, box_margin=0.1, mask_threshold=0.6, margin=0.05, adapt_steps=-1,
                      sam3_checkpoint="embedded-random")
    assert p.box_params().min_area == 5 and p.box_params().margin == 0.1
    assert p.teacher_config().mask_threshold == 0.6 and p.selection_rule().margin == 0.05
    assert p.adapt_config().steps == 150  # auto on the random embedded checkpoint
    assert TeacherParams().adapt_config().steps == 0  # the foundation is used as it is
    assert TeacherParams(sam3_checkpoint="/real/sam3").adapt_config().steps == 0  # off for real checkpoints


def _table() -> pd.DataFrame:
    return pd.DataFrame({"name": ["sky", "car", "rock"], "teacher_iou": [0.9, 0.5, 0.4],
                         "student_iou": [0.5, 0.45, 0.6], "gain": [0.4, 0.05, -0.2],
                         "distill_gain": [-0.01, 0.02, 0.03],
                         "support_pixels": [1000, 50, 800], "support_images": [3, 1, 2]},
                        index=pd.Index([53, 12, 40], name="class_id"))


def test_class_picker_driven_from_python(tmp_path) -> None:
    from goose_lib.teacher.config import SelectionRule
    from goose_lib.teacher.selection import load_selection
    from goose_lib.viz.teacher import ClassPicker

    default = ClassPicker(_table(), SelectionRule(min_pixels=100))  # criterion "distill": what distilling changes
    assert default.classes == [40] and "distill_gain +0.030" in default.choice.options[2][0]
    picker = ClassPicker(_table(), SelectionRule(criterion="box", margin=0.0, min_pixels=100))
    assert picker.classes == [53]  # car lacks support, rock loses
    picker.min_pixels.value = 10
    assert picker.classes == [53, 12]
    picker.margin.value = 0.1
    assert picker.classes == [53] and "1 classes selected" in picker.summary.value and "sky" in picker.summary.value
    picker.choice.value = (53, 40)  # a hand-made choice
    assert picker.classes == [53, 40] and "rock" in picker.summary.value
    path = picker.save(tmp_path, checkpoint="s", teacher_checkpoint="t", teacher_cache="c")
    assert load_selection(path) == [53, 40]
    assert json.loads(path.read_text())["rule"]["margin"] == pytest.approx(0.1)


@pytest.mark.slow
def test_notebook_runs_on_tiny_data(tiny_root, tmp_path, monkeypatch) -> None:
    import papermill as pm

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel shares 2 cores with another test worker

    pm.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "executed.ipynb"), cwd=str(tmp_path), kernel_name="python3",
        progress_bar=False,
        parameters={"data_root": str(tiny_root), "adapt_steps": 3, "adapt_images_per_step": 1,
                    "cache_dir": str(tmp_path / "cache"), "max_boxes": 6, "train_limit": 4,
                    "compare_limit": 3, "min_pixels": 1, "margin": -1.0,
                    "gallery_rows": 1, "gallery_classes": 2, "progress": False, "out_dir": "out"},
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    selection = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert m["selection_file"] == "out/selection.json"  # relative to the run folder: the folder can move
    assert m["selected_classes"] == selection["classes"]
    table = pd.read_csv(tmp_path / "out" / "teacher_comparison.csv", index_col=0)
    # margin -1 and min_pixels 1: every compared class with support and an IoU pair is selected
    expected = table[(table["support_pixels"] >= 1) & table["distill_gain"].notna() & (table.index != 0)]
    assert sorted(m["selected_classes"]) == sorted(expected.index.tolist()) and m["selected_classes"]
    assert m["teacher_miou"] == pytest.approx(np.nanmean(table["teacher_iou"]))
    assert m["student_miou"] == pytest.approx(np.nanmean(table["student_iou"]))
    assert "UNTRAINED" in m["student"] and m["adapt_steps"] == 3
    assert m["teacher_cache"].startswith(str(tmp_path / "cache"))
    assert (tmp_path / "out" / "teacher_vs_student.png").stat().st_size > 0
    from goose_lib.models.sam3 import load_tracker

    load_tracker(m["teacher_checkpoint"])  # the adapted teacher loads strictly
    assert len(m["teacher_class_iou"]) == 64
    # the mask lab section: oracle-box masks accepted, exported, read back as a teacher cache
    from goose_lib.teacher.cache import item_path, read_item
    from goose_lib.teacher.curated import curated_keys, read_curated_item

    assert m["mask_lab_export"] == "out/mask_lab"  # relative to the run folder, like selection_file
    export = tmp_path / m["mask_lab_export"]
    keys = curated_keys(export)
    assert keys and list((tmp_path / "out").glob("mask_lab_*.png"))
    got = read_curated_item(export, keys[0])
    assert len(got["boxes"]) and set(got["boxes"].classes.tolist()) <= set(m["compared_classes"])
    cached = read_item(item_path(m["mask_lab_cache"], keys[0]))
    np.testing.assert_array_equal(cached["teacher_cls"], got["teacher_cls"])
