"""goose_lib.reports.execute / html: one notebook run into a run folder, offline HTML, vendoring."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from reports_fakes import FakeParams, write_notebook

from goose_lib.reports import html as html_mod
from goose_lib.reports.execute import (
    HTML_FILE,
    RunSpecError,
    check_params,
    check_run_name,
    declared_params,
    execute_run,
    read_record,
    resolve_notebook,
)


def test_resolve_notebook_names_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RunSpecError, match=r"no_such_notebook\.ipynb: notebook not found"):
        resolve_notebook("no_such_notebook")
    with pytest.raises(RunSpecError, match=str(tmp_path / "x.ipynb")):
        resolve_notebook("x.ipynb", base=tmp_path)
    nb = write_notebook(tmp_path / "fake.ipynb")
    assert resolve_notebook("fake.ipynb", base=tmp_path) == nb.resolve()


def test_check_params_rejects_unknown_names_and_types(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "fake.ipynb")
    # unregistered notebook: names come from its parameters cell
    assert declared_params(nb, {}) == {"alpha": 1.0, "fail": False, "block_file": "", "log_file": "",
                                       "checkpoint": "", "seed": 0}
    check_params(nb, {"alpha": 2.0}, registry={})
    with pytest.raises(RunSpecError, match=rf"^{nb}: unknown parameter\(s\) \['alpah'\]"):
        check_params(nb, {"alpah": 2.0}, registry={})
    # registered notebook: names and types from its dataclass
    reg = {"fake": FakeParams}
    with pytest.raises(RunSpecError, match=r"FakeParams.fail: expected"):
        check_params(nb, {"fail": "yes"}, registry=reg)
    check_params(nb, {"fail": "yes"}, registry=reg, types=False)
    with pytest.raises(RunSpecError, match="unknown parameter"):
        check_params(nb, {"beta": 1}, registry=reg, types=False)


def test_run_names_are_safe_folder_names() -> None:
    assert check_run_name("train-aggressive-seed=0") == "train-aggressive-seed=0"
    for bad in ("..", ".hidden", "_static", "a/b", ""):
        with pytest.raises(RunSpecError):
            check_run_name(bad)


@pytest.mark.slow
def test_execute_run_writes_the_run_folder(tmp_path: Path) -> None:
    nb = write_notebook(tmp_path / "fake.ipynb")
    reports = tmp_path / "reports"
    static = reports / html_mod.STATIC_DIR
    static.mkdir(parents=True)
    for _, name in html_mod.VENDORED_FILES:
        (static / name).write_text("// stub")
    ok = execute_run(nb, reports / "ok", {"alpha": 2.0}, key="k1", registry={})
    assert ok["status"] == "ok" and ok["error"] is None and ok["key"] == "k1"
    assert read_record(reports / "ok") == ok
    run = reports / "ok"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["composite"] == pytest.approx(1.0) and metrics["class_iou"][0] is None
    assert (run / "ckpt" / "weights.txt").read_text() == "alpha=2.0"  # cwd was the run folder
    assert json.loads((run / "params.json").read_text())["params"] == {"alpha": 2.0}
    prov = json.loads((run / "provenance.json").read_text())
    assert len(prov["code"]["commit"] or "x" * 40) == 40 and prov["libraries"]["papermill"]
    assert prov["device"]["device"] == "cpu" and prov["wall_s"] > 0 and prov["key"] == "k1"
    assert 0 < ok["cells_s"] < ok["wall_s"]
    page = (run / HTML_FILE).read_text()
    assert '<script src="../_static/require.js">' in page
    assert "'../_static/embed-amd.js'" in page
    assert "application/vnd.jupyter.widget-state+json" in page  # the widget snapshot
    assert re.search(r'<img [^>]*src="data:image/png;base64,', page)  # the figure
    assert "cdnjs.cloudflare.com/ajax/libs/mathjax" not in page and "cdn.jsdelivr" not in page
    assert (run / HTML_FILE).stat().st_size < 2_000_000

    bad = execute_run(nb, reports / "bad", {"fail": True}, registry={})
    assert bad["status"] == "failed"
    assert bad["error"] == "ValueError: boom in this variant"
    assert (reports / "bad" / "notebook.ipynb").is_file()  # kept, with its error
    assert "boom in this variant" in (reports / "bad" / HTML_FILE).read_text()
    assert not (reports / "bad" / "metrics.json").exists()


def test_vendor_is_idempotent_and_degrades_without_npm(tmp_path: Path) -> None:
    reports, vendor_dir = tmp_path / "reports", tmp_path / "vendor"
    with pytest.warns(UserWarning, match="not found; HTML reports will show blank widgets"):
        assert html_mod.vendor(reports, vendor_dir, npm="no-such-npm-binary") is False
    assert not html_mod.static_ready(reports)
    # packages already in the npm prefix: copied without calling npm
    for src, _ in html_mod.VENDORED_FILES:
        f = vendor_dir / "node_modules" / src
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"// {src}")
    assert html_mod.vendor(reports, vendor_dir, npm="no-such-npm-binary") is True
    assert (reports / "_static" / "embed-amd.js").read_text().endswith("html-manager/dist/embed-amd.js")
    shutil.rmtree(vendor_dir)  # already vendored: nothing fetched, nothing copied
    assert html_mod.vendor(reports, vendor_dir, npm="no-such-npm-binary") is True


def test_html_references_static_relatively(tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.read(write_notebook(tmp_path / "fake.ipynb"), as_version=4)
    nb.metadata["widgets"] = {}
    (tmp_path / "r" / "_static").mkdir(parents=True)
    with pytest.warns(UserWarning, match="widget renderer not vendored"):
        page = html_mod.HtmlReporter().render(nb, tmp_path / "r" / "a" / "b" / "report.html",
                                              tmp_path / "r" / "_static")
    assert '<script src="../../_static/require.js">' in page


def test_figures_shown_as_text_are_detected() -> None:
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from goose_lib.reports.execute import figure_text_outputs

    nb = new_notebook(cells=[
        new_code_cell("fig", outputs=[new_output("execute_result", {"text/plain": "<Figure size 640x480 with 1 Axes>"},
                                                 execution_count=1)]),
        new_code_cell("fig", outputs=[new_output("display_data", {"text/plain": "<Figure size 640x480 with 1 Axes>",
                                                                  "image/png": "iVBORw0KGgo="})]),
        new_code_cell("1", outputs=[new_output("execute_result", {"text/plain": "1"}, execution_count=2)]),
    ])
    assert figure_text_outputs(nb) == 1
