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
    assert deltas[0][1] == "+0.0500" and len(deltas) == 3  # no delta for counts / settings (epochs, loss)
    assert '<td class="num extra" data-v="3.0">3</td>' in agg  # epochs: behind the "all columns" toggle
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
    assert "No run recorded composite" in page and '<td class="num extra" data-v="8.0">8</td>' in page
    assert '<b id="baseline">none</b>' in page


# --- seeds: variants over several runs, paired deltas, index.json -----------------------------

def _seeded(reports: Path, name: str, seed: int, composite: float) -> None:
    _run(reports, name, metrics={"composite": composite, "miou": composite - 0.1, "category_miou": composite + 0.1})
    (reports / name / "provenance.json").write_text(json.dumps({"seed": seed, "code": {"commit": "c"}}))


def test_variants_over_seeds_have_mean_std_and_paired_deltas(tmp_path: Path) -> None:
    base = {0: 0.50, 1: 0.60, 2: 0.70}
    good = {0: 0.55, 1: 0.62, 2: 0.80}  # paired differences 0.05, 0.02, 0.10
    noise = {0: 0.51, 1: 0.58, 2: 0.73}  # paired differences 0.01, -0.02, 0.03
    for label, values in (("b", base), ("g", good), ("n", noise)):
        for seed, v in values.items():
            _seeded(tmp_path, f"{label}-seed={seed}", seed, v)
    _seeded(tmp_path, "single", 0, 0.9)
    save_settings(tmp_path, baseline="baseline", compare={
        "baseline": [f"b-seed={s}" for s in base], "+good": [f"g-seed={s}" for s in good],
        "+noise": [f"n-seed={s}" for s in noise], "+one": ["single"]})
    page = build_index(tmp_path).read_text()
    summary = {v["name"]: v for v in json.loads((tmp_path / "index.json").read_text())}
    assert list(summary) == ["baseline", "+good", "+noise", "+one"]
    b, g, n, one = summary["baseline"], summary["+good"], summary["+noise"], summary["+one"]
    assert b["seeds"] == [0, 1, 2] and b["composite_mean"] == pytest.approx(0.6)
    assert b["composite_std"] == pytest.approx(0.1) and b["delta_mean"] is None and b["significant"] is None
    assert g["delta_mean"] == pytest.approx(0.17 / 3)
    d = [0.05, 0.02, 0.10]
    m = sum(d) / 3
    assert g["delta_std"] == pytest.approx((sum((x - m) ** 2 for x in d) / 2) ** 0.5) and g["significant"] is True
    assert n["delta_mean"] == pytest.approx(0.02 / 3) and n["significant"] is False  # |0.0067| < 0.025
    # one seed, paired with the baseline's seed 0: a delta, but no spread to judge it by
    assert one["delta_mean"] == pytest.approx(0.4) and one["delta_std"] == 0 and one["significant"] is None
    assert {"name", "seeds", "composite_mean", "composite_std", "delta_mean", "delta_std"} <= set(g)
    assert "not significant" in page and "0.6000 ± 0.1000" in page
    # the run table's delta is against the baseline run of the same seed
    rows = dict(re.findall(r'<a href="([^/]+)/report.html">.*?<td class="num delta" data-v="([^"]*)"', page,
                           flags=re.DOTALL))
    assert float(rows["g-seed=2"]) == pytest.approx(0.10) and float(rows["n-seed=1"]) == pytest.approx(-0.02)


