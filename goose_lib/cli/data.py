"""Verbs of the data and models parts: ``synth`` and ``tiny-sam3`` (write the embedded defaults
somewhere), ``check`` (validate a dataset root), ``stats`` (split statistics)."""

from __future__ import annotations

import argparse
import sys

from goose_lib.cli.common import CommandError, data_root_arg


def add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the embedded synthetic dataset (GOOSE layout)")
    p.add_argument("out", help="folder to write (must be new or empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--train", type=int, default=64, help="train images (default 64)")
    p.add_argument("--val", type=int, default=16, help="val images (default 16)")
    p.add_argument("--test", type=int, default=8, help="test images, written without labels (default 8)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="image size factor (1.0: 320x240 / 352x264 / 320x180; 3.2: 1024x768 windshield)")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from goose_lib.data.synthetic import write_synthetic

    try:
        out = write_synthetic(args.out, seed=args.seed, n_train=args.train, n_val=args.val, n_test=args.test,
                              scale=args.scale, progress=True)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{out}: synthetic GOOSE root (seed {args.seed}; train {args.train}, val {args.val}, "
          f"test {args.test} images)")
    return 0


def add_tiny_sam3(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiny-sam3", help="write the tiny random SAM3 checkpoint (facebook/sam3 layout)")
    p.add_argument("out", help="folder to write (config.json + model.safetensors); must be new or empty")
    p.add_argument("--image-size", type=int, default=224, help="input size, a multiple of 14 (default 224)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.set_defaults(func=cmd_tiny_sam3)


def cmd_tiny_sam3(args: argparse.Namespace) -> int:
    from goose_lib.models.sam3 import describe
    from goose_lib.models.tiny import build_tiny_checkpoint

    try:
        out = build_tiny_checkpoint(args.out, image_size=args.image_size, seed=args.seed, overwrite=args.overwrite)
    except FileExistsError as exc:
        raise CommandError(str(exc)) from exc
    info = describe(out)
    print(f"{out}: tiny SAM3, {info['image_size']}x{info['image_size']} input, {info['num_layers']} layers, "
          f"hidden {info['hidden_size']}, fingerprint {info['fingerprint'][:12]}")
    return 0


def _data_args(p: argparse.ArgumentParser) -> None:
    """Options shared by check/stats: the data root and which samples of a split (DataConfig fields)."""
    from goose_lib.config import DEFAULT_CAMERAS

    data_root_arg(p)
    p.add_argument("--cameras", nargs="+", metavar="CAM", default=list(DEFAULT_CAMERAS),
                   help=f"camera suffixes to use (default: {' '.join(DEFAULT_CAMERAS)})")
    p.add_argument("--exclude-scenarios", nargs="+", default=[], metavar="SCENARIO",
                   help="scenario folders to leave out")
    p.add_argument("--limit", type=int, help="first N samples of each split")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores, 1 = in-process)")


def _data_config(args: argparse.Namespace, skip_bad: bool = False):  # -> DataConfig
    from goose_lib.config import DataConfig

    return DataConfig(data_root=args.data_root, cameras=tuple(args.cameras),
                      exclude_scenarios=tuple(args.exclude_scenarios), limit=args.limit, skip_bad=skip_bad)


def add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a dataset root and name every problem file",
                       description="Exit 0: no problem; 1: problems found (one per line on stdout); 2: not a "
                                   "GOOSE root or bad arguments.")
    p.add_argument("--split", action="append", help="split to check (repeatable; default: every split)")
    _data_args(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from goose_lib.data.decode import check_root
    from goose_lib.data.layout import LayoutError

    try:
        n, problems = check_root(args.data_root, args.split, config=_data_config(args), workers=args.workers)
    except LayoutError as exc:
        raise CommandError(str(exc)) from None
    for line in problems:
        print(line)
    if problems:
        print(f"{args.data_root}: {len(problems)} problem(s) in {n} checked sample(s)", file=sys.stderr)
        return 1
    print(f"{args.data_root}: OK ({n} samples)", file=sys.stderr)
    return 0


def add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="split statistics (parallel, cached)")
    p.add_argument("--split", default="train", help="labelled split (default train)")
    p.add_argument("--json", action="store_true", help='print {"split", "samples", "pixel_counts": [64 ints], ...}')
    p.add_argument("--shard", metavar="I/N", help="only samples I::N (a cluster job array's share)")
    p.add_argument("--out", metavar="FILE.npz", help="also save the full statistics (for --merge)")
    p.add_argument("--merge", nargs="+", metavar="FILE.npz", help="combine saved shard statistics (no data root read)")
    p.add_argument("--skip-bad", action="store_true", help="warn about and count bad samples instead of failing")
    p.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    _data_args(p)
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    import json

    from goose_lib.config import parse_shard
    from goose_lib.data.embedded import load_ontology
    from goose_lib.data.stats import SplitStats, compute_stats, format_stats, merge_stats

    if args.merge:
        stats = merge_stats(SplitStats.load(p) for p in args.merge)
    else:
        stats = compute_stats(args.data_root, args.split, config=_data_config(args, args.skip_bad),
                              workers=args.workers, use_cache=not args.no_cache,
                              shard=parse_shard(args.shard) if args.shard else None)
    if args.out:
        stats.save(args.out)
    if args.json:
        print(json.dumps(stats.to_dict()))
    else:
        print(format_stats(stats, load_ontology(None if args.merge else args.data_root)))
    if stats.skipped:
        print(f"skipped {len(stats.skipped)} bad sample(s)", file=sys.stderr)
    return 0


VERBS = (add_synth, add_tiny_sam3, add_check, add_stats)
