"""Frozen parameter dataclasses and their strict validation.

Every parameter set is a frozen dataclass owned by the module that uses it (``DataConfig`` here,
``TrainConfig`` in ``train.loop``, ...). Notebooks validate their papermill parameters with
:func:`validate` right after the ``parameters`` cell: unknown names and wrong types fail loudly,
because papermill injects typos silently.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import numpy as np

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter set with an unknown name, a wrong type or an invalid value."""


def _matches(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, coerced value) for ``value`` against annotation ``tp``. Lists become tuples."""
    if tp is Any:
        return True, value
    origin = get_origin(tp)
    if origin is Literal:
        return value in get_args(tp), value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            ok, coerced = _matches(value, arg)
            if ok:
                return True, coerced
        return False, value
    if tp is type(None):
        return value is None, value
    if origin in (tuple, list, typing.Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        args = get_args(tp)
        if not args:
            return True, tuple(value)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                return False, value
            pairs = list(zip(value, args))
        else:
            pairs = [(v, args[0]) for v in value]
        out = []
        for v, a in pairs:
            ok, c = _matches(v, a)
            if not ok:
                return False, value
            out.append(c)
        return True, tuple(out)
    if origin is dict or tp is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def validate(cls: type[T], params: Mapping[str, Any], *, ignore: tuple[str, ...] = ()) -> T:
    """Build the frozen dataclass ``cls`` from ``params``, strictly.

    Unknown names, wrong types (ints are accepted for floats, lists for tuples) and values
    rejected by the class's ``__post_init__`` raise :class:`ParameterError` naming the field.
    Names in ``ignore`` are skipped (e.g. papermill's own injected names).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields) - set(ignore))
    if unknown:
        raise ParameterError(
            f"{cls.__name__}: unknown parameter(s) {unknown}; valid names are {sorted(fields)}"
        )
    kwargs = {}
    for name, value in params.items():
        if name in ignore:
            continue
        ok, coerced = _matches(value, hints[name])
        if not ok:
            raise ParameterError(
                f"{cls.__name__}.{name}: expected {hints[name]}, got {value!r} ({type(value).__name__})"
            )
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ParameterError):
            raise
        raise ParameterError(f"{cls.__name__}: {exc}") from exc


