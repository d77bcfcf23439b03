"""The ``goose`` command (also ``python -m goose_lib``): the headless face of the notebooks.

Each verb is a pair ``_add_<verb>(subparsers)`` / ``_cmd_<verb>(args) -> int`` and imports
its library code lazily, so ``goose --help`` stays fast. Every verb exits non-zero with a
message naming the file and the problem on bad input.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


class CommandError(Exception):
    """An error to print as ``goose: <message>`` with exit status 2."""


# --- demo / run / ablate / vendor (reports) -------------------------------------------------

def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: embedded defaults -> every notebook -> reports/index.html")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    raise CommandError("demo: not implemented yet")


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run one notebook headless -> reports/RUN/")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    raise CommandError("run: not implemented yet")


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="run an ablation spec -> its index page")
    p.set_defaults(func=_cmd_ablate)


def _cmd_ablate(args: argparse.Namespace) -> int:
    raise CommandError("ablate: not implemented yet")


def _add_vendor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vendor", help="fetch the offline widget renderer for HTML reports (npm)")
    p.set_defaults(func=_cmd_vendor)


def _cmd_vendor(args: argparse.Namespace) -> int:
    raise CommandError("vendor: not implemented yet")


# --- synth / check / stats (data) -------------------------------------------------------------

def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the embedded synthetic dataset (GOOSE layout)")
    p.set_defaults(func=_cmd_synth)


def _cmd_synth(args: argparse.Namespace) -> int:
    raise CommandError("synth: not implemented yet")


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a dataset root and name every problem file")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    raise CommandError("check: not implemented yet")


def _add_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="split statistics (parallel, cached)")
    p.set_defaults(func=_cmd_stats)


def _cmd_stats(args: argparse.Namespace) -> int:
    raise CommandError("stats: not implemented yet")


# --- score / evaluate / submit (metrics, infer) --------------------------------------------------

def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score predictions in the submission layout against a split")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    raise CommandError("score: not implemented yet")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a student checkpoint on a labelled split (TTA modes)")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    raise CommandError("evaluate: not implemented yet")


def _add_submit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="write and validate a challenge submission zip for a test split")
    p.set_defaults(func=_cmd_submit)


def _cmd_submit(args: argparse.Namespace) -> int:
    raise CommandError("submit: not implemented yet")


# --- tiny-sam3 (models) ------------------------------------------------------------------------

def _add_tiny_sam3(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiny-sam3", help="write the tiny random SAM3 checkpoint (facebook/sam3 layout)")
    p.set_defaults(func=_cmd_tiny_sam3)


def _cmd_tiny_sam3(args: argparse.Namespace) -> int:
    raise CommandError("tiny-sam3: not implemented yet")


# --- train (train) -----------------------------------------------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the student (resumable; torchrun for several processes)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    raise CommandError("train: not implemented yet")


# --- teacher (teacher) ---------------------------------------------------------------------------

def _add_teacher(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="compute / cache SAM3 box-prompted teacher masks for a split")
    p.set_defaults(func=_cmd_teacher)


def _cmd_teacher(args: argparse.Namespace) -> int:
    raise CommandError("teacher: not implemented yet")


# --- entry point -------------------------------------------------------------------------------

VERBS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo, _add_synth, _add_tiny_sam3, _add_check, _add_stats, _add_score, _add_run,
    _add_ablate, _add_train, _add_teacher, _add_evaluate, _add_submit, _add_vendor,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="goose", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add in VERBS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
