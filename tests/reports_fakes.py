"""Small fake notebooks and specs for the reports tests (execution, ablations, index, browser).

The fake notebook has a ``parameters`` cell, a matplotlib figure, an ipywidgets slider, can
raise (``fail``), block while a file exists (``block_file``, to be killed mid-way), append its
run folder's name to ``log_file`` (to count executions), reads an upstream checkpoint
(``checkpoint``) and records composite / miou / category_miou / class_iou / checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PARAMETERS = """alpha = 1.0  # scales every recorded metric
fail = False  # raise in the body (a failing variant)
block_file = ""  # while this file exists, sleep (a run to kill mid-way)
log_file = ""  # append this run's folder name here (counts executions)
checkpoint = ""  # an upstream run's checkpoint folder (reads weights.txt)
seed = 0  # a seeded step sets it per run (recorded in provenance)
"""



@dataclass(frozen=True)
class FakeParams:
    """The fake notebook's parameter class, for a registry ``{"fake": FakeParams}``."""

    alpha: float = 1.0
    fail: bool = False
    block_file: str = ""
    log_file: str = ""
    checkpoint: str = ""


BODY = [
    "import os, time\nfrom pathlib import Path\nfrom goose_lib.reports.record import save_metrics",
    "if log_file:\n    with open(log_file, 'a') as f:\n        f.write(Path.cwd().name + '\\n')",
    ("if block_file:\n    Path(block_file + '.started').touch()\n"
    "    while os.path.exists(block_file):\n        time.sleep(0.05)"),
    "if fail:\n    raise ValueError('boom in this variant')",
    "upstream = Path(checkpoint, 'weights.txt').read_text() if checkpoint else None\nupstream",
    ("%matplotlib inline\nfrom matplotlib.figure import Figure\nfig = Figure(figsize=(3, 2))\n"
     "fig.add_subplot().plot([0, 1, 2], [0, alpha, 2 * alpha])\nfig"),
    "import ipywidgets\nipywidgets.IntSlider(value=int(alpha), min=0, max=10, description='alpha')",
    ("Path('ckpt').mkdir(exist_ok=True)\nPath('ckpt/weights.txt').write_text(f'alpha={alpha}')\n"
    "class_iou = [None] + [round(0.1 * alpha * (i % 5) / 5, 4) for i in range(1, 64)]\n"
    "save_metrics({'composite': 0.5 * alpha, 'miou': 0.4 * alpha, 'category_miou': 0.6 * alpha,\n"
    "              'class_iou': class_iou, 'checkpoint': 'ckpt', 'upstream': upstream, 'steps': 3})"),
]


def write_notebook(path: Path, *, light: bool = False) -> Path:
    """Write the fake notebook (kernelspec python3, no outputs) to ``path``; ``light`` leaves
    out the figure and the widget (no matplotlib / ipywidgets import: a faster kernel)."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    body = [c for c in BODY if not (light and ("Figure" in c or "ipywidgets" in c))]
    nb.cells = [new_markdown_cell("# Fake run"), params, *[new_code_cell(c) for c in body]]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


SPEC = """name: fake
common: {{log_file: {log}}}
steps:
  train:
    notebook: fake.ipynb
    params: {{alpha: 1.0}}
    variants:
      - {{name: base, params: {{}}}}
      - {{name: strong, params: {{alpha: 2.0}}}}
      - {{name: broken, params: {{fail: true}}}}
  evaluate:
    notebook: fake.ipynb
    params: {{alpha: 3.0, checkpoint: "${{train-strong.checkpoint}}", block_file: "{block}"}}
  after_broken:
    notebook: fake.ipynb
    params: {{checkpoint: "${{train-broken.checkpoint}}"}}
index:
  baseline: train-base
  compare: {{baseline: train-base, strong: train-strong, eval: evaluate}}
"""


def write_spec(folder: Path, *, log: Path, block: str = "", light: bool = True) -> Path:
    """A spec over the fake notebook: 3 training variants (one failing), an evaluation that
    reads the strong variant's checkpoint (and can block), a dependent of the failing one."""
    write_notebook(folder / "fake.ipynb", light=light)
    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(log=log, block=block))
    return spec
