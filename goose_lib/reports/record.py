"""What a notebook records for its run: ``metrics.json`` in the run folder (the working
directory papermill runs the notebook in). Values are merged, so cells can record as they go.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

from goose_lib.io import atomic_write_json, read_json

METRICS_FILE = "metrics.json"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return _clean(v.item())
        if isinstance(v, np.ndarray):
            return _clean(v.tolist())
    except ImportError:  # pragma: no cover
        pass
    return v


def save_metrics(metrics: Mapping[str, Any], run_dir: str | os.PathLike = ".") -> Path:
    """Merge ``metrics`` into ``<run_dir>/metrics.json`` (atomic; NaN -> null; paths -> str)."""
    path = Path(run_dir) / METRICS_FILE
    current = read_json(path) if path.exists() else {}
    current.update(_clean(dict(metrics)))
    return atomic_write_json(path, current)


def load_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    return read_json(path) if path.exists() else {}
