"""Pieces every verb shares: the error type, warnings as one line, and options built from the
parameter dataclasses (names, defaults and help written once, in the dataclass)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any


class CommandError(Exception):
    """An error to print as ``goose <verb>: <message>`` with exit status 2."""


def short_warnings(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a verb showing warnings as one line each, ``goose: warning: <message>``."""

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


def cli_value(text: str) -> object:
    """A command-line value: JSON literal (number, true/false, null) if it parses, else the string."""
    import json

    if text.lower() == "none":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_field_options(p: argparse.ArgumentParser, cls: type, *, names: Iterable[str] | None = None,
                      skip: Iterable[str] = (), rename: dict[str, str] | None = None) -> None:
    """One option per field of dataclass ``cls`` (``--field-name``, or ``--<rename[field]>`` stored
    under that name; tuples take several values), its help the field's comment and the shown default
    the field's (an option not given is absent from the namespace: the dataclass default applies)."""
    import dataclasses
    import typing

    from goose_lib.config import field_docs

    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    wanted = set(names) if names is not None else None
    for f in dataclasses.fields(cls):
        if f.name in set(skip) or (wanted is not None and f.name not in wanted):
            continue
        multi = "tuple" in str(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        dest = (rename or {}).get(f.name, f.name)
        p.add_argument(flag(dest), dest=dest, type=cli_value, default=argparse.SUPPRESS, nargs="*" if multi else None,
                       metavar="V", help=f"{docs.get(f.name, '')} (default: {default!r})".lstrip().replace("%", "%%"))


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` set on the command line (the others keep the dataclass default)."""
    names = {f for f in cls.__dataclass_fields__}
    return {k: v for k, v in vars(args).items() if k in names}


def validated(cls: type, values: dict[str, Any]) -> Any:
    """``config.validate(cls, values)`` with a ParameterError turned into a CommandError."""
    from goose_lib.config import ParameterError, validate

    try:
        return validate(cls, values)
    except ParameterError as exc:
        raise CommandError(str(exc)) from None


def data_root_arg(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    from goose_lib.config import DataConfig

    p.add_argument("--data-root", default=DataConfig().data_root, required=required, metavar="DIR",
                   help="GOOSE root (images/, labels/, goose_label_mapping.csv) or an embedded dataset's name "
                        f"(default: {DataConfig().data_root})")


def progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@contextlib.contextmanager
def provenance(command: str, params: dict[str, Any], kinds: dict[str, str], *, seed: Any = None,
               device: Any = "auto") -> Iterator[dict[str, Any]]:
    """Time a command and write its provenance record (``provenance.write_record``) where the
    command put its result: ``with provenance("goose evaluate", params, kinds) as rec: ...;
    rec["path"] = out / "provenance.json"``. No path set, or an error raised: nothing is written."""
    import time
    from datetime import datetime, timezone

    from goose_lib.reports.provenance import write_record

    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    rec: dict[str, Any] = {"path": None}
    yield rec
    if rec["path"] is not None:
        write_record(rec["path"], command=command, params=params, kinds=kinds, seed=seed, device=device,
                     started=started, wall_s=time.perf_counter() - t0)


def command_params(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed arguments of a verb as JSON-ready parameters (what its provenance records)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k not in ("func",)}


INPUT_KINDS = {"data_root": "data_root", "sam3_checkpoint": "sam3_checkpoint", "checkpoint": "checkpoint",
               "ensemble": "checkpoint"}  # --ensemble: more student checkpoints (a list)
"""The inputs of every verb's arguments (same names everywhere: one name per thing)."""
