"""notebooks/01_data_exploration.ipynb: structure, parameters, and a papermill run on tiny data
whose recorded numbers are checked against the label files read directly."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

from goose_lib.config import ParameterError, validate
from goose_lib.params import ExplorationParams
from goose_lib.paths import repo_root

NOTEBOOK = repo_root() / "notebooks" / "01_data_exploration.ipynb"





@pytest.mark.parametrize("bad, match", [
    ({"split": "test"}, "no labels"),
    ({"limit": 0}, "limit"),
    ({"gallery_classes": 0}, "gallery_classes"),
    ({"workers": -1}, "workers"),
    ({"gallery_scan": 0}, "gallery_scan"),
    ({"data_rot": "x"}, "unknown"),
])
def test_exploration_params_reject_bad_values(bad: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        validate(ExplorationParams, bad)


def _reference_counts(root: Path, split: str) -> tuple[int, set[int]]:
    files = sorted((root / "labels" / split).rglob("*_labelids.png"))
    present: set[int] = set()
    for f in files:
        present |= set(np.unique(np.asarray(Image.open(f))).tolist())
    return len(files), present


@pytest.mark.slow
def test_notebook_runs_on_tiny_data(tiny_root: Path, tmp_path: Path) -> None:
    import papermill as pm

    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
        parameters={"data_root": str(tiny_root), "split": "val", "workers": 1, "gallery_classes": 2,
                    "gallery_per_class": 2, "progress": False, "out_dir": "figures",
                    "explorer_max_side": 96},
    )
    samples, present = _reference_counts(tiny_root, "val")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["samples"] == samples
    assert metrics["present_class_ids"] == sorted(present)
    assert metrics["classes_present"] == len(present)
    assert abs(sum(metrics["pixel_share"]) - 1.0) < 1e-9
    assert len(metrics["image_share"]) == 64 and max(metrics["image_share"]) <= 1.0
    assert len(metrics["data_fingerprint"]) == 64 and metrics["boxes"] > 0
    assert len(metrics["rarest_classes"]) == 2 and set(metrics["rarest_classes"]) <= present
    assert 1 <= metrics["gallery_crops"] <= 4
    for name in ("class_distribution", "category_distribution", "box_sizes", "rare_class_gallery"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
    # the explorer's last view is stored as widget state (what HTML reports render)
    nb = nbformat.read(out, as_version=4)
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    images = [m for m in state.values() if m["model_name"] == "ImageModel"]
    sliders = [m for m in state.values() if m["model_name"] == "IntSliderModel"]
    assert len(images) == 1 and len(sliders) == 1
    assert sliders[0]["state"]["max"] == samples - 1
    # ipywidgets stores the PNG bytes as a base64 binary buffer at state path ["value"]
    buffers = {tuple(b["path"]): b["data"] for b in images[0]["buffers"]}
    data = base64.b64decode(buffers[("value",)])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert max(Image.open(io.BytesIO(data)).size) == 96
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 4
