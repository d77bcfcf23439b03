"""Issue 15 case 16: the training page shows results first, its parameters collapsed, and a
per-class table with each class's support (known answers; the page order on a rendered page)."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from goose_lib.ontology import Ontology
from goose_lib.paths import repo_root
from goose_lib.reports.record import parameters_details
from goose_lib.train.report import class_iou_table, scores_summary


def _scores(iou: dict[int, float], support: dict[int, int], composite: float) -> dict:
    class_iou = [iou.get(i) for i in range(64)]
    return {"class_iou": class_iou, "support": [support.get(i, 0) for i in range(64)], "composite": composite,
            "miou": composite - 0.1, "category_miou": composite + 0.1}


def test_class_iou_table_has_a_support_column() -> None:
    ont = Ontology.load()
    support = {3: 1200, 7: 0, 53: 98000}
    student = _scores({3: 0.5, 7: 0.0, 53: 0.9}, support, 0.4)
    baseline = _scores({53: 0.3}, support, 0.1)
    table = class_iou_table({"student": student, "baseline": baseline}, ont)
    assert list(table.columns) == ["name", "category", "support", "student", "baseline"]
    assert table.index.tolist() == [3, 7, 53]
    assert table["support"].tolist() == [1200, 0, 98000] and table.loc[53, "name"] == "sky"
    assert np.isnan(table.loc[3, "baseline"]) and table.loc[53, "student"] == 0.9
    with pytest.raises(ValueError, match="scored on different labels"):
        class_iou_table({"student": student, "other": _scores({3: 0.1}, {3: 5}, 0.1)}, ont)
    no_support = {k: v for k, v in student.items() if k != "support"}
    assert "support" not in class_iou_table({"student": no_support}, ont).columns


def test_scores_summary_and_collapsed_parameters() -> None:
    summary = scores_summary({"student": _scores({}, {}, 0.4), "baseline": _scores({}, {}, 0.1)})
    assert summary.index.tolist() == ["student", "baseline"]
    assert summary.loc["baseline"].tolist() == pytest.approx([0.1, 0.0, 0.2])
    html = parameters_details({"lr": 0.003, "cameras": ("front",), "note": "<b>"}).data
    assert html.startswith('<details class="goose-parameters"><summary>all parameters of this run (3)</summary>')
    assert "<tr><td><code>cameras</code></td><td><code>(&#x27;front&#x27;,)</code></td></tr>" in html
    assert "&lt;b&gt;" in html and "<b>" not in html and html.endswith("</table></details>")


def test_report_pages_fold_the_parameter_cells(tmp_path) -> None:
    from goose_lib.reports.html import HtmlReporter

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    defaults, injected = new_code_cell("alpha = 1  # the default"), new_code_cell("# Parameters\nalpha = 2\n")
    defaults.metadata["tags"], injected.metadata["tags"] = ["parameters"], ["injected-parameters"]
    body = new_code_cell("print(alpha)")
    body.outputs = [new_output("stream", name="stdout", text="2\n")]
    nb.cells = [new_markdown_cell("# Page"), defaults, injected, body]
    page = HtmlReporter().render(nb, tmp_path / "run" / "report.html", tmp_path / "_static")
    folded = page.split('<details class="goose-parameters">')
    assert len(folded) == 3  # both parameter cells, nothing else
    assert folded[1].startswith("<summary>parameters cell (the defaults)</summary>") and "the default" in folded[1]
    assert folded[2].startswith("<summary>parameters passed to this run</summary>")
    assert "print" not in folded[1].split("</details>")[0] and "print" not in folded[2].split("</details>")[0]
    assert "print" in folded[2].split("</details>", 1)[1]  # the body cell is shown as usual


def test_training_notebook_puts_results_first_and_parameters_last() -> None:
    nb = nbformat.read(repo_root() / "notebooks" / "03_training.ipynb", as_version=4)
    sections = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert sections[:2] == ["## Train", "## Results"] and sections[-1] == "## Parameters"
    assert nb.cells[-1].source == "parameters_details(to_dict(params))"
    before_results = nb.cells[: next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Results"))]
    for cell in before_results:  # nothing before the results displays a value (no parameter dump)
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            last = cell.source.strip().splitlines()[-1]
            assert last.startswith(("print(", "    ", "run_dir =", "result =")), last
