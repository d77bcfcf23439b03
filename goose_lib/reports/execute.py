"""Executing one notebook headless, in-process (papermill's Python API), into a run folder.

A run folder ``<reports>/<run>/`` holds, when complete::

    notebook.ipynb    the executed notebook (kept on failure, with papermill's error banner)
    report.html       its HTML page (see goose_lib.reports.html)
    params.json       {"notebook": path, "params": {...}} as executed
    metrics.json      written by the notebook itself (goose_lib.reports.record.save_metrics)
    provenance.json   code version, seed, hashes, libraries, device, wall time
    kernel.log        the kernel process's own stdout/stderr (start-up warnings, crash reports)
    run.json          the completion marker, written LAST: {"name", "notebook", "status":
                      "ok"|"failed", "error", "error_cell", "key", "started", "finished",
                      "wall_s", "cells_s", "overhead_s"}

A folder without ``run.json`` is an interrupted run; the ablation runner redoes it. Concurrent
writers are kept apart by a per-run lock file under ``<reports>/.locks/``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from goose_lib.io import atomic_write_json, read_json
from goose_lib.paths import repo_root
from goose_lib.reports import provenance
from goose_lib.reports.html import STATIC_DIR, HtmlReporter, reporter
from goose_lib.reports.kernels import KERNEL_LOG, KernelPool, register_engine, shutdown_kernel

NOTEBOOK_FILE = "notebook.ipynb"
HTML_FILE = "report.html"
PARAMS_FILE = "params.json"
PROVENANCE_FILE = "provenance.json"
RECORD_FILE = "run.json"
LOCK_DIR = ".locks"
KERNEL_NAME = "python3"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$")


class RunSpecError(ValueError):
    """A notebook that cannot be found or parameters it does not declare (raised before any
    execution); the message starts with the offending file."""


def notebooks_dir() -> Path:
    """The checkout's ``notebooks/`` folder (where registered notebook names are looked up)."""
    return repo_root() / "notebooks"


