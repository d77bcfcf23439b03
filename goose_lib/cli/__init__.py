"""The ``goose`` command (also ``python -m goose_lib``): the headless face of the notebooks.

Each verb lives in the module of its role (:mod:`.reports`, :mod:`.data`, :mod:`.infer`,
:mod:`.train`) as a pair ``add_<verb>(subparsers)`` / ``cmd_<verb>(args) -> int``: argument
parsing plus one library call, imported lazily so ``goose --help`` stays fast.

Exit status, for every verb:

- ``0``: done;
- ``1``: the command ran and its result is negative (``check`` found problem files, a run of
  ``run`` / ``ablate`` / ``demo`` failed); the result says which;
- ``2``: it could not run: bad arguments or bad input (a missing or malformed file, a value out
  of range, a training run that diverged); one line ``goose <verb>: <message>`` on stderr
  naming the file and the problem;
- ``130``: interrupted.

Errors and warnings go to stderr; results (tables, JSON) to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from goose_lib.cli import data, infer, reports, train
from goose_lib.cli.common import CommandError

VERBS = (*reports.VERBS, *data.VERBS, *infer.VERBS, *train.VERBS)

EXIT_OK, EXIT_NEGATIVE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


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
        print(f"goose {args.verb}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (FileNotFoundError, ValueError, PermissionError) as exc:
        print(f"goose {args.verb}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"goose {args.verb}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `goose stats --json | head`: the reader left, nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
