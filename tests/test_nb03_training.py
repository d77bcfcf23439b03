"""notebooks/03_training.ipynb: structure, parameters, and a papermill run on tiny data whose
recorded numbers are checked against the run's own checkpoint and log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from goose_lib.paths import repo_root

NOTEBOOK = repo_root() / "notebooks" / "03_training.ipynb"





@pytest.mark.slow
def test_notebook_runs_with_papermill_and_records_its_results(tiny_root, tmp_path) -> None:
    import papermill as pm

    from goose_lib.models import checkpoint as ckpt
    from goose_lib.models.tiny import build_tiny_checkpoint

    small = build_tiny_checkpoint(tmp_path / "sam3_112", image_size=112)
    run = tmp_path / "run"
    run.mkdir()
    pm.execute_notebook(
        str(NOTEBOOK), str(run / "03_training.ipynb"), cwd=str(run), kernel_name="python3", progress_bar=False,
        parameters={"data_root": str(tiny_root), "sam3_checkpoint": str(small), "decoder_channels": 16,
                    "batch_size": 2, "steps": 3, "val_interval": 2, "train_limit": 4, "val_limit": 3,
                    "distill_mode": "soft", "progress": False})
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["class_iou"]) == 64
    assert metrics["composite"] == pytest.approx((metrics["miou"] + metrics["category_miou"]) / 2)
    assert 0 <= metrics["baseline_composite"] < 1 and metrics["baseline_class"]
    assert metrics["steps"] == 3
    # distill_mode "soft" without classes: trained without distillation, and said so
    assert any("WITHOUT distillation" in n for n in metrics["notes"])
    assert not Path(metrics["checkpoint"]).is_absolute()  # recorded relative to the run folder
    final = (run / metrics["checkpoint"]).resolve()
    assert final.name == "step_0000003" and final.is_relative_to(run.resolve())
    saved = ckpt.load_run(final)
    assert saved["val"]["composite"] == pytest.approx(metrics["composite"])
    assert (run / "training" / "metrics.jsonl").is_file()
    assert (run / "training_curves.png").stat().st_size > 1000 and (run / "class_iou.png").stat().st_size > 1000
