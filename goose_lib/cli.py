"""The ``goose`` command (also ``python -m goose_lib``): the headless face of the notebooks.

Each verb is a pair ``_add_<verb>(subparsers)`` / ``_cmd_<verb>(args) -> int`` and imports
its library code lazily, so ``goose --help`` stays fast. Every verb exits non-zero with a
message naming the file and the problem on bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any


class CommandError(Exception):
    """An error to print as ``goose: <message>`` with exit status 2."""


# --- demo / run / ablate / vendor (reports) -------------------------------------------------

def _reports_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reports", metavar="DIR", default=None,
                   help="reports folder (default: reports/ of the checkout)")


def _reports_dir(args: argparse.Namespace):
    from pathlib import Path

    from goose_lib.paths import repo_root

    return Path(args.reports) if args.reports else repo_root() / "reports"


def _short_warnings(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a verb showing warnings as one line each, ``goose: warning: <message>``."""
    import functools

    @functools.wraps(cmd)
    def wrapped(args: argparse.Namespace) -> int:
        import warnings

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            print(f"goose: warning: {message}", file=sys.stderr)

        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show
            return cmd(args)

    return wrapped


def _summarise(results: dict) -> int:
    """Print one line per run; 1 when any run failed (or was skipped/blocked by one)."""
    bad = 0
    for name, rec in results.items():
        outcome = rec.get("outcome", rec.get("status"))
        bad += outcome not in ("ok", "cached")
        err = f"  {rec['error']}" if rec.get("error") and outcome not in ("ok", "cached") else ""
        print(f"{outcome:8s} {name}{err}")
        for warning in rec.get("warnings", []) if outcome == "ok" else []:
            print(f"         warning: {warning}")
    return 1 if bad else 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: embedded defaults -> every notebook -> reports/index.html")
    p.add_argument("--workers", type=int, default=1, help="notebook processes (default 1)")
    p.add_argument("--force", action="store_true", help="re-run runs that are up to date")
    _reports_arg(p)
    p.set_defaults(func=_cmd_demo)


@_short_warnings
def _cmd_demo(args: argparse.Namespace) -> int:
    from goose_lib.paths import repo_root, resolve_checkpoint, resolve_data_root
    from goose_lib.reports.ablation import run_ablation
    from goose_lib.reports.html import vendor
    from goose_lib.reports.spec import load_spec

    reports = _reports_dir(args)
    spec = load_spec(repo_root() / "ablations" / "paper.yaml")
    vendor(reports, repo_root() / "vendor")
    print(f"embedded data: {resolve_data_root('embedded')}", flush=True)
    print(f"embedded checkpoint: {resolve_checkpoint('embedded')}", flush=True)
    code = _summarise(run_ablation(spec, reports, workers=args.workers, force=args.force))
    print(f"index: {reports / 'index.html'}")
    return code


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one notebook headless -> reports/RUN/")
    p.add_argument("notebook", help="a name from notebooks/ (e.g. 03_training) or a .ipynb path")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter; VALUE is read as a YAML scalar (2, 0.5, true, null, [1, 2], text)")
    p.add_argument("--name", help="run folder name (default: the notebook's name)")
    _reports_arg(p)
    p.set_defaults(func=_cmd_run)


