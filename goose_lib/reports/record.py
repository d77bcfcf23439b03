"""What a notebook records for its run: ``metrics.json`` in the run folder (the working
directory papermill runs the notebook in). Values are merged, so cells can record as they go.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from goose_lib.io import atomic_write_json, read_json

METRICS_FILE = "metrics.json"


def save_metrics(metrics: Mapping[str, Any], run_dir: str | os.PathLike = ".") -> Path:
    """Merge ``metrics`` into ``<run_dir>/metrics.json`` (atomic; NaN -> null; numpy and paths converted)."""
    path = Path(run_dir) / METRICS_FILE
    current = read_json(path) if path.exists() else {}
    current.update(dict(metrics))
    return atomic_write_json(path, current)


def load_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    return read_json(path) if path.exists() else {}


def relative(path: str | os.PathLike, run_dir: str | os.PathLike = ".") -> str:
    """``path`` as recorded in metrics.json: relative to the run folder when it lies inside the
    reports folder around it (so a moved or copied reports folder keeps working and its run keys
    stay the same), else as given (a shared cache under GOOSE_SAM3_HOME, a value like "untrained")."""
    p, here = Path(path), Path(run_dir).resolve()
    if not p.is_absolute() and not p.exists():
        return str(path)  # not a path at all (e.g. "untrained")
    p = p.resolve()
    if p.is_relative_to(here.parent):
        return os.path.relpath(p, here)
    return str(p)
