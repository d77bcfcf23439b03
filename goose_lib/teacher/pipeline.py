"""The teacher step end to end, as notebook 02 and ``goose teacher`` run it: (optionally) adapt the
teacher's decoder, cache its box-prompted masks for a split, compare it with a student on a
labelled split and select the classes to distil. The teacher is SAM3 or, as a control, the
oracle (``teacher_kind="oracle"``: the exact labels' masks in the same boxes, no adaptation;
:mod:`goose_lib.teacher.oracle`).

The student enters as a :class:`goose_lib.infer.predictor.Predictor` (``image HxWx3 uint8 -> HxW
class ids``, a label and an id) built by the caller (:func:`goose_lib.infer.predictor.student_predictor`):
the teacher layer never loads students itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from goose_lib import paths
from goose_lib.infer.predictor import Predictor
from goose_lib.teacher.cache import CacheReport, cache_split
from goose_lib.teacher.config import (
    DEFAULT_BOXES,
    DEFAULT_TEACHER,
    AdaptConfig,
    BoxParams,
    SelectionRule,
    TeacherConfig,
    TeacherKind,
)


@dataclass
class TeacherRun:
    """What :func:`run_teacher` produced."""

    teacher_checkpoint: str | Path  # the (possibly adapted) SAM3 checkpoint the teacher used; "oracle" for the oracle
    caches: dict[str, CacheReport]  # split -> its cache report
    table: pd.DataFrame | None = None  # the per-class comparison (compare_split given)
    student_scores: Any = None  # the student's full-image Scores on the comparison split
    selected: list[int] = field(default_factory=list)
    selection_file: Path | None = None
    selection_split: dict[str, Any] = field(default_factory=dict)  # {"split", "scenarios", "images"}


def default_cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The teacher cache root: ``cache_dir``, or ``<GOOSE_SAM3_HOME>/teacher-cache`` (keyed, shared)."""
    return Path(cache_dir) if cache_dir else paths.home() / "teacher-cache"


def run_teacher(sam3_checkpoint: str, data_root: str, *, cache_splits: dict[str, int | None],
                cache_root: str | os.PathLike | None = None, teacher_cfg: TeacherConfig = DEFAULT_TEACHER,
                box_params: BoxParams = DEFAULT_BOXES, adapt: AdaptConfig | None = None, adapt_split: str = "train",
                box_source: Literal["gt", "prediction"] = "gt", student: Predictor | None = None,
                compare_split: str | None = None, compare_limit: int | None = None, compare_holdout: float = 0.0,
                holdout_seed: int = 0, exclude_scenarios: tuple[str, ...] = (),
                rule: SelectionRule | None = None, out_dir: str | os.PathLike | None = None,
                ontology: Any = None, shard: tuple[int, int] = (0, 1), device: str = "auto",
                teacher_kind: TeacherKind = "sam3", progress: bool = True) -> TeacherRun:
    """Adapt (``adapt.steps > 0``), cache ``cache_splits`` ({split: limit}), and with
    ``compare_split``: compare with ``student`` there, select by ``rule`` and (``out_dir``) write
    ``teacher_comparison.csv`` + ``selection.json``.

    ``teacher_kind="oracle"``: the oracle teacher's caches instead of SAM3's (``sam3_checkpoint``
    is not read, adaptation must be off; ``teacher_checkpoint`` is ``"oracle"``).

    ``compare_holdout`` > 0: the comparison (and so the selection) uses only a fixed, seeded
    hold-out of ``compare_split``'s scenarios (:func:`goose_lib.data.layout.holdout_scenarios`), so
    that the classes are not selected on the split whose scores are then reported (val).
    ``exclude_scenarios`` is left out of every step (adaptation, caches, comparison)."""
    if (box_source == "prediction" or compare_split) and student is None:
        raise ValueError("run_teacher: prediction-prompted boxes and the comparison need a student predictor")
    adapt = adapt or AdaptConfig()
    if teacher_kind == "oracle":
        from goose_lib.teacher.oracle import ORACLE

        if adapt.steps > 0:
            raise ValueError("run_teacher: the oracle teacher has no decoder to adapt; set adaptation steps to 0")
        teacher_ckpt: str | Path = ORACLE
    else:
        from goose_lib.teacher.adapt import prepare_teacher_checkpoint

        teacher_ckpt = prepare_teacher_checkpoint(sam3_checkpoint, data_root, cfg=adapt, box_params=box_params,
                                                  split=adapt_split, device=device,
                                                  exclude_scenarios=exclude_scenarios, progress=progress)
    root = default_cache_root(cache_root)
    caches = {split: cache_split(teacher_ckpt, data_root, split, root, teacher_cfg=teacher_cfg, box_params=box_params,
                                 box_source=box_source, predictor=student.predict if box_source == "prediction" else None,
                                 predictor_id=student.id if box_source == "prediction" else "",
                                 limit=limit, exclude_scenarios=exclude_scenarios, shard=shard, device=device,
                                 progress=progress, offload=student.offloaded if student is not None else None,
                                 teacher_kind=teacher_kind)
              for split, limit in cache_splits.items()}
    result = TeacherRun(teacher_checkpoint=teacher_ckpt, caches=caches)
    if compare_split:
        from goose_lib.data.layout import holdout_scenarios, index_split
        from goose_lib.teacher.selection import compare, save_selection, select_classes

        assert student is not None
        # (items already cached for another purpose, e.g. the training split's, are reused: free)
        caches[compare_split] = cache_split(teacher_ckpt, data_root, compare_split, root, teacher_cfg=teacher_cfg,
                                            box_params=box_params, limit=compare_limit,
                                            exclude_scenarios=exclude_scenarios, device=device, progress=progress,
                                            offload=student.offloaded, teacher_kind=teacher_kind)
        samples = index_split(data_root, compare_split, exclude_scenarios=exclude_scenarios, limit=compare_limit)
        held = holdout_scenarios(samples, compare_holdout, holdout_seed)
        if held:
            samples = [s for s in samples if s.scenario in held]
        result.selection_split = {"split": compare_split, "holdout": compare_holdout, "holdout_seed": holdout_seed,
                                  "scenarios": held or sorted({s.scenario for s in samples}),
                                  "images": len(samples)}
        table, scores = compare(samples, caches[compare_split].folder, student.predict, ontology=ontology,
                                progress=progress)
        rule = rule or SelectionRule()
        result.table, result.student_scores = table, scores
        result.selected = select_classes(table, rule)
        if out_dir is not None:
            _, result.selection_file = save_selection(
                out_dir, table, result.selected, rule, checkpoint=student.label,
                teacher_checkpoint=str(teacher_ckpt), teacher_cache=str(caches[compare_split].folder),
                ontology=ontology, extra={"selection_split": result.selection_split})
    return result