@_short_warnings
def _cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from goose_lib.reports.ablation import run_single
    from goose_lib.reports.execute import check_run_name, resolve_notebook

    params = {}
    for name, text in args.param:
        try:
            params[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CommandError(f"run: -p {name} {text!r}: not a YAML value ({exc})") from None
    notebook = resolve_notebook(args.notebook)
    reports = _reports_dir(args)
    record = run_single(notebook, params, reports, name=check_run_name(args.name or notebook.stem))
    print(f"{record['status']} {record['name']} in {record['wall_s']:.1f} s -> "
          f"{reports / record['name'] / 'report.html'}")
    if record["error"]:
        print(f"error: {record['error']}", file=sys.stderr)
    return 0 if record["status"] == "ok" else 1


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run an ablation spec -> its index page")
    p.add_argument("spec", help="ablation spec (YAML, see ablations/README.md)")
    p.add_argument("--workers", type=int, default=1, help="notebook processes (default 1: in-process)")
    p.add_argument("--shard", metavar="I/N", help="run the I-th of N deterministic shards (job arrays)")
    p.add_argument("--stage", type=int, help="run only this dependency stage (0 = no dependencies)")
    p.add_argument("--force", action="store_true", help="re-run runs that are up to date")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _reports_arg(p)
    p.set_defaults(func=_cmd_ablate)


@_short_warnings
def _cmd_ablate(args: argparse.Namespace) -> int:
    from goose_lib.reports.ablation import parse_shard, run_ablation
    from goose_lib.reports.spec import load_spec

    if args.workers < 1:
        raise CommandError(f"ablate: --workers must be >= 1, got {args.workers}")
    spec = load_spec(args.spec)
    shard = parse_shard(args.shard) if args.shard else None
    reports = _reports_dir(args)
    results = run_ablation(spec, reports, workers=args.workers, shard=shard, stage=args.stage,
                           force=args.force, progress=not args.no_progress)
    code = _summarise(results)
    print(f"index: {reports / 'index.html'}")
    return code


def _add_vendor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vendor", help="fetch the offline widget renderer for HTML reports (npm)")
    p.add_argument("--vendor-dir", default=None, help="npm prefix (default: vendor/ of the checkout)")
    p.add_argument("--force", action="store_true", help="fetch and copy again")
    _reports_arg(p)
    p.set_defaults(func=_cmd_vendor)


def _cmd_vendor(args: argparse.Namespace) -> int:
    import warnings
    from pathlib import Path

    from goose_lib.paths import repo_root
    from goose_lib.reports.html import STATIC_DIR, vendor

    reports = _reports_dir(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = vendor(reports, Path(args.vendor_dir) if args.vendor_dir else repo_root() / "vendor",
                    force=args.force)
    for w in caught:
        print(f"goose vendor: warning: {w.message}", file=sys.stderr)
    print(f"{reports / STATIC_DIR}: {'ready' if ok else 'not vendored (widgets will render blank)'}")
    return 0


# --- synth / check / stats (data) -------------------------------------------------------------

def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the embedded synthetic dataset (GOOSE layout)")
    p.add_argument("out", help="folder to write (must be new or empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--train", type=int, default=64, help="train images (default 64)")
    p.add_argument("--val", type=int, default=16, help="val images (default 16)")
    p.add_argument("--test", type=int, default=8, help="test images, written without labels (default 8)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="image size factor (1.0: 320x240 / 352x264 / 320x180; 3.2: 1024x768 windshield)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    from goose_lib.data.synthetic import write_synthetic

    try:
        out = write_synthetic(args.out, seed=args.seed, n_train=args.train, n_val=args.val, n_test=args.test,
                              scale=args.scale, progress=True)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{out}: synthetic GOOSE root (seed {args.seed}; train {args.train}, val {args.val}, "
          f"test {args.test} images)")
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    """Options shared by check/stats: which samples of a split are used (DataConfig fields)."""
    p.add_argument("--cameras", nargs="+", metavar="CAM", help="camera suffixes to use "
                   "(default: windshield_vis camera_left front realsense)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="SCENARIO", help="scenario folders to leave out")
    p.add_argument("--limit", type=int, help="first N samples of each split")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores, 1 = in-process)")


def _data_config(args: argparse.Namespace, skip_bad: bool = False):  # -> DataConfig
    from goose_lib.config import DataConfig

    kw = {"exclude_scenarios": tuple(args.exclude), "limit": args.limit, "skip_bad": skip_bad}
    if args.cameras:
        kw["cameras"] = tuple(args.cameras)
    return DataConfig(**kw)


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a dataset root and name every problem file")
    p.add_argument("root", help="GOOSE root (images/, labels/, goose_label_mapping.csv) or 'embedded'")
    p.add_argument("--split", action="append", help="split to check (repeatable; default: every split)")
    _data_args(p)
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from goose_lib.data.decode import check_root
    from goose_lib.data.layout import LayoutError
    from goose_lib.paths import resolve_data_root

    try:
        root = resolve_data_root(args.root)
        n, problems = check_root(root, args.split, config=_data_config(args), workers=args.workers)
    except (LayoutError, FileNotFoundError) as exc:
        print(exc)
        return 1
    for line in problems:
        print(line)
    if problems:
        print(f"{root}: {len(problems)} problem(s) in {n} checked sample(s)", file=sys.stderr)
        return 1
    print(f"{root}: OK ({n} samples)", file=sys.stderr)
    return 0


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="split statistics (parallel, cached)")
    p.add_argument("root", nargs="?", help="GOOSE root or 'embedded' (omit with --merge)")
    p.add_argument("--split", default="train", help="labelled split (default train)")
    p.add_argument("--json", action="store_true", help='print {"split", "samples", "pixel_counts": [64 ints], ...}')
    p.add_argument("--shard", metavar="I/N", help="only samples I::N (a cluster job array's share)")
    p.add_argument("--out", metavar="FILE.npz", help="also save the full statistics (for --merge)")
    p.add_argument("--merge", nargs="+", metavar="FILE.npz", help="combine saved shard statistics")
    p.add_argument("--skip-bad", action="store_true", help="warn about and count bad samples instead of failing")
    p.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    _data_args(p)
    p.set_defaults(func=_cmd_stats)


def _cmd_stats(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from goose_lib.data.stats import SplitStats, compute_stats, merge_stats
    from goose_lib.ontology import Ontology

    if args.merge:
        stats = merge_stats(SplitStats.load(p) for p in args.merge)
        root = None
    elif args.root is None:
        raise CommandError("stats: give ROOT, or --merge FILE.npz ...")
    else:
        from goose_lib.config import parse_shard

        shard = parse_shard(args.shard) if args.shard else None
        root = args.root
        stats = compute_stats(root, args.split, config=_data_config(args, args.skip_bad), workers=args.workers,
                              use_cache=not args.no_cache, shard=shard)
    if args.out:
        stats.save(args.out)
    if args.json:
        print(json.dumps(stats.to_dict()))
        return 0
    from goose_lib.paths import resolve_data_root

    ont = Ontology.load(resolve_data_root(root) if root is not None else None)
    d = stats.to_dict()
    print(f"split {stats.split}: {stats.samples} samples, {d['box_count']} boxes, sizes {d['image_sizes']}")
    print(f"{'id':>3} {'class':<20} {'pixels %':>9} {'images %':>9} {'regions':>8}  median box")
    for c in np.argsort(-stats.pixel_counts, kind="stable"):
        if stats.pixel_counts[c] == 0:
            continue
        box = (f"{d['box_median_width'][c]:.0f}x{d['box_median_height'][c]:.0f}"
               if d["box_median_width"][c] is not None else "-")
        print(f"{c:>3} {ont.names[c]:<20} {100 * stats.pixel_share[c]:>9.3f} {100 * stats.image_share[c]:>9.1f} "
              f"{stats.instance_counts[c]:>8}  {box}")
    if stats.skipped:
        print(f"skipped {len(stats.skipped)} bad sample(s)", file=sys.stderr)
    return 0


# --- score / evaluate / submit (metrics, infer) --------------------------------------------------

def _add_tta_args(p: argparse.ArgumentParser) -> None:
    """Inference options shared by evaluate and submit."""
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help="multi-scale TTA scales (e.g. 0.75 1 1.25 1.5); omitted = single-scale only")
    p.add_argument("--flip", action="store_true", help="also average the horizontally flipped image")
    p.add_argument("--overlap", type=float, default=1 / 3, help="sliding-window overlap in [0, 1)")
    p.add_argument("--window-batch", type=int, default=4, help="windows per forward pass")
    p.add_argument("--base", choices=["stretch", "native"], default="stretch",
                   help="canvas at scale 1: the model's stretched view or the image's own size")
    p.add_argument("--autocast", choices=["off", "bfloat16", "float16"], default="off",
                   help="mixed-precision forward passes (GPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _tta_modes(args: argparse.Namespace) -> dict:
    from goose_lib.config import ParameterError, validate
    from goose_lib.infer.tta import TTAConfig

    common = {"flip": args.flip, "overlap": args.overlap, "window_batch": args.window_batch,
              "autocast": args.autocast}
    try:
        modes = {"single": validate(TTAConfig, common)}
        if args.scales:
            modes["multiscale"] = validate(TTAConfig, {**common, "mode": "multiscale", "scales": args.scales,
                                                        "base": args.base})
    except ParameterError as exc:
        raise CommandError(str(exc)) from exc
    return modes


def _print_scores(scores: dict) -> None:
    def pct(v: float | None) -> str:
        return "   -  " if v is None else f"{100 * v:6.2f}"

    print(f"{'':24s} {'mIoU':>6s} {'catIoU':>6s} {'comp.':>6s}")
    for mode, d in scores.items():
        print(f"{mode:24s} {pct(d['miou'])} {pct(d['category_miou'])} {pct(d['composite'])}  "
              f"(protocol {d['protocol']}, {len(d['excluded_classes'])} classes not scored)")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score predictions in the submission layout against a split")
    p.add_argument("pred_dir", help="folder (or zip) of <scenario>/<stem>_labelids.png predictions")
    p.add_argument("root", help='GOOSE root, or "embedded"')
    p.add_argument("--split", default="val")
    p.add_argument("--protocol", choices=["ignore_void", "void_as_class"], default="ignore_void",
                   help="void handling (see goose_lib.config.EvalProtocol)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON on stdout")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    import json

    from goose_lib.config import EvalProtocol
    from goose_lib.infer.submission import score_predictions

    scores = score_predictions(args.pred_dir, args.root, split=args.split,
                               protocol=EvalProtocol(args.protocol)).to_dict()
    if args.json:
        print(json.dumps(scores))
    else:
        _print_scores({args.pred_dir: scores})
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a student checkpoint on a labelled split (TTA modes)")
    p.add_argument("checkpoint", help='student checkpoint folder, a training run folder, or "untrained"')
    p.add_argument("root", help='GOOSE root, or "embedded"')
    p.add_argument("--split", default="val")
    p.add_argument("--protocol", choices=["ignore_void", "void_as_class"], default="ignore_void")
    p.add_argument("--limit", type=int, default=None, help="first N images of the split")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0 = in-process)")
    p.add_argument("--out", default=None, help="folder for eval_summary.json and the CSVs (default eval_<split>)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    _add_tta_args(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from goose_lib.config import DataConfig, EvalProtocol
    from goose_lib.data.dataset import GooseDataset
    from goose_lib.infer.evaluate import evaluate, load_model

    modes = _tta_modes(args)
    model, what = load_model("" if args.checkpoint == "untrained" else args.checkpoint, device=args.device)
    dataset = GooseDataset(args.root, args.split, config=DataConfig(limit=args.limit))
    result = evaluate(model, dataset, modes, EvalProtocol(args.protocol), workers=args.workers,
                      progress=not args.no_progress)
    paths = result.save(args.out or f"eval_{args.split}")
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"{what}; {len(dataset)} images of {args.split}")
        _print_scores({n: s.to_dict() for n, s in result.scores.items()})
        print(f"wrote {paths['summary']}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="write predictions of a split in the submission layout (resumable, "
                                       "shardable); score them with `goose score`")
    p.add_argument("checkpoint", help='student checkpoint folder, a training run folder, or "untrained"')
    p.add_argument("root", help='GOOSE root, or "embedded"')
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True, help="predictions folder (<scenario>/<stem>_labelids.png)")
    p.add_argument("--shard", metavar="I/N", help="only images I::N (a cluster job array's share; all shards "
                                                  "may write into the same --out)")
    _add_tta_args(p)
    p.set_defaults(func=_cmd_predict)


def _model_and_tta(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """(model, description, TTAConfig) of a predict/submit command: multiscale when scales are given."""
    from goose_lib.infer.evaluate import load_model

    modes = _tta_modes(args)
    tta = modes.get("multiscale", modes["single"])
    model, what = load_model("" if args.checkpoint == "untrained" else args.checkpoint, device=args.device)
    return model, what, tta


def _cmd_predict(args: argparse.Namespace) -> int:
    from goose_lib.config import parse_shard
    from goose_lib.infer.submission import write_predictions

    model, what, tta = _model_and_tta(args)
    shard = parse_shard(args.shard) if args.shard else None
    out = write_predictions(model, args.root, args.out, split=args.split, tta=tta, shard=shard,
                            progress=not args.no_progress)
    print(f"predictions of split {args.split} ({tta.name}; {what}) in {out}"
          + (f" (shard {args.shard})" if shard else ""))
    return 0


def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="write and validate a challenge submission zip for a test split")
    p.add_argument("checkpoint", help='student checkpoint folder, a training run folder, or "untrained"')
    p.add_argument("root", help='GOOSE root, or "embedded"')
    p.add_argument("--split", default="test")
    p.add_argument("--out", default="submission.zip", help="the zip to write")
    _add_tta_args(p)
    p.set_defaults(func=_cmd_submit)


def _cmd_submit(args: argparse.Namespace) -> int:
    from goose_lib.infer.submission import validate_submission, write_submission

    model, what, tta = _model_and_tta(args)
    out = write_submission(model, args.root, args.out, split=args.split, tta=tta,
                           progress=not args.no_progress)
    n = validate_submission(out, args.root, split=args.split)
    print(f"wrote {out}: {n} predictions for split {args.split} ({tta.name}; {what}); validated")
    return 0


# --- tiny-sam3 (models) ------------------------------------------------------------------------

def _add_tiny_sam3(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiny-sam3", help="write the tiny random SAM3 checkpoint (facebook/sam3 layout)")
    p.add_argument("out", help="folder to write (config.json + model.safetensors); must be new or empty")
    p.add_argument("--image-size", type=int, default=224, help="input size, a multiple of 14 (default 224)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.set_defaults(func=_cmd_tiny_sam3)


def _cmd_tiny_sam3(args: argparse.Namespace) -> int:
    from goose_lib.models.sam3 import build_tiny_checkpoint, describe

    try:
        out = build_tiny_checkpoint(args.out, image_size=args.image_size, seed=args.seed,
                                    overwrite=args.overwrite)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from exc
    info = describe(out)
    print(f"{out}: tiny SAM3, {info['image_size']}x{info['image_size']} input, {info['num_layers']} layers, "
          f"hidden {info['hidden_size']}, fingerprint {info['fingerprint'][:12]}")
    return 0


# --- train (train) -----------------------------------------------------------------------------

def _train_value(text: str) -> object:
    """A command-line value: JSON literal (number, true/false, null) if it parses, else the string."""
    import json

    if text.lower() == "none":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _add_train(sub: argparse._SubParsersAction) -> None:
    import dataclasses
    import typing

    from goose_lib.params import TrainingParams

    p = sub.add_parser(
        "train", help="train the student (resumable; torchrun for several processes)",
        description="Train the student headless: every TrainConfig field is an option (--name value; tuples "
                    "take several values). Re-running with the same --out-dir resumes. Several processes: "
                    "torchrun --nproc_per_node N -m goose_lib train ...")
    p.add_argument("--out-dir", required=True, help="run folder: metrics.jsonl, checkpoints/, latest.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    hints = typing.get_type_hints(TrainingParams)
    for f in dataclasses.fields(TrainingParams):
        if f.name in ("out_dir", "progress"):
            continue
        multi = "tuple" in str(hints[f.name])
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_train_value, default=argparse.SUPPRESS,
                       nargs="*" if multi else None, metavar="V", help=f"default: {f.default!r}")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from goose_lib.train.loop import TrainConfig, config_from_params, train

    names = set(TrainConfig.__dataclass_fields__)
    cfg = config_from_params({k: v for k, v in vars(args).items() if k in names})
    result = train(cfg, args.out_dir, progress=not args.no_progress)
    if result.val is not None and os.environ.get("RANK", "0") == "0":
        print(f"checkpoint: {result.checkpoint}\ncomposite mIoU: {result.val['composite']:.4f} "
              f"(mIoU {result.val['miou']:.4f}, category mIoU {result.val['category_miou']:.4f})")
    return 0


# --- teacher (teacher) ---------------------------------------------------------------------------

def _add_teacher(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="compute / cache SAM3 box-prompted teacher masks for a split",
                       description="Teacher masks for a labelled split from ground-truth boxes, cached once "
                       "(resumable, keyed on checkpoint + parameters). With --compare OUT: also the per-class "
                       "teacher-vs-student table and selection.json in OUT.")
    p.add_argument("root", help="GOOSE root or 'embedded'")
    p.add_argument("--split", default="train", help="labelled split (default train)")
    p.add_argument("--checkpoint", default="embedded", help="SAM3 folder or 'embedded'")
    p.add_argument("--cache-dir", help="teacher cache root (default <GOOSE_SAM3_HOME>/teacher-cache)")
    p.add_argument("--adapt-steps", type=int, default=0, help="fine-tune the teacher's decoder first (0 = off)")
    p.add_argument("--min-area", type=int, default=16, help="boxes: minimum object area in pixels")
    p.add_argument("--box-margin", type=float, default=0.0, help="boxes: margin as a fraction of the box size")
    p.add_argument("--max-boxes", type=int, help="boxes: keep the largest N objects per image")
    p.add_argument("--boxes", choices=("gt", "prediction"), default="gt",
                   help="prompt boxes from the labels (gt) or from --student's prediction (unlabelled splits)")
    p.add_argument("--limit", type=int, help="first N samples of the split")
    p.add_argument("--shard", metavar="I/N", help="only samples I::N (a cluster job array's share)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compare", metavar="OUT", help="also compare with --student and write the selection to OUT")
    p.add_argument("--student", default="", help="student checkpoint / run folder for --compare and "
                   "--boxes prediction ('' = untrained student)")
    p.add_argument("--margin", type=float, default=0.0, help="selection: required IoU gain of the teacher")
    p.add_argument("--min-pixels", type=int, default=100, help="selection: minimum support in pixels")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_teacher)


def _cmd_teacher(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from goose_lib import paths
    from goose_lib.teacher.adapt import AdaptConfig, prepare_teacher_checkpoint
    from goose_lib.teacher.boxes import BoxParams
    from goose_lib.teacher.cache import cache_split

    shard = (0, 1)
    if args.shard:
        try:
            i, n = (int(v) for v in args.shard.split("/"))
            shard = (i, n)
        except ValueError as exc:
            raise CommandError(f"teacher: --shard must look like I/N, got {args.shard!r}") from exc
    progress = not args.no_progress
    boxes = BoxParams(min_area=args.min_area, margin=args.box_margin, max_boxes=args.max_boxes)
    ckpt = prepare_teacher_checkpoint(args.checkpoint, args.root, cfg=AdaptConfig(steps=args.adapt_steps),
                                      box_params=boxes, device=args.device, progress=progress)
    cache_root = Path(args.cache_dir) if args.cache_dir else paths.home() / "teacher-cache"
    rep = cache_split(ckpt, args.root, args.split, cache_root, box_params=boxes, box_source=args.boxes,
                      student=args.student, sam3_checkpoint=args.checkpoint, limit=args.limit, shard=shard,
                      device=args.device, progress=progress)
    summary = {"cache": str(rep.folder), "checkpoint": str(ckpt), "split": args.split, "total": rep.total,
               "computed": rep.computed, "reused": rep.reused}
    if args.compare:
        from goose_lib.data.layout import index_split
        from goose_lib.teacher.selection import (
            SelectionRule,
            compare,
            save_selection,
            select_classes,
            student_predictor,
        )

        predict_fn, label = student_predictor(args.student, sam3_checkpoint=args.checkpoint, device=args.device)
        samples = index_split(paths.resolve_data_root(args.root), args.split, limit=args.limit)
        table, _ = compare(samples, rep.folder, predict_fn, progress=progress)
        rule = SelectionRule(margin=args.margin, min_pixels=args.min_pixels)
        chosen = select_classes(table, rule)
        _, sel = save_selection(args.compare, table, chosen, rule, checkpoint=args.student or label,
                                teacher_checkpoint=str(ckpt), teacher_cache=str(rep.folder))
        summary.update(selection=str(sel), selected_classes=chosen)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"teacher cache {rep.folder}: {rep.computed} computed, {rep.reused} reused of {rep.total}")
        if args.compare:
            print(f"selection {summary['selection']}: classes {summary['selected_classes']}")
    return 0


# --- entry point -------------------------------------------------------------------------------

VERBS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo, _add_synth, _add_tiny_sam3, _add_check, _add_stats, _add_score, _add_run,
    _add_ablate, _add_train, _add_teacher, _add_evaluate, _add_predict, _add_submit, _add_vendor,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goose", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per process (default: $GOOSE_THREADS, else the cores "
                             "minus data-loading workers; see goose_lib/runtime.py)")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(sub)
    return parser


def _configure_threads(args: argparse.Namespace) -> int:
    """The deliberate thread count of this process (goose_lib.runtime): data-loading workers
    (train's --num-workers, evaluate's --workers) and torchrun's local processes leave cores."""
    import os

    from goose_lib.runtime import configure_threads

    data_workers = {"train": getattr(args, "num_workers", 0) or 0,
                    "evaluate": getattr(args, "workers", 0) or 0}.get(args.verb, 0)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return configure_threads(args.threads, data_workers=int(data_workers), processes=processes)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _configure_threads(args)
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"goose: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"goose {args.verb}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("goose: interrupted", file=sys.stderr)
        return 130