def resolve_notebook(ref: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """A notebook reference -> its file. ``"03_training"`` names ``notebooks/03_training.ipynb``;
    anything ending in ``.ipynb`` is a path (relative to ``base``, default the cwd)."""
    ref = str(ref)
    if ref.endswith(".ipynb"):
        path = Path(ref).expanduser()
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
    else:
        path = notebooks_dir() / f"{ref}.ipynb"
    if not path.is_file():
        raise RunSpecError(f"{path}: notebook not found (give a name from notebooks/ or a .ipynb path)")
    return path.resolve()


def check_run_name(name: str) -> str:
    """Run names become folder names: letters, digits and ``._=+,-``, not starting with . or _."""
    if not _RUN_NAME.match(name):
        raise RunSpecError(f"{name!r}: invalid run name (use letters, digits and ._=+,- ; "
                           f"it must start with a letter or digit)")
    return name


def _registry(registry: Mapping[str, type] | None) -> Mapping[str, type]:
    if registry is not None:
        return registry
    from goose_lib.params import NOTEBOOK_PARAMS

    return NOTEBOOK_PARAMS


def declared_params(notebook: Path, registry: Mapping[str, type] | None = None) -> dict[str, Any]:
    """Parameter names -> defaults of a notebook: its ``goose_lib.params`` dataclass when the
    notebook's stem is registered, else the names assigned in its ``parameters`` cell."""
    import dataclasses

    cls = _registry(registry).get(notebook.stem)
    if cls is not None:
        return {f.name: (f.default if f.default is not dataclasses.MISSING else None)
                for f in dataclasses.fields(cls) if f.init}
    import ast

    import papermill

    def literal(source: str) -> Any:  # papermill reports a default as its source text
        try:
            return ast.literal_eval(source)
        except (ValueError, SyntaxError):
            return source

    return {name: literal(info["default"]) for name, info in papermill.inspect_notebook(str(notebook)).items()}


def check_params(notebook: Path, params: Mapping[str, Any], *, registry: Mapping[str, type] | None = None,
                 types: bool = True) -> None:
    """Reject unknown parameter names (and, with ``types``, wrong types via
    ``goose_lib.config.validate``) before anything runs. Raises RunSpecError naming the file."""
    from goose_lib.config import ParameterError, validate

    cls = _registry(registry).get(notebook.stem)
    known = declared_params(notebook, registry)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise RunSpecError(f"{notebook}: unknown parameter(s) {unknown}; valid names are {sorted(known)}")
    if types and cls is not None:
        try:
            validate(cls, params)
        except ParameterError as exc:
            raise RunSpecError(f"{notebook}: {exc}") from exc


def resumable_dirs(notebook: Path, run_dir: Path, params: Mapping[str, Any], effective: Mapping[str, Any],
                   registry: Mapping[str, type] | None = None) -> tuple[str, ...]:
    """Top-level folders of ``run_dir`` an interrupted attempt of the SAME run leaves for this one
    to resume from (a killed or preempted training keeps its checkpoints): the parameter class's
    ``RESUME_DIRS`` (relative to its ``out_dir``), kept only when the folder holds no completion
    marker (the attempt was interrupted, not finished or failed) and the same parameters."""
    cls = _registry(registry).get(notebook.stem)
    dirs = getattr(cls, "RESUME_DIRS", ()) if cls is not None else ()
    if not dirs or (run_dir / RECORD_FILE).exists() or not (run_dir / PARAMS_FILE).is_file():
        return ()
    try:
        before = read_json(run_dir / PARAMS_FILE)
    except (OSError, ValueError):
        return ()
    if before != {"notebook": str(notebook), "params": dict(params)}:
        return ()
    out = Path(str(effective.get("out_dir", ".")))
    return tuple(Path(os.path.normpath(out / d)).parts[0] for d in dirs if not (out / d).is_absolute())


def input_kinds(notebook: Path, registry: Mapping[str, type] | None = None) -> dict[str, Any]:
    """The inputs the notebook's parameter class declares (``{name: kind}``, see
    :func:`goose_lib.config.declared_inputs`); a notebook without a registered class has none."""
    from goose_lib.config import declared_inputs

    cls = _registry(registry).get(notebook.stem)
    return declared_inputs(cls) if cls is not None else {}


def effective_params(notebook: Path, params: Mapping[str, Any],
                     registry: Mapping[str, type] | None = None) -> dict[str, Any]:
    """The notebook's declared defaults overridden by ``params``: what the run really uses (inputs
    named only by a default, e.g. ``data_root="embedded"``, are fingerprinted too)."""
    return {**declared_params(notebook, registry), **params}


def lock(reports_dir: str | os.PathLike, name: str) -> FileLock:
    """The inter-process lock of run ``name`` (``<reports>/.locks/<name>.lock``)."""
    path = Path(reports_dir) / LOCK_DIR / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def read_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The completion marker of a run, or None when the run is missing or incomplete."""
    path = Path(run_dir) / RECORD_FILE
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None


def clear_dir(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Create ``path`` or empty it, keeping the folder itself, the log of a kernel pre-started
    in it and the children named in ``keep``."""
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.name == KERNEL_LOG or child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _cells_seconds(nb: Any) -> float:
    return float(sum((c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0)
                     for c in nb.cells if c.cell_type == "code"))


def figure_text_outputs(nb: Any) -> int:
    """How many outputs show a matplotlib figure as text (``<Figure size ...>`` without an image):
    the notebook displays ``Figure`` objects without ``%matplotlib inline``."""
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            if text.startswith("<Figure size") and "image/png" not in data:
                count += 1
    return count


def execute_run(notebook: Path, run_dir: str | os.PathLike, params: Mapping[str, Any], *,
                key: str | None = None, inputs: Mapping[str, Any] | None = None,
                html: HtmlReporter | None = None, static_dir: str | os.PathLike | None = None,
                seed: Any = None, registry: Mapping[str, type] | None = None,
                kernels: KernelPool | None = None) -> dict[str, Any]:
    """Execute ``notebook`` with ``params`` in ``run_dir`` (its working directory) and write the
    run folder described in the module docstring. Never raises for a failing notebook: the
    returned record (also ``run.json``) has ``status == "failed"`` and the error. The caller
    holds the run's lock. ``run_dir`` is emptied first (stale outputs of an interrupted run).
    ``kernels``: a pool that may hold a kernel pre-started in ``run_dir``.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    t0 = time.perf_counter()
    started = _now()
    run_dir = Path(run_dir).resolve()
    params = dict(params)
    effective = effective_params(notebook, params, registry)
    clear_dir(run_dir, keep=resumable_dirs(notebook, run_dir, params, effective, registry))
    if seed is None:
        seed = effective.get("seed")
    atomic_write_json(run_dir / PARAMS_FILE, {"notebook": str(notebook), "params": params})
    record: dict[str, Any] = {"name": run_dir.name, "notebook": notebook.stem, "status": "ok",
                              "error": None, "error_cell": None, "key": key, "started": started}
    nb = km = None
    cells_s = 0.0
    try:
        if inputs is None:
            inputs = provenance.input_fingerprints(effective, run_dir, kinds=input_kinds(notebook, registry))
        km = kernels.take(run_dir) if kernels is not None else None
        if km is None:
            fresh = KernelPool(KERNEL_NAME)
            fresh.prestart(run_dir)
            km = fresh.take(run_dir)
        nb = papermill.execute_notebook(
            str(notebook), str(run_dir / NOTEBOOK_FILE), parameters=params, kernel_name=KERNEL_NAME,
            cwd=str(run_dir), progress_bar=False, log_output=False, shutdown_kernel="immediate",
            engine_name=register_engine(), km=km)
    except PapermillExecutionError as exc:
        record.update(status="failed", error=f"{exc.ename}: {exc.evalue}", error_cell=exc.exec_count)
    except Exception as exc:  # noqa: BLE001 - a dead kernel, an unreadable notebook: keep going
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if km is not None:
            shutdown_kernel(km)  # failed before papermill took charge of it
    if nb is None and (run_dir / NOTEBOOK_FILE).is_file():
        import nbformat

        nb = nbformat.read(run_dir / NOTEBOOK_FILE, as_version=4)
    if nb is not None:
        cells_s = _cells_seconds(nb)
        if n_text := figure_text_outputs(nb):
            record["warnings"] = [(f"{n_text} figure(s) shown as text (<Figure size ...>): the notebook "
                                  f"needs `%matplotlib inline` before displaying Figure objects")]
        static = Path(static_dir) if static_dir is not None else run_dir.parent / STATIC_DIR
        try:
            (html or reporter()).write(nb, run_dir / HTML_FILE, static)
            record["html"] = HTML_FILE
        except Exception as exc:  # noqa: BLE001 - the run itself is done; say why it has no page
            record["html_error"] = f"{type(exc).__name__}: {exc}"
    wall_s = time.perf_counter() - t0
    atomic_write_json(run_dir / PROVENANCE_FILE, provenance.collect(
        notebook=str(notebook), params=params, inputs=inputs or {}, seed=seed, started=started,
        device=effective.get("device", "auto"),
        wall_s=wall_s, key=key))
    wall_s = time.perf_counter() - t0
    record.update(finished=_now(), wall_s=round(wall_s, 3), cells_s=round(cells_s, 3),
                  overhead_s=round(wall_s - cells_s, 3))
    atomic_write_json(run_dir / RECORD_FILE, record)
    return record
