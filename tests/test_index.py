"""goose_lib.reports.index: the comparison page built from run folders (no execution needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from goose_lib.reports.index import build_index, collect_runs, metric_columns, save_settings


def _run(reports: Path, name: str, status: str = "ok", metrics: dict | None = None, error: str | None = None,
         record: bool = True) -> None:
    d = reports / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({"notebook": "/x/03_training.ipynb", "params": {"seed": 1}}))
    if record:
        (d / "run.json").write_text(json.dumps({"name": name, "notebook": "03_training", "status": status,
                                                "error": error, "wall_s": 2.5}))
        (d / "report.html").write_text("<html></html>")
    if metrics is not None:
        (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "provenance.json").write_text(json.dumps({"seed": 1, "code": {"commit": "abcdef1234567890"}}))


def _fixture(reports: Path) -> None:
    ciou = [None] + [0.5] * 63
    _run(reports, "base", metrics={"composite": 0.5, "miou": 0.4, "category_miou": 0.6, "class_iou": ciou,
                                   "loss": 1.25, "checkpoint": "ckpt", "flag": True})
    _run(reports, "agg", metrics={"composite": 0.55, "miou": 0.45, "category_miou": 0.65,
                                  "class_iou": [None] + [0.75] * 63, "epochs": 3})
    _run(reports, "broken", status="failed", error="ValueError: boom <b>", metrics={})
    _run(reports, "killed", record=False)
    (reports / "_static").mkdir()
    (reports / ".locks").mkdir()


def test_collect_runs_reads_every_run_folder(tmp_path: Path) -> None:
    _fixture(tmp_path)
    runs = {r["name"]: r for r in collect_runs(tmp_path)}
    assert sorted(runs) == ["agg", "base", "broken", "killed"]
    assert runs["base"]["metrics"] == {"composite": 0.5, "miou": 0.4, "category_miou": 0.6, "loss": 1.25}
    assert runs["killed"]["status"] == "incomplete" and runs["killed"]["html"] is None
    assert runs["broken"]["error"] == "ValueError: boom <b>" and runs["base"]["commit"] == "abcdef1234"
    assert metric_columns(list(runs.values())) == ["composite", "miou", "category_miou", "epochs", "loss"]


def test_index_page_has_table_deltas_plot_and_per_class_data(tmp_path: Path) -> None:
    _fixture(tmp_path)
    save_settings(tmp_path, baseline="base", compare={"baseline": "base", "+aggressive": "agg"})
    page = build_index(tmp_path).read_text()
    rows = re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", page, flags=re.DOTALL)
    assert [cls for cls, _ in rows] == ["ok", "ok", "failed", "other"]  # agg, base, broken, killed
    agg = rows[0][1]
    assert '<a href="agg/report.html">agg</a>' in agg and "+aggressive" in agg
    deltas = re.findall(r'<td class="num delta" data-v="([^"]*)">([^<]*)</td>', agg)
    assert [float(v) for v, _ in deltas[:3]] == pytest.approx([0.05, 0.05, 0.05])  # vs base
    assert deltas[0][1] == "+0.0500" and deltas[3] == ("", "")  # epochs: base has none
    assert "ValueError: boom &lt;b&gt;" in rows[2][1]  # escaped error text
    assert 'id="main-plot"' in page and "data:image/png;base64," in page
    data = json.loads(re.search(r'<script id="index-data" type="application/json">(.*?)</script>',
                                page, flags=re.DOTALL).group(1))
    assert sorted(data["classIou"]) == ["agg", "base"] and data["baseline"] == "base"
    assert len(data["classNames"]) == 64 and data["compare"] == ["base", "agg"]
    assert "http://" not in page and "https://" not in page  # renders offline


def test_index_without_metrics_or_settings(tmp_path: Path) -> None:
    _run(tmp_path, "explore", metrics={"samples": 8})
    page = build_index(tmp_path).read_text()
    assert "No run recorded composite" in page and '<td class="num" data-v="8.0">8</td>' in page
    assert '<b id="baseline">none</b>' in page