def test_a_seeded_step_expands_and_reads_its_own_seeds_upstream(tmp_path: Path) -> None:
    from reports_fakes import write_notebook

    from goose_lib.reports.spec import load_spec

    write_notebook(tmp_path / "fake.ipynb")
    (tmp_path / "s.yaml").write_text(
        "steps:\n"
        "  explore: {notebook: fake.ipynb}\n"
        "  train: {notebook: fake.ipynb, seeds: [0, 1, 2], after: [explore]}\n"
        "  evaluate:\n    notebook: fake.ipynb\n    seeds: [0, 1, 2]\n"
        "    params: {checkpoint: '${train.checkpoint}'}\n"
        "  report:\n    notebook: fake.ipynb\n    params: {checkpoint: '${train-seed=1.checkpoint}'}\n"
        "index: {baseline: train, compare: {baseline: train, evaluated: evaluate}}\n")
    spec = load_spec(tmp_path / "s.yaml")
    runs = {r.name: r for r in spec.runs}
    assert [n for n in runs if n.startswith("train")] == ["train-seed=0", "train-seed=1", "train-seed=2"]
    for k in (0, 1, 2):
        ev = runs[f"evaluate-seed={k}"]
        assert ev.params == {"checkpoint": f"${{train-seed={k}.checkpoint}}", "seed": k} and ev.seed == k
        assert ev.deps == (f"train-seed={k}",)
    assert runs["report"].deps == ("train-seed=1",) and runs["train-seed=0"].deps == ("explore",)
    assert spec.baseline == "baseline" and spec.compare["evaluated"] == tuple(f"evaluate-seed={k}" for k in (0, 1, 2))
    (tmp_path / "bad.yaml").write_text("steps:\n  t: {notebook: fake.ipynb, seeds: [1, 1]}\n")
    with pytest.raises(Exception, match="seeds must be a non-empty list of distinct integers"):
        load_spec(tmp_path / "bad.yaml")


def test_each_ablation_keeps_its_comparison(tmp_path: Path) -> None:
    """Two ablations run into one folder: one variants section each (the latest first, its baseline
    the runs table's); running the first again brings it back to the top and replaces its entry."""
    for label, values in (("b", {0: 0.5, 1: 0.6}), ("g", {0: 0.55, 1: 0.62}), ("x", {0: 0.4, 1: 0.5})):
        for seed, v in values.items():
            _seeded(tmp_path, f"{label}-seed={seed}", seed, v)
    b, g, x = ([f"{k}-seed={s}" for s in (0, 1)] for k in "bgx")
    save_settings(tmp_path, baseline="base", compare={"base": b, "+good": g}, spec="/specs/paper.yaml")
    save_settings(tmp_path, baseline="paper", compare={"paper": g, "+worse": x}, spec="/specs/leaderboard.yaml")
    page = build_index(tmp_path).read_text()
    summary = json.loads((tmp_path / "index.json").read_text())
    assert [(v["ablation"], v["name"]) for v in summary] == [
        ("leaderboard", "paper"), ("leaderboard", "+worse"), ("paper", "base"), ("paper", "+good")]
    worse, good = summary[1], summary[3]
    assert worse["delta_mean"] == pytest.approx(-0.135) and good["delta_mean"] == pytest.approx(0.035)
    assert page.index("Variants: leaderboard") < page.index("Variants: paper")
    assert 'id="variants"' in page and 'id="variants-paper"' in page and 'id="main-plot-paper"' in page
    assert '<b id="baseline">paper</b>' in page  # the latest ablation's baseline drives the runs table
    rows = dict(re.findall(r'<a href="([^/]+)/report.html">.*?<td class="num delta" data-v="([^"]*)"', page,
                           flags=re.DOTALL))
    assert float(rows["x-seed=1"]) == pytest.approx(0.5 - 0.62)  # against g (leaderboard's baseline), seed 1
    save_settings(tmp_path, baseline="base", compare={"base": b}, spec="/specs/paper.yaml")
    build_index(tmp_path)
    summary = json.loads((tmp_path / "index.json").read_text())
    assert [(v["ablation"], v["name"]) for v in summary] == [
        ("paper", "base"), ("leaderboard", "paper"), ("leaderboard", "+worse")]


def test_settings_of_the_one_comparison_form_still_read(tmp_path: Path) -> None:
    _seeded(tmp_path, "b-seed=0", 0, 0.5)
    _seeded(tmp_path, "g-seed=0", 0, 0.6)
    (tmp_path / "index_settings.json").write_text(json.dumps(
        {"baseline": "base", "compare": [["base", ["b-seed=0"]], ["+g", ["g-seed=0"]]], "spec": "/s/paper.yaml"}))
    page = build_index(tmp_path).read_text()
    summary = json.loads((tmp_path / "index.json").read_text())
    assert [(v["ablation"], v["name"]) for v in summary] == [("paper", "base"), ("paper", "+g")]
    assert summary[1]["delta_mean"] == pytest.approx(0.1) and "<h2>Variants</h2>" in page  # one: no name
