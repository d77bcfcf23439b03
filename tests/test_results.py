"""goose_lib.reports.results / `goose results`: the docs' tables come from the recorded runs."""

from __future__ import annotations

import json
from pathlib import Path

from goose_lib.cli import main
from goose_lib.reports.index import build_index, save_settings
from goose_lib.reports.results import results_markdown


def _run(reports: Path, name: str, notebook: str, seed: int, metrics: dict, params: dict | None = None) -> None:
    d = reports / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({"notebook": f"/x/{notebook}.ipynb", "params": params or {}}))
    (d / "run.json").write_text(json.dumps({"name": name, "notebook": notebook, "status": "ok", "wall_s": 10.0}))
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "provenance.json").write_text(json.dumps({"seed": seed, "code": {"commit": "abcdef1234567890"}}))


def test_tables_are_the_recorded_numbers(tmp_path: Path, capsys) -> None:
    for seed, (b, a) in enumerate([(0.30, 0.35), (0.32, 0.36)]):
        # baseline learns 20 classes (IoU >= 0.10), the variant 21
        _run(tmp_path, f"train_baseline-seed={seed}", "03_training", seed,
             {"composite": b, "miou": b - 0.1, "category_miou": b + 0.1, "class_iou": [0.5] * 20 + [0.05] * 44})
        _run(tmp_path, f"train_aggressive-seed={seed}", "03_training", seed,
             {"composite": a, "miou": a - 0.1, "category_miou": a + 0.1, "class_iou": [0.5] * 21 + [0.0] * 43})
    _run(tmp_path, "teacher-seed=0", "02_teacher_comparison", 0,
         {"teacher_miou": 0.8, "box_fill_miou": 0.69, "thin_teacher_exact_iou": 0.6, "thin_coarse_exact_iou": 0.5},
         {"sam3_checkpoint": "embedded"})
    save_settings(tmp_path, baseline="baseline", name="paper",
                  compare={"baseline": ["train_baseline-seed=0", "train_baseline-seed=1"],
                           "+aggressive": ["train_aggressive-seed=0", "train_aggressive-seed=1"]})
    build_index(tmp_path)
    text = results_markdown(tmp_path)
    assert "## paper" in text
    assert "| baseline | 0.310 ± 0.014 | 0.300, 0.320 |  | 0.210 | 20.0 |" in text
    assert "| +aggressive | 0.355 ± 0.007 | 0.350, 0.360 | +0.045 ± 0.007 (significant) | 0.255 | 21.0 |" in text
    assert "| teacher-seed=0 | embedded | 0.800 | 0.690 | 0.600 | 0.500 |" in text
    assert "| train_aggressive-seed=1 | 03_training | 0.360 | 0.260 | 0.460 | 21 |" in text
    assert main(["results", "--reports", str(tmp_path), "--out", str(tmp_path / "results.md")]) == 0
    assert (tmp_path / "results.md").read_text() == results_markdown(tmp_path, command=f"goose results --reports {tmp_path}")


def test_no_index_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["results", "--reports", str(tmp_path)]) == 2
    assert "index.json: no index" in capsys.readouterr().err