def validate_namespace(cls: type[T], namespace: Mapping[str, Any]) -> T:
    """Validate the parameters of a notebook from its global namespace.

    Picks every field of ``cls`` out of ``namespace`` (a notebook's ``globals()``); any field
    missing from the namespace keeps its default. Use :func:`validate` when you also need
    unknown names rejected (the ablation runner does that before execution).
    """
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return validate(cls, {k: v for k, v in namespace.items() if k in names})


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: its one-line comment}`` of a dataclass and its dataclass bases, read from the
    ``name: type = default  # comment`` lines of their source (what CLI help and docs show, so
    each description is written once, next to its default). Fields without a comment are absent."""
    import inspect
    import re

    docs: dict[str, str] = {}
    line_re = re.compile(r"^\s+(\w+)\s*:[^#]*?#\s*(.+?)\s*$")
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names = {f.name for f in dataclasses.fields(klass)}
        for line in source.splitlines():
            m = line_re.match(line)
            if m and m.group(1) in names:
                docs[m.group(1)] = m.group(2)
    return docs


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n): the share of a cluster job array's task i of n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"{text!r}: shard must look like I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ValueError(f"{text!r}: shard index must satisfy 0 <= I < N")
    return i, n


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict (tuples become lists)."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return conv(obj)


VoidProtocol = Literal["ignore_void_category", "ignore_class0", "void_as_class", "toolkit", "ignore_void"]
# Old names still accepted, mapped to what they do (``EvalProtocol("ignore_void").void == "ignore_class0"``).
PROTOCOL_ALIASES: dict[str, str] = {"ignore_void": "ignore_class0"}
PROTOCOLS: tuple[str, ...] = ("ignore_void_category", "ignore_class0", "void_as_class", "toolkit")


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """How the challenge metric treats void (the table in the README's "Evaluation protocol").

    - ``ignore_void_category`` (default): ground-truth pixels of every class of the void category
      (``undefined``, ``ego_vehicle``, ``outlier``) are dropped and those classes get no IoU; the
      category mIoU is over the 11 non-void categories, so both levels leave out the same pixels.
    - ``ignore_class0`` (formerly ``ignore_void``): only class 0 (undefined) is dropped; the other
      void classes are scored as classes, the void category is not.
    - ``void_as_class``: nothing is dropped; class 0 is a class like any other (the void category
      is still left out of the category mIoU).
    - ``toolkit``: the dataset toolkit's scorer (``goose_dataset/image_processing/evaluation.py``):
      nothing dropped, all 64 classes and all 12 categories scored, a class absent from both
      prediction and label gets IoU 0 (torchmetrics' Jaccard index), the mean is over all of them;
      ``Scores.filtered_miou`` is its "filtered" mean over classes with non-zero IoU.
    """

    void: VoidProtocol = "ignore_void_category"

    def __post_init__(self) -> None:
        if self.void in PROTOCOL_ALIASES:
            object.__setattr__(self, "void", PROTOCOL_ALIASES[self.void])
        if self.void not in PROTOCOLS:
            raise ValueError(f"unknown void protocol {self.void!r}; choose one of {list(PROTOCOLS)} "
                             f"(old names: {PROTOCOL_ALIASES})")

    def dropped_classes(self, ontology: Any) -> list[int]:
        """Class ids whose ground-truth pixels the protocol drops before scoring (``ontology``: an
        :class:`~goose_lib.ontology.Ontology`, for which classes form the void category)."""
        if self.void == "ignore_class0":
            return [0]
        if self.void == "ignore_void_category":
            from goose_lib.ontology import VOID_CATEGORY

            void = list(ontology.categories).index(VOID_CATEGORY)
            return [int(c) for c in np.flatnonzero(np.asarray(ontology.class_to_category) == void)]
        return []

    @property
    def scores_void_category(self) -> bool:
        """Whether the void category enters the category mIoU (only the toolkit's all-in scoring)."""
        return self.void == "toolkit"

    @property
    def absent_iou(self) -> float:
        """IoU of a class absent from prediction and label: NaN (left out of the means) or 0 (toolkit)."""
        return 0.0 if self.void == "toolkit" else float("nan")


# --- inputs: parameters that name files or folders (declared, for provenance) -------------------

InputKind = Literal["data_root", "sam3_checkpoint", "checkpoint"]
"""``data_root``: a dataset root or embedded dataset name; ``sam3_checkpoint``: SAM3 weights (a
folder or embedded name); ``checkpoint``: a student checkpoint / run folder, or ``"untrained"``."""


def input_param(kind: InputKind, default: str) -> Any:
    """A dataclass field holding an input of ``kind`` (its default ``default``): declared so that
    provenance fingerprints what a run read (:func:`declared_inputs`), never guessed from names."""
    return dataclasses.field(default=default, metadata={"input": kind})


def declared_inputs(cls: Any) -> dict[str, InputKind]:
    """``{field name: kind}`` of the fields of dataclass ``cls`` declared with :func:`input_param`."""
    return {f.name: f.metadata["input"] for f in dataclasses.fields(cls) if "input" in f.metadata}


DEFAULT_CAMERAS: tuple[str, ...] = ("windshield_vis", "camera_left", "front", "realsense")
"""Camera suffixes used by default (``windshield_nir`` is opt-in)."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data is and which samples of a split are used."""

    data_root: str = input_param("data_root", "embedded")  # a GOOSE root, or "embedded" (written on first use)
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    exclude_scenarios: tuple[str, ...] = ()
    limit: int | None = None  # first N samples (sorted) of a split; None = all
    skip_bad: bool = False  # True: warn and count bad samples instead of raising

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
