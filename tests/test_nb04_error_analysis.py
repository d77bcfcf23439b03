"""notebooks/04_error_analysis.ipynb: structure, parameters, and a papermill run on tiny data whose
recorded numbers are checked against an independent evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from goose_lib.config import DataConfig, EvalProtocol, ParameterError, validate
from goose_lib.params import ErrorAnalysisParams
from goose_lib.paths import repo_root

NOTEBOOK = repo_root() / "notebooks" / "04_error_analysis.ipynb"




@pytest.mark.parametrize("bad, match", [
    ({"split": "test"}, "no labels"),
    ({"limit": 0}, "limit"),
    ({"scales": [0.0, 1.0]}, "scales"),
    ({"overlap": 1.0}, "overlap"),
    ({"boundary_bins": [4, 2]}, "boundary_bins"),
    ({"primary": "both"}, "primary"),
    ({"scale": [1.0]}, "unknown"),
])
def test_params_reject_bad_values(bad: dict, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        validate(ErrorAnalysisParams, bad)


@pytest.mark.slow
def test_notebook_runs_on_tiny_data(tiny_root: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    import papermill as pm

    from goose_lib.data.dataset import GooseDataset
    from goose_lib.infer.evaluate import evaluate
    from goose_lib.infer.submission import validate_submission
    from goose_lib.infer.tta import TTAConfig
    from goose_lib.models.checkpoint import load_student

    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK), str(out), cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
        parameters={"data_root": str(tiny_root), "limit": 2, "scales": [0.75, 1.0], "progress": False,
                    "out_dir": "analysis", "worst_images": 2, "browser_max_side": 200,
                    "protocol": "void_as_class"},
    )
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["untrained"] is True and m["images"] == m["reads"] == 2 and m["primary"] == "multiscale"
    assert len(m["class_iou"]) == 64 and None in m["class_iou"] and len(m["category_iou"]) == 11
    assert m["composite"] == pytest.approx((m["miou"] + m["category_miou"]) / 2)
    assert set(m["modes"]) == {"single", "multiscale"} and m["modes"]["multiscale"]["tta"] == "ms0.75-1"
    assert m["composite"] == m["modes"]["multiscale"]["composite"]
    # the same (seeded, untrained) model evaluated here independently gives the recorded numbers
    model = load_student("untrained", device="cpu", seed=0)
    ref = evaluate(model, GooseDataset(tiny_root, "val", config=DataConfig(limit=2)), {"single": TTAConfig()},
                   EvalProtocol("void_as_class"), progress=False).scores["single"].to_dict()
    np.testing.assert_allclose(np.array(m["modes"]["single"]["class_iou"], dtype=float),
                               np.array(ref["class_iou"], dtype=float))
    # the submission covers the whole test split and is valid
    sub = tmp_path / m["submission"]
    assert sub.name == "submission_test.zip" and validate_submission(sub, tiny_root) == 3
    analysis = tmp_path / "analysis"
    for name in ("confusion_classes", "confusion_categories", "tta_gain", "worst_images", "boundary_errors"):
        assert (analysis / f"{name}.png").stat().st_size > 1000
    for name in ("eval_summary.json", "eval_per_image.csv", "eval_per_class.csv", "eval_boundary.csv"):
        assert (analysis / name).stat().st_size > 0
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "UNTRAINED" in text
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(m["model_name"] == "ImageModel" for m in state.values())
    assert any("goose-eval-error-browser" in m["state"].get("_dom_classes", ()) for m in state.values())


@pytest.mark.slow
def test_notebook_runs_an_ensemble(tiny_root: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """An ensemble reaches the end of the notebook (its model is recorded as the list of members)
    and two identical checkpoints score what one does."""
    import shutil

    import papermill as pm

    from goose_lib.models.checkpoint import load_student, save_student

    ckpt = tmp_path / "ckpt"
    save_student(ckpt, load_student("untrained", device="cpu", seed=3), params={})
    shutil.copytree(ckpt, tmp_path / "ckpt2")
    common = {"data_root": str(tiny_root), "limit": 2, "scales": [1.0], "progress": False, "worst_images": 1,
              "browser_max_side": 200, "submission_split": "", "checkpoint": str(ckpt)}
    runs = {"one": {}, "two": {"ensemble_checkpoints": [str(tmp_path / "ckpt2")], "ensemble_offload": True}}
    recorded = {}
    for name, extra in runs.items():
        run_dir = tmp_path / name
        run_dir.mkdir()
        pm.execute_notebook(str(NOTEBOOK), str(run_dir / "executed.ipynb"), cwd=str(run_dir), kernel_name="python3",
                            progress_bar=False, parameters={**common, **extra})
        recorded[name] = json.loads((run_dir / "metrics.json").read_text())
    one, two = recorded["one"], recorded["two"]
    # recorded relative to the run folder, as every path inside the reports folder
    assert one["model"] == "../ckpt" and two["model"] == ["../ckpt", "../ckpt2"] and two["submission"] is None
    for mode in ("single", "multiscale"):
        np.testing.assert_allclose(np.array(two["modes"][mode]["class_iou"], dtype=float),
                                   np.array(one["modes"][mode]["class_iou"], dtype=float), rtol=1e-6)
