"""Every notebook is committed clean and thin: no outputs, kernelspec python3, no def/class/
lambda in code cells (magics aside), numbered sections, one ``parameters`` cell of literals with
a comment each whose values are exactly its dataclass's defaults, validated in the next cell."""

from __future__ import annotations

import ast

import nbformat
import pytest

from goose_lib.config import validate
from goose_lib.params import NOTEBOOK_PARAMS
from goose_lib.paths import repo_root

MIN_SECTIONS = {"01_data_exploration": 5, "02_teacher_comparison": 6, "03_training": 5, "04_error_analysis": 8}


def test_every_notebook_is_registered() -> None:
    on_disk = {p.stem for p in (repo_root() / "notebooks").glob("*.ipynb")}
    assert on_disk == set(NOTEBOOK_PARAMS) == set(MIN_SECTIONS)


@pytest.mark.parametrize("name", sorted(MIN_SECTIONS))
def test_notebook_is_committed_clean_and_thin(name: str) -> None:
    nb = nbformat.read(repo_root() / "notebooks" / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    for cell in code:
        src = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(ast.parse(src)))
    assert sum(c.cell_type == "markdown" and c.source.startswith("## ") for c in nb.cells) >= MIN_SECTIONS[name]
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    lines = [line for line in params[0].source.splitlines() if line.strip()]
    assert all("#" in line and "=" not in line.split("#", 1)[1] for line in lines)  # papermill parses them
    tree = ast.parse(params[0].source)
    assert all(isinstance(n, ast.Assign) for n in tree.body)
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body}
    cls = NOTEBOOK_PARAMS[name]
    assert validate(cls, values) == cls()  # the cell shows the library defaults
    assert f"validate_namespace({cls.__name__}, globals())" in nb.cells[nb.cells.index(params[0]) + 1].source
