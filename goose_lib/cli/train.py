"""Verbs of the training and teacher parts: ``train`` (every TrainConfig field an option; torchrun
for several processes) and ``teacher`` (cache SAM3's box-prompted masks, or with ``--teacher
oracle`` the exact labels' masks in the same boxes, optionally compare with a student and select
the classes to distil)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from goose_lib.cli.common import (
    INPUT_KINDS,
    CommandError,
    add_field_options,
    command_params,
    data_root_arg,
    given,
    progress_arg,
    provenance,
    validated,
)


def add_train(sub: argparse._SubParsersAction) -> None:
    from goose_lib.train.config import TrainConfig

    p = sub.add_parser(
        "train", help="train the student (resumable; torchrun for several processes)",
        description="Train the student headless: every TrainConfig field is an option (--name value; tuples "
                    "take several values). Re-running with the same --out-dir resumes. Several processes: "
                    "torchrun --nproc_per_node N -m goose_lib train ...")
    p.add_argument("--out-dir", required=True, help="run folder: metrics.jsonl, checkpoints/, latest.json")
    progress_arg(p)
    add_field_options(p, TrainConfig)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from goose_lib.config import declared_inputs, to_dict
    from goose_lib.train.config import TrainConfig
    from goose_lib.train.loop import TrainingDiverged, train

    cfg = validated(TrainConfig, given(args, TrainConfig))
    with provenance("goose train", to_dict(cfg), declared_inputs(TrainConfig), seed=cfg.seed,
                    device=cfg.device) as prov:
        try:
            result = train(cfg, args.out_dir, progress=not args.no_progress)
        except TrainingDiverged as exc:
            raise CommandError(str(exc)) from None
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 writes (the same record)
            prov["path"] = Path(args.out_dir) / "provenance.json"
    if result.val is not None and os.environ.get("RANK", "0") == "0":
        print(f"checkpoint: {result.checkpoint}\ncomposite mIoU: {result.val['composite']:.4f} "
              f"(mIoU {result.val['miou']:.4f}, category mIoU {result.val['category_miou']:.4f})")
    return 0


def add_teacher(sub: argparse._SubParsersAction) -> None:
    from goose_lib.params import TeacherParams
    from goose_lib.teacher.config import TEACHER_KINDS, AdaptConfig, BoxParams, SelectionRule, TeacherConfig

    p = sub.add_parser("teacher", help="compute / cache SAM3 box-prompted teacher masks for a split",
                       description="Teacher masks for a split from ground-truth (or predicted) boxes, cached once "
                       "(resumable, keyed on the SAM3 checkpoint + parameters). With --compare OUT: also the "
                       "per-class teacher-vs-student table of that split and selection.json in OUT.")
    data_root_arg(p)
    p.add_argument("--split", default="train", help="split to cache (default train)")
    p.add_argument("--teacher", choices=TEACHER_KINDS, default=TeacherParams().teacher,
                   help="sam3: SAM3's box-prompted masks; oracle: the exact labels' masks in the same boxes (a "
                        "control; needs <data-root>/labels_exact, as an embedded world has)")
    p.add_argument("--sam3-checkpoint", default="embedded", help="SAM3 folder or an embedded checkpoint's name")
    p.add_argument("--checkpoint", default="untrained", help="the student (checkpoint / run folder, or "
                   "'untrained') for --compare and --boxes prediction")
    p.add_argument("--cache-dir", help="teacher cache root (default <GOOSE_SAM3_HOME>/teacher-cache)")
    p.add_argument("--boxes", choices=("gt", "prediction"), default="gt",
                   help="prompt boxes from the labels (gt) or from the student's prediction (unlabelled splits)")
    p.add_argument("--limit", type=int, help="first N samples of the split")
    p.add_argument("--exclude-scenarios", nargs="+", default=[], metavar="SCENARIO",
                   help="scenario folders left out of every step (adaptation, cache, comparison)")
    p.add_argument("--holdout", type=float, default=TeacherParams().compare_holdout,
                   help="--compare on this fraction of the split's scenarios (fixed, seeded; 0 = all; "
                        f"default {TeacherParams().compare_holdout})")
    p.add_argument("--shard", metavar="I/N", help="only samples I::N (a cluster job array's share)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--compare", metavar="OUT", help="also compare with the student and write the selection to OUT")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    progress_arg(p)
    add_field_options(p, BoxParams, names=("min_area", "margin", "max_boxes", "use_instances"),
                      rename={"margin": "box_margin"})
    add_field_options(p, TeacherConfig, names=("multimask", "mask_threshold", "overlap", "box_batch", "autocast"))
    add_field_options(p, AdaptConfig, names=("steps",), rename={"steps": "adapt_steps"})
    add_field_options(p, SelectionRule, names=("criterion", "margin", "min_pixels", "min_images", "max_classes"),
                      rename={"margin": "select_margin"})
    p.set_defaults(func=cmd_teacher)


def cmd_teacher(args: argparse.Namespace) -> int:
    import json

    from goose_lib.infer.predictor import student_predictor

    needs_student = bool(args.compare) or args.boxes == "prediction"
    # the SAM3 checkpoint is read by the SAM3 teacher and by the student (its backbone)
    needs_sam3 = args.teacher == "sam3" or needs_student
    kinds = {k: v for k, v in INPUT_KINDS.items()
             if (k != "checkpoint" or needs_student) and (k != "sam3_checkpoint" or needs_sam3)}
    with provenance("goose teacher", command_params(args), kinds, device=args.device) as prov:
        student = student_predictor(args.checkpoint, sam3_checkpoint=args.sam3_checkpoint,
                                    device=args.device) if needs_student else None
        run = _run_teacher(args, student)
        # with --compare beside the selection, else in the cache's key folder beside its manifest
        prov["path"] = Path(args.compare or run.caches[args.split].folder) / "provenance.json"
    rep = run.caches[args.split]
    summary = {"cache": str(rep.folder), "teacher": args.teacher, "sam3_checkpoint": str(run.teacher_checkpoint),
               "split": args.split, "total": rep.total, "computed": rep.computed, "reused": rep.reused}
    if args.compare:
        summary.update(selection=str(run.selection_file), selected_classes=run.selected,
                       selection_split=run.selection_split)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"teacher cache {rep.folder}: {rep.computed} computed, {rep.reused} reused of {rep.total}")
        if args.compare:
            print(f"selection {summary['selection']}: classes {summary['selected_classes']}")
    return 0


def _run_teacher(args: argparse.Namespace, student):  # -> goose_lib.teacher.pipeline.TeacherRun
    from goose_lib.config import parse_shard
    from goose_lib.teacher.config import AdaptConfig, BoxParams, SelectionRule, TeacherConfig
    from goose_lib.teacher.pipeline import run_teacher

    opts = vars(args)
    # --box-margin and --select-margin are both a "margin" field; read them apart
    box = {k: opts[k] for k in ("min_area", "max_boxes", "use_instances") if k in opts}
    rule = {k: opts[k] for k in ("criterion", "min_pixels", "min_images", "max_classes") if k in opts}
    if "box_margin" in opts:
        box["margin"] = opts["box_margin"]
    if "select_margin" in opts:
        rule["margin"] = opts["select_margin"]
    return run_teacher(
        args.sam3_checkpoint, args.data_root, cache_splits={args.split: args.limit}, cache_root=args.cache_dir,
        teacher_cfg=validated(TeacherConfig, given(args, TeacherConfig)), box_params=validated(BoxParams, box),
        adapt=validated(AdaptConfig, {"steps": opts["adapt_steps"]} if "adapt_steps" in opts else {}),
        box_source=args.boxes, student=student, compare_split=args.split if args.compare else None,
        compare_limit=args.limit, compare_holdout=args.holdout, exclude_scenarios=tuple(args.exclude_scenarios),
        rule=validated(SelectionRule, rule), out_dir=args.compare,
        shard=parse_shard(args.shard) if args.shard else (0, 1), device=args.device, teacher_kind=args.teacher,
        progress=not args.no_progress)


def add_foundation(sub: argparse._SubParsersAction) -> None:
    from goose_lib.models.foundation import FOUNDATION_DIR

    p = sub.add_parser(
        "foundation", help="pre-train the embedded SAM3 foundation (offline, once; resumable)",
        description="Run the foundation recipe (goose_lib/models/pretrain.py) in --run-dir (re-running resumes "
                    "from its last checkpoint), measure it on the held-out corpus and write the checkpoint "
                    "folder with its model card. The shipped foundation is written by the default --out.")
    p.add_argument("--run-dir", required=True, help="the recipe's run folder (state.pt: resumable)")
    p.add_argument("--out", default=str(FOUNDATION_DIR), help="checkpoint folder to write (default: the shipped one)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: the recipe's)")
    progress_arg(p)
    p.set_defaults(func=cmd_foundation)


def cmd_foundation(args: argparse.Namespace) -> int:
    from goose_lib.models.foundation import write_foundation
    from goose_lib.models.pretrain import (
        DEFAULT_RECIPE,
        held_out_concepts,
        held_out_iou,
        run_recipe,
        training_seconds,
    )
    from goose_lib.models.tiny import ensure_tiny_checkpoint

    if args.steps is not None and args.steps < 1:
        raise CommandError(f"--steps must be >= 1, got {args.steps}")
    base = ensure_tiny_checkpoint()
    trainer = run_recipe(args.run_dir, DEFAULT_RECIPE, base=base, steps=args.steps, progress=not args.no_progress)
    promptable = held_out_iou(trainer.tracker, 1, DEFAULT_RECIPE.held_out)
    concepts = held_out_concepts(trainer, 1, DEFAULT_RECIPE.held_out)
    out = write_foundation(trainer, args.out, base=base, held_out=promptable, concepts=concepts,
                           seconds=training_seconds(args.run_dir))
    print(f"{out}: held-out in-box mIoU {promptable['teacher']:.3f} (box filling {promptable['box_fill']:.3f}), "
          f"concept mIoU {concepts['mean']:.3f}")
    return 0


VERBS = (add_train, add_teacher, add_foundation)
