"""An honest selection split and scenario exclusion in every teacher step."""

from __future__ import annotations

from pathlib import Path

import pytest

from goose_lib.data.layout import Sample, holdout_scenarios, index_split


def _samples(names: list[str]) -> list[Sample]:
    p = Path("/x.png")
    return [Sample("train", n, f"{n}_{i}", "windshield_vis", p, None, None, None) for n in names for i in range(2)]


def test_holdout_is_fixed_seeded_and_never_everything() -> None:
    names = [f"scene{i}" for i in range(8)]
    a = holdout_scenarios(_samples(names), 0.25, seed=0)
    assert len(a) == 2 and a == sorted(a) and set(a) <= set(names)
    assert holdout_scenarios(list(reversed(_samples(names))), 0.25, seed=0) == a  # order-independent
    assert holdout_scenarios(_samples(names), 0.25, seed=1) != a or len(names) < 3  # the seed decides
    assert holdout_scenarios(_samples(names), 0.0) == []
    assert len(holdout_scenarios(_samples(names[:2]), 0.9)) == 1  # at most n - 1: something stays out
    assert holdout_scenarios(_samples(names[:1]), 0.5) == names[:1]
    with pytest.raises(ValueError, match="hold-out fraction"):
        holdout_scenarios(_samples(names), 1.0)


def test_the_teacher_step_selects_on_held_out_train_scenarios_and_honours_exclusion(tiny_root, tiny_checkpoint,
                                                                                    tmp_path) -> None:
    from goose_lib.infer.predictor import student_predictor
    from goose_lib.teacher.cache import item_path
    from goose_lib.teacher.config import AdaptConfig, BoxParams
    from goose_lib.teacher.pipeline import run_teacher

    train = index_split(tiny_root, "train")
    scenarios = sorted({s.scenario for s in train})
    excluded = scenarios[0]
    student = student_predictor("untrained", device="cpu")
    run = run_teacher("embedded", str(tiny_root), cache_splits={"train": None}, cache_root=tmp_path / "c",
                      box_params=BoxParams(max_boxes=2), adapt=AdaptConfig(steps=0), student=student,
                      compare_split="train", compare_holdout=0.5, exclude_scenarios=(excluded,),
                      out_dir=tmp_path / "out", progress=False, device="cpu")
    folder = run.caches["train"].folder
    assert not any(item_path(folder, s.key).exists() for s in train if s.scenario == excluded)
    assert all(item_path(folder, s.key).exists() for s in train if s.scenario != excluded)
    sel = run.selection_split
    assert sel["split"] == "train" and excluded not in sel["scenarios"] and len(sel["scenarios"]) >= 1
    assert sel["images"] == sum(s.scenario in sel["scenarios"] for s in train)
    import json

    assert json.loads(run.selection_file.read_text())["selection_split"] == sel
